"""tracker: the coordinator (BitTorrent tracker, model registry, chunk availability).

Imports only ``shoal``; built in its own issue.
"""
