"""tracker/ingest.py: the pull-through queue, without I/O."""

from __future__ import annotations

import pytest

from shoal.errors import Conflict, NotFound
from shoal.ref import ModelRef
from tracker.ingest import Ingests

REF = ModelRef.parse("tiny:1")
OLLAMA = frozenset({"registry.ollama.ai"})


def queue() -> Ingests:
    q = Ingests(lease=60, worker_ttl=60, retry_after=30, tag_ttl=100)
    assert q.claim("origin:0", OLLAMA, now=0) is None  # a worker polls: it serves ollama's
    return q


def test_one_ingest_per_reference_however_many_ask() -> None:
    q = queue()
    a, b = q.request(REF, 1), q.request(REF, 2)
    assert a is b and a.state == "pending"
    claimed = q.claim("origin:0", OLLAMA, 3)
    assert claimed is a and a.state == "running"
    assert q.claim("origin:1", OLLAMA, 4) is None  # nothing else to do
    assert q.request(REF, 5) is a  # a host that asks now joins the running one


def test_no_worker_for_the_registry_is_not_found() -> None:
    q = queue()
    with pytest.raises(NotFound, match=r"no origin here fetches from example\.com"):
        q.request(ModelRef.parse("example.com/ns/m:1"), 1)
    q.request(REF, 1)
    with pytest.raises(NotFound, match=r"no origin that fetches from registry\.ollama\.ai"):
        q.status(REF, 1000)  # the worker went quiet for longer than its ttl
    assert q.status(REF, 1001) is None


def test_a_claim_runs_out_without_renewal_and_only_its_holder_may_end_it() -> None:
    q = queue()
    q.request(REF, 0)
    q.claim("origin:0", OLLAMA, 0)
    q.renew(REF, "origin:0", {"fetched": 10}, 50)  # holds it until 110
    assert q.status(REF, 100).state == "running"  # type: ignore[union-attr]
    with pytest.raises(Conflict):
        q.finish(REF, "origin:1", 100, None)
    assert q.claim("origin:1", OLLAMA, 111) is not None  # ran out: the next worker's
    with pytest.raises(Conflict):
        q.renew(REF, "origin:0", {}, 112)


def test_a_failure_stands_retry_after_then_a_request_queues_it_again() -> None:
    q = queue()
    q.request(REF, 0)
    q.claim("origin:0", OLLAMA, 0)
    failed = q.finish(REF, "origin:0", 10, "blob does not match", missing=False)
    assert (failed.state, failed.error) == ("failed", "blob does not match")
    assert q.request(REF, 20) is failed  # waiters see the reason
    q.claim("origin:0", OLLAMA, 35)  # keeps the worker alive
    again = q.request(REF, 41)
    assert again is not failed and again.state == "pending"


def test_a_tag_from_upstream_is_checked_again_after_its_ttl_once() -> None:
    q = queue()
    assert not q.stale(REF, 0)  # never ingested: published by hand, never checked
    q.request(REF, 0)
    q.claim("origin:0", OLLAMA, 0)
    q.finish(REF, "origin:0", 10, None)
    q.forget(REF, 10)
    q.claim("origin:0", OLLAMA, 100)  # a live worker
    assert not q.stale(REF, 100)  # 90 s: within the ttl
    assert q.stale(REF, 111)  # queued beside the answer
    assert q.status(REF, 111).state == "pending"  # type: ignore[union-attr]
    assert not q.stale(REF, 112)  # one check at a time
