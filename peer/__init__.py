"""peer: the agent and the ``shoal pull`` engine (libtorrent + verified HTTP fallback).

Imports only ``shoal``; built in its own issue.
"""
