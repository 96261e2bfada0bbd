"""Swarm simulations: a fleet of hosts in network namespaces (or containers) pulling one
model, measured against the fluid lower bound; and the local demo."""
