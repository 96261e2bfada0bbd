"""The one module that owns libtorrent for pulls: the session, its settings, torrents
written straight into the store's staging area, and alerts turned into our own events.

Each torrent file is renamed onto ``staging/<manifest>/<file sha256 hex>`` (pad files
stay virtual), so what libtorrent writes and later seeds is the very file that moves
into ``blobs/``. URL seeds are dropped: HTTP goes through the scheduler and the
coordinator's assignments, and HTTP-fetched chunks come back in with ``add_piece``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import libtorrent as lt

from peer.events import (
    Event,
    FileFailed,
    Finished,
    Flushed,
    PieceDone,
    PieceFailed,
    ResumeData,
    SessionSettings,
    Swarm,
)
from shoal import encryption
from shoal.errors import LocalError
from shoal.manifest import Manifest
from shoal.torrent import Torrent


class SessionError(LocalError):
    """libtorrent could not do what was asked (listen, add, read resume data)."""


class TorrentSession:
    def __init__(self, settings: SessionSettings) -> None:
        self.settings = settings
        s = settings
        first = s.port or s.port_range[0]
        self.lt: Any = lt.session(
            {
                # a busy port: libtorrent binds the next one, up to the end of the range
                "listen_interfaces": f"{s.host}:{first}",
                "max_retry_port_bind": 0 if s.port else s.port_range[1] - s.port_range[0],
                "enable_dht": s.enable_dht,
                "enable_lsd": s.enable_lsd,
                "enable_upnp": False,
                "enable_natpmp": False,
                "enable_outgoing_utp": s.enable_utp,
                "enable_incoming_utp": s.enable_utp,
                "allow_multiple_connections_per_ip": s.allow_multiple_connections_per_ip,
                "download_rate_limit": s.download_rate_limit,
                "upload_rate_limit": s.upload_rate_limit,
                # shallow request queues: a chunk new to the fleet waits behind fewer blocks
                # at each hop, and a seeder sends a piece twice less often. What a peer
                # allows (its "reqq") overrides what we would ask, so set both
                "max_out_request_queue": s.request_queue,
                "max_allowed_in_request_queue": s.request_queue,
                "request_queue_time": 1,
                # libtorrent 2.1 queues up to 100 MiB of received blocks for the disk: at
                # loopback rates that all became anonymous memory (bench/pull.py); 16 MiB
                # is over 100 ms at 1 Gbit/s
                "max_queued_disk_bytes": 16 << 20,
                "unchoke_slots_limit": -1,
                # a pull with nothing wanted yet (every chunk held back for HTTP) looks
                # upload-only; two such pulls must stay connected for what comes next
                "close_redundant_connections": False,
                "alert_mask": (
                    lt.alert_category.status
                    | lt.alert_category.error
                    | lt.alert_category.storage
                    | lt.alert_category.piece_progress
                ),
                "user_agent": "shoal",
                "aio_threads": s.disk_threads,
                "num_want": s.peers,
                "min_reconnect_time": s.reconnect_after,
            },
            0,  # no default extensions: they are added below, all but peer exchange
        )
        self.lt.apply_settings(encryption.lt_settings(s.encryption))
        # peer exchange would hand every host the whole fleet (SessionSettings.peers)
        for extension in ("ut_metadata", "smart_ban"):
            self.lt.add_extension(extension)
        # libtorrent exempts peers on local networks from rate limits; in a LAN fleet those
        # are exactly the peers a cap is for (set now or by a schedule later): every
        # address is "global"
        every = lt.ip_filter()
        bit = 1 << lt.session.global_peer_class_id
        every.add_rule("0.0.0.0", "255.255.255.255", bit)  # noqa: S104 - an address range
        every.add_rule("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", bit)
        self.lt.set_peer_class_filter(every)
        self.downloads: dict[str, Download] = {}
        self._queues: dict[str, list[Event]] = {}  # events not yet taken, by torrent
        self._wakers: set[asyncio.Event] = set()
        self._pipe: tuple[int, int] | None = None
        self.port = self._listening(first)

    def _listening(self, first: int) -> int:
        """The port libtorrent really listens on (several pulls of one host differ)."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for a in self.lt.pop_alerts():
                if isinstance(a, lt.listen_failed_alert) and self.settings.port:
                    raise SessionError(
                        f"cannot listen for BitTorrent on {self.settings.host}:{first}: "
                        f"{a.message()}",
                        "pick another --port, or leave it out to take the first free one",
                    )
            if self.lt.is_listening():
                port: int = self.lt.listen_port()
                return port
            time.sleep(0.01)
        lo, hi = self.settings.port_range
        raise SessionError(
            f"no free BitTorrent port in {lo}-{hi} on {self.settings.host}",
            "close other pulls or pass --port",
        )

    def add(
        self,
        name: str,
        manifest: Manifest,
        torrent: bytes,
        staging: Path,
        resume: bytes | None = None,
        *,
        skip: frozenset[str] = frozenset(),
        trackers: tuple[str, ...] = (),
    ) -> Download:
        """Start (or resume) ``torrent`` writing into ``staging``; ``name`` keys its events.

        Files whose content hash (hex) is in ``skip`` are not downloaded (priority 0: the
        store holds them already); ``trackers`` are announced to besides the torrent's own."""
        try:
            params = lt.read_resume_data(resume) if resume else lt.add_torrent_params()
            ti = lt.torrent_info(torrent)
        except RuntimeError as exc:
            raise SessionError(f"libtorrent cannot load {name}: {exc}") from None
        params.ti = ti
        params.save_path = str(staging.resolve())
        staging.mkdir(parents=True, exist_ok=True)
        params.renamed_files = staged_names(Torrent.load(torrent), manifest, staging.resolve())
        priorities = [1] * ti.num_files()
        for index, path in params.renamed_files.items():
            if Path(path).name in skip:
                priorities[index] = 0
        params.file_priorities = priorities
        # nothing from the swarm until the scheduler has spoken: every piece at 0, and the
        # torrent paused once checked, so it meets no peer before its first priorities
        # (with every piece at 0 it counts itself finished, says so to the peers it meets,
        # and a third-party seed such as qBittorrent drops it and is never dialled again)
        params.piece_priorities = [0] * ti.num_pieces()
        params.trackers = list(dict.fromkeys([*params.trackers, *trackers]))
        params.url_seeds = []
        params.flags &= ~lt.torrent_flags.auto_managed
        params.flags &= ~lt.torrent_flags.paused
        params.flags |= lt.torrent_flags.stop_when_ready
        handle = self.lt.add_torrent(params)
        # the torrent's web seeds would have libtorrent fetch from the origin behind the
        # scheduler's back (measured: 0.75 extra copies of origin egress in a shaped fleet);
        # nothing is wanted yet (priorities 0), so none was asked before this
        for url in handle.url_seeds():
            handle.remove_url_seed(url)
        d = Download(name, handle, manifest)
        self.downloads[name] = d
        return d

    def seed(
        self,
        name: str,
        manifest: Manifest,
        torrent: bytes,
        blobs: Path,
        trackers: tuple[str, ...] = (),
    ) -> Download:
        """Seed a complete model from the store: each torrent file mapped onto its blob in
        ``blobs`` (named by content), trusted as complete (seed mode: pieces are checked as
        they are first sent)."""
        try:
            ti = lt.torrent_info(torrent)
        except RuntimeError as exc:
            raise SessionError(f"libtorrent cannot load {name}: {exc}") from None
        params = lt.add_torrent_params()
        params.ti = ti
        params.save_path = str(blobs.resolve())
        params.renamed_files = {
            index: str(blobs.resolve() / f"sha256-{Path(path).name}")
            for index, path in staged_names(Torrent.load(torrent), manifest, Path("/")).items()
        }
        params.trackers = list(trackers)  # libtorrent adds the torrent's own
        params.flags |= lt.torrent_flags.seed_mode
        params.flags &= ~lt.torrent_flags.auto_managed
        params.flags &= ~lt.torrent_flags.paused
        d = Download(name, self.lt.add_torrent(params), manifest)
        self.downloads[name] = d
        return d

    def fetch_by_hash(
        self, info_hash: bytes, staging: Path, peers: Iterable[tuple[str, int]]
    ) -> ByHash:
        """A torrent known only by its v1 info-hash: its info dictionary from ``peers``
        (BEP 9: libtorrent checks it against the hash), LSD finding more, then every
        piece, each checked against the torrent. ``remove_by_hash`` ends it."""
        params = lt.add_torrent_params()
        params.info_hashes = lt.info_hash_t(lt.sha1_hash(info_hash))
        params.save_path = str(staging.resolve())
        staging.mkdir(parents=True, exist_ok=True)
        params.flags &= ~lt.torrent_flags.auto_managed
        params.flags &= ~lt.torrent_flags.paused
        handle = self.lt.add_torrent(params)
        for peer in peers:
            handle.connect_peer(peer)
        return ByHash(handle)

    def remove_by_hash(self, fetch: ByHash) -> None:
        self.lt.remove_torrent(fetch.handle)

    def set_upload_limit(self, rate: int) -> None:
        """Bytes/s for the whole session from now on; 0 = unlimited."""
        self.lt.apply_settings({"upload_rate_limit": rate})

    def uploaded(self) -> int:
        """Payload bytes sent to peers by every torrent in the session."""
        return sum(int(d.status().total_payload_upload) for d in self.downloads.values())

    def peers(self) -> int:
        return sum(int(d.status().num_peers) for d in self.downloads.values())

    def remove(self, name: str) -> None:
        self._queues.pop(name, None)
        d = self.downloads.pop(name, None)
        if d is not None:
            self.lt.remove_torrent(d.handle)

    def events(self, name: str | None = None, timeout: float = 0.0) -> list[Event]:
        """What libtorrent reported: for torrent ``name`` only (several pulls and the
        seeding of an agent share one session: each takes its own), or for all."""
        if timeout:
            self.lt.wait_for_alert(int(timeout * 1000))
        for ev in self._translate():
            self._queues.setdefault(ev.name, []).append(ev)
        if name is not None:
            return self._queues.pop(name, [])
        out = [ev for queue in self._queues.values() for ev in queue]
        self._queues.clear()
        return out

    def _translate(self) -> list[Event]:
        out: list[Event] = []
        by_handle = {d.handle: n for n, d in self.downloads.items()}
        for a in self.lt.pop_alerts():
            if isinstance(a, lt.state_update_alert):  # one status per torrent asked about
                for st in a.status:
                    if (name := by_handle.get(st.handle)) is not None:
                        out.append(
                            Swarm(
                                name,
                                seeds=int(st.num_seeds),
                                peers=int(st.num_peers),
                                received=int(st.total_payload_download),
                            )
                        )
                continue
            name = by_handle.get(getattr(a, "handle", None))
            if name is None:
                continue
            if isinstance(a, lt.torrent_checked_alert):
                self.downloads[name].checked = True
            elif isinstance(a, lt.piece_finished_alert):
                out.append(PieceDone(name, int(a.piece_index)))
            elif isinstance(a, lt.hash_failed_alert):
                out.append(PieceFailed(name, int(a.piece_index)))
            elif isinstance(a, lt.torrent_finished_alert):
                out.append(Finished(name))
            elif isinstance(a, lt.file_error_alert):
                out.append(FileFailed(name, a.message()))
            elif isinstance(a, lt.cache_flushed_alert):
                out.append(Flushed(name))
                d = self.downloads[name]
                if d.resume_wanted:
                    d.resume_wanted = False
                    d.handle.save_resume_data(lt.save_resume_flags_t.flush_disk_cache)
            elif isinstance(a, lt.save_resume_data_alert):
                out.append(ResumeData(name, bytes(lt.write_resume_data_buf(a.params))))
            elif isinstance(a, lt.piece_availability_alert):
                out.append(Swarm(name, availability=tuple(a.piece_availability)))
        return out

    def alert_pipe(self) -> int:
        """A non-blocking fd that becomes readable when alerts are waiting (drain it, then
        call ``events()``): an event loop can sleep until libtorrent has news."""
        if self._pipe is None:
            self._pipe = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            self.lt.set_alert_fd(self._pipe[1])
        return self._pipe[0]

    @contextlib.contextmanager
    def woken(self, wake: asyncio.Event) -> Iterator[None]:
        """Set ``wake`` whenever libtorrent has alerts waiting, for as long as the block
        runs; every pull sharing the session is woken."""
        if not self._wakers:
            loop = asyncio.get_running_loop()
            fd = self.alert_pipe()

            def on_alerts() -> None:
                with contextlib.suppress(BlockingIOError):
                    while os.read(fd, 4096):
                        pass
                for w in self._wakers:
                    w.set()

            loop.add_reader(fd, on_alerts)
        self._wakers.add(wake)
        try:
            yield
        finally:
            self._wakers.discard(wake)
            if not self._wakers and self._pipe is not None:
                asyncio.get_running_loop().remove_reader(self._pipe[0])

    def close(self) -> None:
        for name in list(self.downloads):
            self.remove(name)
        self.lt = None
        if self._pipe is not None:
            for fd in self._pipe:
                os.close(fd)
            self._pipe = None


class Download:
    def __init__(self, name: str, handle: Any, manifest: Manifest) -> None:
        self.name = name
        self.handle = handle
        self.manifest = manifest
        self.resume_wanted = False
        self.checked = False
        self.started = False  # resumed after the scheduler's first priorities

    @property
    def ready(self) -> bool:
        """libtorrent has checked the torrent (its ``torrent_checked_alert`` came through
        ``events()``): pieces may be added now; earlier ``add_piece`` calls can be dropped,
        and the torrent's state alone was seen to say "ready" too early."""
        return self.checked

    def prioritize(self, priorities: list[int]) -> None:
        """Set every piece's priority; the first call also starts the torrent, which
        ``add`` left paused once checked."""
        self.handle.prioritize_pieces(priorities)
        if not self.started:
            self.started = True
            self.handle.resume()

    def set_download_limit(self, rate: int) -> None:
        """Cap this torrent's download at ``rate`` bytes/s (0: none)."""
        self.handle.set_download_limit(rate)

    def add_piece(self, index: int, data: bytes) -> None:
        """Hand a chunk fetched (and verified) elsewhere to libtorrent, which writes it,
        checks it against the torrent and shares it on."""
        self.handle.add_piece(index, data, 0)

    def have(self) -> set[int]:
        status = self.handle.status(lt.status_flags_t.query_pieces)
        return {i for i, held in enumerate(status.pieces) if held}

    def downloading(self) -> set[int]:
        """Pieces libtorrent has asked peers for and not finished."""
        return {int(p["piece_index"]) for p in self.handle.get_download_queue()}

    def connect(self, peers: Iterable[tuple[str, int]]) -> None:
        for peer in peers:
            self.handle.connect_peer(peer)

    def reannounce(self) -> None:
        """Ask the trackers for peers now (the coordinator knows holders we lack)."""
        self.handle.force_reannounce(0, -1, lt.reannounce_flags_t.ignore_min_interval)

    def ask_swarm(self) -> None:
        """Ask for piece availability and the seed count without waiting: each comes back
        as a ``Swarm`` event. The calls that wait for libtorrent's network thread took
        27-64 ms each in flash-32, half of a pull loop's time there."""
        self.handle.post_piece_availability()
        self.handle.post_status(0)

    def status(self) -> Any:
        """Counters and peers only: libtorrent's default also builds the piece bitfields
        and file names, in its network thread, while this thread waits for them."""
        return self.handle.status(0)

    def request_resume_data(self) -> None:
        """Ask for resume data; it arrives as a ``ResumeData`` event once every write
        queued so far has reached the disk (a ``Flushed`` event comes first). Saving it
        earlier can claim pieces whose bytes are still in flight."""
        self.resume_wanted = True
        self.flush()

    def flush(self) -> None:
        """Push queued writes to disk; a ``Flushed`` event says when."""
        self.handle.flush_cache()


class ByHash:
    """A torrent fetched by its info-hash (``TorrentSession.fetch_by_hash``)."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def info(self) -> bytes | None:
        """The info dictionary, once a peer sent it; None before."""
        if not self.handle.status(0).has_metadata:
            return None
        section: bytes = self.handle.torrent_file().info_section()
        return section

    def progress(self) -> tuple[int, int, bool]:
        """Bytes verified, peers connected, and whether every piece is."""
        st = self.handle.status(0)
        return int(st.total_wanted_done), int(st.num_peers), bool(st.is_seeding)


def staged_names(meta: Torrent, manifest: Manifest, staging: Path) -> dict[int, str]:
    """Torrent file index -> absolute staging path named by content (pad files left out)."""
    by_path = {f.path: f for f in manifest.files}
    renamed: dict[int, str] = {}
    for index, (path, _) in zip(meta.file_indices, meta.files, strict=True):
        entry = by_path.get(path)
        if entry is None:
            raise SessionError(f"torrent file {path} is not in the manifest of {manifest.ref}")
        renamed[index] = str(staging / entry.sha256.hex)
    return renamed
