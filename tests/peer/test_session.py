"""The libtorrent wrapper against a real ``shoal seed``: swarm download into staging,
chunks handed in with add_piece, and resume data."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import libtorrent as lt

from peer.scheduler import NORMAL, SKIP
from peer.session import (
    Finished,
    PieceDone,
    ResumeData,
    SessionSettings,
    Swarm,
    TorrentSession,
)
from peer.store import Store
from shoal import bencode
from shoal.publishing.publish import PublishOptions, publish
from shoal.publishing.sources import directory_source
from shoal.ref import ModelRef
from shoal.testing import write_model_dir
from tests.conftest import quiet_lt_session
from tests.seeder.test_origin import FILES, Origin


def session() -> TorrentSession:
    return TorrentSession(SessionSettings(host="127.0.0.1", enable_lsd=False))


def until(
    ses: TorrentSession, done: Callable[[list[object]], bool], timeout: float = 60
) -> list[object]:
    seen: list[object] = []
    deadline = time.monotonic() + timeout
    while not done(seen):
        assert time.monotonic() < deadline, f"timed out; events so far: {seen}"
        seen += ses.events(timeout=0.2)
    return seen


def test_swarm_download_lands_in_the_store(tmp_path: Path, origin: Origin) -> None:
    store = Store(tmp_path / "models").open()
    m = origin.pub.manifest
    ses = session()
    try:
        d = ses.add("m", m, origin.pub.torrent_path.read_bytes(), store.staging_dir(m))
        wait_ready(ses, d)
        assert d.have() == set() and not d.status().total_payload_download
        d.prioritize([1] * m.num_chunks)  # nothing moves until the scheduler says so
        d.connect([("127.0.0.1", origin.bt_port)])
        until(ses, lambda ev: any(isinstance(e, Finished) for e in ev))
        d.request_resume_data()  # flushes the disk cache before we move files
        until(ses, lambda ev: any(isinstance(e, ResumeData) for e in ev))
        ses.remove("m")
    finally:
        ses.close()
    for f in m.files:
        if f.size:
            store.commit(f, store.staging_dir(m) / f.sha256.hex)
        else:
            (store.blob_path(f.sha256)).write_bytes(b"")
    store.put(m)
    for f in m.files:
        assert store.blob_path(f.sha256).read_bytes() == (origin.src / f.path.value).read_bytes()


def test_ask_swarm_answers_with_what_connected_peers_hold(tmp_path: Path, origin: Origin) -> None:
    """The pull loop asks and goes on; what peers hold comes back as events, for this
    torrent only, one per chunk, the origin seed counted as a seed; and with them what was
    received from peers, which the loop's progress reports use (asking libtorrent for it
    waited for its network thread)."""
    m = origin.pub.manifest
    ses = session()
    try:
        d = ses.add("m", m, origin.pub.torrent_path.read_bytes(), tmp_path / "staging")
        wait_ready(ses, d)
        d.prioritize([0] * m.num_chunks)  # connected, wanting nothing yet
        d.connect([("127.0.0.1", origin.bt_port)])
        deadline = time.monotonic() + 30
        while True:
            assert time.monotonic() < deadline, "no answer naming the origin's chunks"
            d.ask_swarm()
            got = [e for e in ses.events("m", timeout=0.2) if isinstance(e, Swarm)]
            held = [e.availability for e in got if e.availability is not None]
            seeds = [e.seeds for e in got if e.seeds is not None]
            if held and seeds and held[-1] == (1,) * m.num_chunks and seeds[-1] == 1:
                break
        assert all(e.name == "m" for e in got)
        assert [e.peers for e in got if e.seeds is not None][-1] == 1  # the origin
        assert [e.received for e in got if e.seeds is not None][-1] == 0  # nothing wanted
        first = min(m.chunk_size, m.files[0].size)
        d.prioritize([NORMAL] + [SKIP] * (m.num_chunks - 1))  # one chunk, from the origin
        while True:
            assert time.monotonic() < deadline, "the chunk received never showed"
            d.ask_swarm()
            got = [e for e in ses.events("m", timeout=0.2) if isinstance(e, Swarm)]
            received = [e.received for e in got if e.received is not None]
            if received and received[-1] >= first:
                break
        # the chunk's bytes, and at most its pad's too (a block holding both is sent whole)
        assert first <= received[-1] <= lt.torrent_info(str(origin.pub.torrent_path)).piece_size(0)
    finally:
        ses.close()


def wait_ready(ses: TorrentSession, d: object) -> None:
    deadline = time.monotonic() + 20
    while not d.ready:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "torrent never became ready"
        ses.events(timeout=0.05)


def _pieces(origin: Origin) -> list[bytes]:
    """Each piece's bytes as libtorrent sees them (a file's chunk, pad zeros included)."""
    ti = lt.torrent_info(str(origin.pub.torrent_path))
    out = []
    for f in origin.pub.manifest.files:
        data = (origin.src / f.path.value).read_bytes()
        for start in range(0, len(data), origin.pub.manifest.chunk_size):
            out.append(data[start : start + origin.pub.manifest.chunk_size])
    return [p.ljust(ti.piece_size(i), b"\0") for i, p in enumerate(out)]


def test_add_piece_and_a_bad_piece(tmp_path: Path, origin: Origin) -> None:
    m = origin.pub.manifest
    pieces = _pieces(origin)
    ses = session()
    try:
        d = ses.add("m", m, origin.pub.torrent_path.read_bytes(), tmp_path / "staging")
        d.prioritize([0] * len(pieces))  # nothing from the swarm: HTTP feeds every piece
        bad = bytearray(pieces[0])
        bad[0] ^= 1
        d.add_piece(0, bytes(bad))
        # libtorrent checks it and refuses it (usually with a hash_failed alert; some runs
        # here saw no alert at all): either way the piece is not held
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            assert not any(
                isinstance(e, PieceDone) and e.index == 0 for e in ses.events(timeout=0.1)
            )
        assert 0 not in d.have()
        for i, data in enumerate(pieces):
            d.add_piece(i, data)
        # with every priority at 0 libtorrent calls the torrent finished from the start,
        # so completion is judged by the pieces held
        until(
            ses,
            lambda ev: {e.index for e in ev if isinstance(e, PieceDone)} >= set(range(len(pieces))),
        )
        assert d.have() == set(range(len(pieces)))
        assert d.status().num_peers == 0
    finally:
        ses.close()
    big = next(f for f in m.files if f.path.value == "weights/model.gguf")
    assert (tmp_path / "staging" / big.sha256.hex).read_bytes() == (
        origin.src / "weights/model.gguf"
    ).read_bytes()
    assert sum(FILES.values()) > 0


def test_resume_data_keeps_verified_pieces(tmp_path: Path, origin: Origin) -> None:
    m = origin.pub.manifest
    pieces = _pieces(origin)
    half = list(range(0, len(pieces), 2))
    ses = session()
    try:
        d = ses.add("m", m, origin.pub.torrent_path.read_bytes(), tmp_path / "staging")
        d.prioritize([0] * len(pieces))
        wait_ready(ses, d)
        for i in half:
            d.add_piece(i, pieces[i])
        until(ses, lambda ev: {e.index for e in ev if isinstance(e, PieceDone)} >= set(half))
        d.request_resume_data()
        resume = next(
            e
            for e in until(ses, lambda ev: any(isinstance(e, ResumeData) for e in ev))
            if isinstance(e, ResumeData)
        ).data
    finally:
        ses.close()
    again = session()
    try:
        d = again.add(
            "m", m, origin.pub.torrent_path.read_bytes(), tmp_path / "staging", resume=resume
        )
        d.prioritize([0] * len(pieces))
        deadline = time.monotonic() + 20
        while d.have() != set(half):
            st = d.status()
            assert time.monotonic() < deadline, f"resumed with {sorted(d.have())}: {st.state}"
            again.events(timeout=0.1)
    finally:
        again.close()


def test_peers_keep_to_our_request_queue(tmp_path: Path) -> None:
    """A shoal host holds at most ``request_queue`` requests of any one peer, whatever the
    peer's own settings: every block queued ahead delays a chunk new to the fleet at each
    hop. (libtorrent tells peers the limit in its handshake, and refuses requests beyond.)"""
    src = write_model_dir(tmp_path / "src", {"w.bin": 3 << 20}, seed=5)
    pub = publish(
        directory_source(src),
        PublishOptions(ref=ModelRef.parse("q:v1"), out=tmp_path / "pub", chunk_size=64 << 10),
    )
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    for f in pub.manifest.files:
        shutil.copy(src / f.path.value, blobs / f"sha256-{f.sha256.hex}")
    # capped upload: seconds long, time enough for the client's queue to grow
    ses = TorrentSession(
        SessionSettings(host="127.0.0.1", enable_lsd=False, upload_rate_limit=2_000_000)
    )
    other = quiet_lt_session()  # a stock libtorrent would ask 3 s of blocks ahead
    try:
        d = ses.seed("m", pub.manifest, pub.torrent_path.read_bytes(), blobs)
        params = lt.add_torrent_params()
        params.ti = lt.torrent_info(str(pub.torrent_path))
        params.save_path = str(tmp_path / "other")
        h = other.add_torrent(params)
        h.connect_peer(("127.0.0.1", ses.port))
        deepest, deadline = 0, time.monotonic() + 30
        while not (st := h.status()).is_seeding:
            assert time.monotonic() < deadline, f"the stock client got {st.progress:.0%}"
            held = [p.upload_queue_length for p in d.handle.get_peer_info()]
            deepest = max([deepest, *held])
            ses.events(timeout=0.02)
    finally:
        other.pause()
        ses.close()
    limit = SessionSettings().request_queue
    assert 2 < deepest <= limit, f"a peer had {deepest} requests queued (limit {limit})"


def test_a_host_asks_the_tracker_for_few_peers(tmp_path: Path, origin: Origin) -> None:
    """Each announce asks for ``peers`` peers (libtorrent's num_want, 200 by default): a
    host trades with a few, not with the whole fleet. A hand-written tracker on loopback
    records what was asked."""
    asked: list[dict[str, list[str]]] = []

    class Tracker(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(parse_qs(urlsplit(self.path).query))
            body = bencode.encode({b"interval": 1800, b"peers": b""})
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            """No request log on stderr: the test reads ``asked``."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Tracker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/announce"
    ses = TorrentSession(SessionSettings(host="127.0.0.1", enable_lsd=False, peers=3))
    try:
        m = origin.pub.manifest
        d = ses.add("m", m, origin.pub.torrent_path.read_bytes(), tmp_path / "s", trackers=(url,))
        wait_ready(ses, d)
        d.prioritize([NORMAL] * m.num_chunks)  # a pull that wants chunks announces
        deadline = time.monotonic() + 20
        while not asked:
            assert time.monotonic() < deadline, "libtorrent never announced"
            ses.events(timeout=0.1)
    finally:
        ses.close()
        server.shutdown()
        server.server_close()
    assert asked[0].get("numwant") == ["3"], asked[0]


def test_libtorrent_gets_few_disk_threads() -> None:
    """libtorrent's default is 10 disk threads per session; a pull gets ``disk_threads``."""
    ses = TorrentSession(SessionSettings(host="127.0.0.1", enable_lsd=False))
    try:
        assert ses.lt.get_settings()["aio_threads"] == SessionSettings().disk_threads == 4
        assert lt.default_settings()["aio_threads"] == 10  # so the setting does something
    finally:
        ses.close()
