"""A token bucket for HTTP caps: fetches wait for their bytes' worth of tokens."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class Throttle:
    def __init__(self, rate: int, clock: Callable[[], float] = time.monotonic) -> None:
        """``rate`` bytes/s; 0 = unlimited. The burst is a quarter second's worth."""
        self.rate = rate
        self.burst = rate / 4
        self.clock = clock
        self.tokens = self.burst
        self.stamp = clock()

    def set_rate(self, rate: int) -> None:
        """A new rate from now on (a schedule changed the cap)."""
        self.delay(0)
        self.rate = rate
        self.burst = rate / 4
        self.tokens = min(self.tokens, self.burst)

    def delay(self, size: int) -> float:
        """Take ``size`` bytes now; the seconds to wait before using them."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= size
        return max(0.0, -self.tokens / self.rate)

    async def take(self, size: int) -> None:
        wait = self.delay(size)
        if wait:
            await asyncio.sleep(wait)
