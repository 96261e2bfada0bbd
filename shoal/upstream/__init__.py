"""Fetching a model from its upstream registry (Docker Registry v2 / OCI distribution):
the origin's pull-through for the fleet, and an agent's when it has no coordinator."""
