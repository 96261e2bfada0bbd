"""Pull-through: the coordinator's queue of models to fetch from their upstream registry,
without I/O. One ingest per reference, however many hosts ask.

A host whose model the registry does not know asks for it (``request``). A worker (an
origin started with ``--upstream``) polls for work (``claim``), naming the registries it
fetches from; it holds a claim for ``lease`` seconds and renews it while it fetches
(``renew``), so a worker that dies hands its ingest back to the queue. It ends an ingest
with the model it published (the caller registers it) or with an error, which every host
waiting on that reference is told and which stands for ``retry_after`` seconds before a
new request queues the reference again.

Tags move upstream. A reference registered by an ingest is checked again when it is
resolved more than ``tag_ttl`` seconds after its last ingest (``stale``): the host gets
the version registered now, and an ingest runs beside it; it registers a new version if
the tag names another manifest now (a new version moves only the blobs that changed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shoal.errors import Conflict, NotFound
from shoal.ref import ModelRef

LEASE = 60.0  # seconds a claim stands without renewal
WORKER_TTL = 60.0  # a worker that has not polled for this long fetches nothing
RETRY_AFTER = 30.0  # a failure stands this long


@dataclass
class Ingest:
    ref: ModelRef
    state: str = "pending"  # pending, running, done, failed
    worker: str | None = None
    until: float = 0.0  # a running claim's end; a failure's end
    error: str | None = None
    missing: bool = False  # the upstream does not have it (404)
    progress: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "ref": str(self.ref),
            "state": self.state,
            "error": self.error,
            "missing": self.missing,
            "progress": dict(self.progress),
        }


@dataclass
class Ingests:
    lease: float = LEASE
    worker_ttl: float = WORKER_TTL
    retry_after: float = RETRY_AFTER
    tag_ttl: float = 3600.0
    items: dict[str, Ingest] = field(default_factory=dict)
    workers: dict[str, tuple[float, frozenset[str]]] = field(default_factory=dict)
    ingested: dict[str, float] = field(default_factory=dict)  # ref: its last ingest's end

    def request(self, ref: ModelRef, now: float) -> Ingest:
        """The ingest of ``ref``: the one under way, or a new one. ``NotFound`` when no
        live worker fetches from ``ref``'s registry."""
        key = str(ref)
        item = self.items.get(key)
        if item is not None and item.state == "failed" and now >= item.until:
            item = None
        if item is not None and item.state != "done":
            self._expire(item, now)
            return item
        if not any(ref.host in hosts for hosts in self._live(now)):
            raise NotFound(
                f"{ref} is not in the registry, and no origin here fetches from {ref.host}",
                "publish it, or start an origin with --upstream for that registry",
            )
        item = self.items[key] = Ingest(ref)
        return item

    def stale(self, ref: ModelRef, now: float) -> bool:
        """Whether ``ref`` (just resolved) came from upstream long enough ago to be asked
        of it again; if so, and a worker can, that ingest is queued."""
        done = self.ingested.get(str(ref))
        if done is None or now - done < self.tag_ttl or str(ref) in self.items:
            return False
        try:
            self.request(ref, now)
        except NotFound:
            return False
        self.ingested[str(ref)] = now  # one check per ttl, whatever its end
        return True

    def status(self, ref: ModelRef, now: float) -> Ingest | None:
        """The ingest of ``ref``, if any; ``NotFound`` when it waits for a worker and none
        that fetches from its registry is left."""
        item = self.items.get(str(ref))
        if item is not None:
            self._expire(item, now)
            if item.state == "pending" and not any(ref.host in h for h in self._live(now)):
                del self.items[str(ref)]
                raise NotFound(
                    f"no origin that fetches from {ref.host} is left to fetch {ref}",
                    "start an origin with --upstream for that registry",
                )
        return item

    def claim(self, worker: str, hosts: frozenset[str], now: float) -> Ingest | None:
        """The oldest pending ingest from one of ``hosts``, now ``worker``'s."""
        self.workers[worker] = (now, hosts)
        for item in self.items.values():
            self._expire(item, now)
            if item.state == "pending" and item.ref.host in hosts:
                item.state, item.worker, item.until = "running", worker, now + self.lease
                return item
        return None

    def renew(self, ref: ModelRef, worker: str, progress: dict[str, int], now: float) -> None:
        item = self._held(ref, worker)
        item.until = now + self.lease
        item.progress = progress
        self.workers[worker] = (now, self.workers.get(worker, (now, frozenset()))[1])

    def finish(
        self, ref: ModelRef, worker: str, now: float, error: str | None, missing: bool = False
    ) -> Ingest:
        item = self._held(ref, worker)
        if error is None:
            item.state, item.error = "done", None
        else:
            item.state, item.error, item.missing = "failed", error, missing
            item.until = now + self.retry_after
        item.worker = None
        return item

    def forget(self, ref: ModelRef, now: float) -> None:
        """A done ingest once its model is registered: the registry answers from then on,
        and the tag is asked of upstream again after ``tag_ttl``."""
        self.items.pop(str(ref), None)
        self.ingested[str(ref)] = now

    def _held(self, ref: ModelRef, worker: str) -> Ingest:
        item = self.items.get(str(ref))
        if item is None or item.state != "running" or item.worker != worker:
            raise Conflict(
                f"the ingest of {ref} is not held by this origin",
                "its claim ran out (renew it within the lease); poll for work again",
            )
        return item

    def _expire(self, item: Ingest, now: float) -> None:
        if item.state == "running" and now >= item.until:  # its worker went quiet
            item.state, item.worker = "pending", None

    def _live(self, now: float) -> list[frozenset[str]]:
        for w, (seen, _) in list(self.workers.items()):
            if now - seen > self.worker_ttl:
                del self.workers[w]
        return [hosts for _, hosts in self.workers.values()]
