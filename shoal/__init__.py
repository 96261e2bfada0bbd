"""shoal: pull a model once per fleet, not once per host.

This package holds what every component shares: value types, the chunking
policy, the manifest and torrent formats, the error tree, settings helpers and the
options every command shares. It never imports a component: ``shoal_cli``, the
command's root, wires them (tests/test_layout.py).
"""

__version__ = "0.1.0"
