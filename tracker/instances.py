"""How many identities one token may speak for at once.

``X-Shoal-Instance`` tells apart several agents or pulls of one host, each with its
own bitfield. Unbounded, one token could mint any number of hosts and outvote the
fleet's real ones in replica counts. An instance lives as long as a report does
(the availability TTL) after it was last seen; a new one beyond the limit is refused.
Each coordinator replica keeps its own count, so behind N replicas a token holds at
most N times the limit.
"""

from __future__ import annotations

from shoal.errors import Conflict


class Instances:
    def __init__(self, limit: int, ttl: float) -> None:
        self.limit = limit
        self.ttl = ttl
        self._seen: dict[str, dict[str, float]] = {}  # base identity -> instance -> last seen

    def admit(self, host: str, now: float) -> None:
        """Record ``host`` (``base#instance``) as seen at ``now``; ``Conflict`` if its base
        already has ``limit`` other live instances."""
        base, sep, instance = host.partition("#")
        if not sep:
            return
        seen = self._seen.setdefault(base, {})
        for name in [n for n, t in seen.items() if t <= now - self.ttl]:
            del seen[name]
        if instance not in seen and len(seen) >= self.limit:
            raise Conflict(
                f"{base} already speaks for {self.limit} instances (X-Shoal-Instance)",
                "run fewer agents or pulls on this host, or give it a host token of its own",
            )
        seen[instance] = now
        if len(self._seen) > 4 * 65536:  # bases whose instances all expired
            self._seen = {b: s for b, s in self._seen.items() if s}
