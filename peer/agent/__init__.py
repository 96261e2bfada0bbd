"""``shoal agent``, the long-lived process of a host: ``daemon`` (seeding, pulls, the
disk budget, caps), ``api`` (its local HTTP API), ``client`` (how a CLI finds it and hands
it work), ``auth``, ``settings`` and ``run`` (the process)."""
