"""The disk budget of a store: how many bytes a pull may add, and which models to evict
(least recently used first, never a pinned one nor one a pull in progress uses) to make
room. Pure: the agent gathers the facts and carries the evictions out."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from peer.store import StoreError
from shoal.ref import ModelRef
from shoal.units import format_size


class BudgetError(StoreError):
    """A pull cannot fit in the store's budget, even after evicting what may go."""


@dataclass(frozen=True, slots=True)
class Budget:
    max_store: int = 0  # bytes the store may hold in all; 0: no limit
    min_free: int = 0  # bytes to leave free on the disk

    def __post_init__(self) -> None:
        if self.max_store < 0 or self.min_free < 0:
            raise ValueError("budget sizes must be >= 0")

    def deficit(self, used: int, free: int, need: int) -> int:
        """Bytes to free before ``need`` more fits: over the store limit or under the
        free-space watermark, whichever is short of more."""
        over = used + need - self.max_store if self.max_store else 0
        under = need - (free - self.min_free)
        return max(0, over, under)


@dataclass(frozen=True, slots=True)
class Held:
    """A model of the store as eviction sees it."""

    ref: ModelRef
    blobs: frozenset[str]  # blob file names
    last_used: float
    pinned: bool = False
    busy: bool = False  # a pull in progress is for it


def evictions(
    held: Iterable[Held], sizes: dict[str, int], deficit: int, keep: frozenset[str]
) -> list[ModelRef]:
    """Models to evict, least recently used first, until their blobs (those no remaining
    model nor ``keep`` holds) free ``deficit`` bytes. Raises ``BudgetError`` if evicting
    every model that may go would not be enough."""
    if deficit <= 0:
        return []
    models = list(held)
    evictable = sorted((h for h in models if not h.pinned and not h.busy), key=_age)
    chosen: list[Held] = []
    freed = 0
    for h in evictable:
        chosen.append(h)
        freed = _freed(models, chosen, sizes, keep)
        if freed >= deficit:
            return [c.ref for c in chosen]
    kept = [h.ref for h in models if h.pinned or h.busy]
    raise BudgetError(
        f"needs {format_size(deficit)} more room than the budget leaves; evicting every "
        f"unpinned model would free only {format_size(freed)}"
        + (f" ({', '.join(map(str, kept))} pinned or in use)" if kept else ""),
        "raise max_store_size, lower min_free, unpin or remove models (shoal rm)",
    )


def _age(h: Held) -> tuple[float, str]:
    return (h.last_used, str(h.ref))


def _freed(
    models: list[Held], gone: list[Held], sizes: dict[str, int], keep: frozenset[str]
) -> int:
    gone_refs = {g.ref for g in gone}
    still = set(keep).union(*(h.blobs for h in models if h.ref not in gone_refs))
    dropped = set().union(*(g.blobs for g in gone)) - still
    return sum(sizes.get(b, 0) for b in dropped)
