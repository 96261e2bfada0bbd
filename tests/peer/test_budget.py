"""The disk budget's arithmetic and eviction order, worked by hand."""

from __future__ import annotations

import pytest

from peer.budget import Budget, BudgetError, Held, evictions
from shoal.ref import ModelRef

MB = 1_000_000


def held(name: str, blobs: str, used: float, **kw: bool) -> Held:
    return Held(ModelRef.parse(name), frozenset(blobs.split()), used, **kw)


SIZES = {"a": 4 * MB, "b": 4 * MB, "c": 4 * MB, "shared": 2 * MB}


@pytest.mark.parametrize(
    ("budget", "used", "free", "need", "deficit"),
    [
        (Budget(), 50 * MB, 100 * MB, 10 * MB, 0),  # no limit, plenty of disk
        (Budget(max_store=60 * MB), 50 * MB, 100 * MB, 10 * MB, 0),  # exactly fits
        (Budget(max_store=60 * MB), 50 * MB, 100 * MB, 15 * MB, 5 * MB),  # over the store
        (Budget(min_free=95 * MB), 0, 100 * MB, 10 * MB, 5 * MB),  # under the watermark
        # both short: the larger shortfall counts
        (Budget(max_store=52 * MB, min_free=97 * MB), 50 * MB, 100 * MB, 10 * MB, 8 * MB),
    ],
)
def test_deficit(budget: Budget, used: int, free: int, need: int, deficit: int) -> None:
    assert budget.deficit(used, free, need) == deficit


def test_negative_budget_is_refused() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        Budget(max_store=-1)


def test_least_recently_used_goes_first() -> None:
    models = [held("old:1", "a", 1.0), held("mid:1", "b", 2.0), held("new:1", "c", 3.0)]
    assert evictions(models, SIZES, 1, frozenset()) == [ModelRef.parse("old:1")]
    assert evictions(models, SIZES, 5 * MB, frozenset()) == [
        ModelRef.parse("old:1"),
        ModelRef.parse("mid:1"),
    ]
    assert evictions(models, SIZES, 0, frozenset()) == []


def test_pinned_and_busy_models_stay() -> None:
    models = [
        held("old:1", "a", 1.0, pinned=True),
        held("mid:1", "b", 2.0, busy=True),
        held("new:1", "c", 3.0),
    ]
    assert evictions(models, SIZES, 3 * MB, frozenset()) == [ModelRef.parse("new:1")]
    with pytest.raises(BudgetError, match=r"old:1.*pinned or in use") as err:
        evictions(models, SIZES, 5 * MB, frozenset())
    assert "free only 3.8 MiB" in err.value.message
    assert "max_store_size" in (err.value.hint or "")


def test_shared_blobs_free_nothing_until_every_holder_goes() -> None:
    # v1 and v2 share the 2 MB blob; evicting v1 frees only its own 4 MB
    models = [held("m:v1", "a shared", 1.0), held("m:v2", "b shared", 2.0)]
    assert evictions(models, SIZES, 4 * MB, frozenset()) == [ModelRef.parse("m:v1")]
    assert evictions(models, SIZES, 9 * MB, frozenset()) == [
        ModelRef.parse("m:v1"),
        ModelRef.parse("m:v2"),
    ]
    # a pull in progress reuses the shared blob: it is never counted as freed
    with pytest.raises(BudgetError):
        evictions(models, SIZES, 9 * MB, frozenset({"shared"}))
