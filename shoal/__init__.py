"""shoal: pull a model once per fleet, not once per host.

This package holds what every component shares: value types, the chunking
policy, the manifest and torrent formats, the error tree and settings helpers.
It never imports ``seeder``, ``tracker`` or ``peer`` (``shoal.cli`` does, lazily).
"""

__version__ = "0.1.0"
