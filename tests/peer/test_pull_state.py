"""A pull's bookkeeping between rounds: held bytes by file as chunks come in, what a
coordinator's answer is allowed to assign, and HTTP fetches given up."""

import asyncio
import contextlib
import gc
from pathlib import Path
from typing import Any

from peer.engine import PullOptions, _coordinate, _Pull
from peer.metrics import PullMetrics
from peer.store import Store
from shoal.chunk_client import UpstreamError
from shoal.publishing.publish import PublishOptions, publish
from shoal.publishing.sources import directory_source
from shoal.ref import ModelRef
from shoal.testing import write_model_dir
from tests.peer.conftest import CHUNK


def _pull(tmp_path: Path, files: dict[str, int]) -> _Pull:
    src = write_model_dir(tmp_path / "src", files, seed=3)
    pub = publish(
        directory_source(src),
        PublishOptions(ref=ModelRef.parse("demo:v1"), out=tmp_path / "pub", chunk_size=CHUNK),
    )
    models = tmp_path / "m"
    st = _Pull(
        PullOptions(pub.manifest.ref, models),
        Store(models).open(),
        pub.manifest,
        None,
        PullMetrics(),
    )
    st.staging.mkdir(parents=True)
    return st


def test_progress_counts_each_chunk_once_in_its_own_file(tmp_path: Path) -> None:
    st = _pull(tmp_path, {"a.bin": 2 * CHUNK + 100, "b.bin": CHUNK})
    sizes = {e.path.value: e.size for e in st.manifest.files}
    assert st.snapshot(0).held == 0
    by_file: dict[str, list[int]] = {}
    for p in st.pcs:
        by_file.setdefault(p.entry.path.value, []).append(p.index)
    a, b = by_file["a.bin"], by_file["b.bin"]
    st.on_piece(a[-1])  # the short last chunk of a.bin
    st.on_piece(a[-1])  # reported twice: counted once
    st.got({b[0]})  # resumed from staging
    held = {f[0]: f[1] for f in st.snapshot(7).files}
    assert held == {"a.bin": 100, "b.bin": sizes["b.bin"]}
    st.on_piece(len(st.pcs) + 5)  # not a chunk of this model: ignored
    for i in a:
        st.on_piece(i)
    snap = st.snapshot(7)
    assert snap.held == snap.total == sum(sizes.values()) and snap.bytes_peer == 7
    st.journal.close()


class _Coordinator:
    """Stands in for the coordinator client: one fixed answer to every sync."""

    def __init__(self, replicas: list[int], assigned: list[int]) -> None:
        self.answer = (replicas, assigned)

    def sync(self, *args: Any) -> tuple[list[int], list[int]]:
        return self.answer


def test_assignments_outside_the_model_are_dropped(tmp_path: Path) -> None:
    st = _pull(tmp_path, {"w.bin": 4 * CHUNK})
    n = len(st.pcs)
    coord = _Coordinator([1] * n, [2, n, -1, 10**9, 0])
    assigned, mine = asyncio.run(
        _coordinate(coord, st.manifest, {0}, n, 6881, 8)  # type: ignore[arg-type]
    )
    assert assigned == frozenset({0, 2})
    assert mine == [0] + [1] * (n - 1)  # this host's own copy is not another's
    # replica counts of another length (another manifest): not used
    coord.answer = ([1] * (n + 1), [1])
    assert asyncio.run(_coordinate(coord, st.manifest, set(), n, 6881, 8)) == (  # type: ignore[arg-type]
        frozenset({1}),
        None,
    )
    st.journal.close()


def test_fetches_given_up_end_quietly_even_when_they_fail_after_cancel(tmp_path: Path) -> None:
    """A fetch given up (a hedge the swarm won, or the pull's end) is cancelled; one that
    misses the cancellation and fails anyway must not leave asyncio a failure nobody read:
    it logs "Task exception was never retrieved" with a traceback (seen in flash-32's agent
    logs, for edge probes)."""
    st = _pull(tmp_path, {"w.bin": 4 * CHUNK})

    async def main() -> tuple[list[str], bool]:
        reported: list[str] = []
        asyncio.get_running_loop().set_exception_handler(
            lambda _loop, ctx: reported.append(ctx["message"])
        )

        async def stubborn() -> bytes:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(30)
            raise UpstreamError("no upstream delivered chunk 0")

        st.fetches[0] = asyncio.ensure_future(stubborn())
        st.fetches[1] = asyncio.ensure_future(asyncio.sleep(30, b""))
        running = st.fetches[1]
        await asyncio.sleep(0)  # both wait
        st.drop(0)
        st.drop(1)
        for _ in range(3):  # the failure, then its done-callbacks
            await asyncio.sleep(0)
        gc.collect()  # the ended task is gone: asyncio would report it now
        return reported, running.cancelled()

    reported, cancelled = asyncio.run(main())
    assert reported == [] and cancelled
    assert st.fetches == {}
    st.journal.close()
