"""A token bucket per client address, so one flooding address cannot starve others."""

from __future__ import annotations

from dataclasses import dataclass

_MAX_TRACKED = 100_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """``rate`` requests a second per address with bursts of ``burst``; rate 0 is off."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: dict[str, _Bucket] = {}

    def allow(self, address: str, now: float) -> bool:
        if self.rate <= 0:
            return True
        b = self._buckets.get(address)
        if b is None:
            if len(self._buckets) >= _MAX_TRACKED:
                self._prune(now)
            b = self._buckets[address] = _Bucket(self.burst, now)
        b.tokens = min(self.burst, b.tokens + (now - b.stamp) * self.rate)
        b.stamp = now
        if b.tokens < 1.0:
            return False
        b.tokens -= 1.0
        return True

    def _prune(self, now: float) -> None:
        full = self.burst / self.rate
        for address in [a for a, b in self._buckets.items() if now - b.stamp >= full]:
            del self._buckets[address]
        if len(self._buckets) >= _MAX_TRACKED:  # all busy: forget the oldest half
            for address in sorted(self._buckets, key=lambda a: self._buckets[a].stamp)[
                : _MAX_TRACKED // 2
            ]:
                del self._buckets[address]
