"""A pull inside an agent runs in the agent's own libtorrent session (one BitTorrent port
per host), takes only its own events, and leaves the session open and clean."""

from __future__ import annotations

import asyncio
from pathlib import Path

from peer.engine import PullOptions, pull
from peer.events import SessionSettings
from peer.progress import Snapshot
from peer.session import TorrentSession
from shoal.ref import ModelRef
from tests.peer.conftest import Fleet


def test_two_pulls_share_one_session(fleet: Fleet, tmp_path: Path) -> None:
    fleet.add_model("other:v1", {"model.gguf": 3_000_000}, seed=9)
    fleet.kill("seed")
    fleet.start_seed()  # serves the model added since
    ses = TorrentSession(SessionSettings(host="127.0.0.1", enable_lsd=False))
    seen: set[str] = set()

    def opts(ref: str) -> PullOptions:
        return PullOptions(
            ref=ModelRef.parse(ref),
            models_dir=tmp_path / "store",
            edges=(fleet.origin_url,),
            host_session=ses,
        )

    def progress(_: Snapshot) -> None:
        seen.update(ses.downloads)

    async def both() -> None:
        await asyncio.gather(pull(opts("demo:v1"), progress), pull(opts("other:v1"), progress))

    try:
        asyncio.run(both())
        names = {f"pull-{fleet.pubs[r].manifest.digest.hex}" for r in ("demo:v1", "other:v1")}
        assert names <= seen  # both ran in the one session, at the same time or in turn
        assert ses.downloads == {} and ses.lt is not None  # left clean, still open
        assert ses.lt.is_listening()
        for ref in ("demo:v1", "other:v1"):
            fleet.check_held(tmp_path / "store", ref)
    finally:
        ses.close()
