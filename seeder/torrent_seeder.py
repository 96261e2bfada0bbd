"""Seeding published models with libtorrent, straight from their content-addressed blobs.

Each torrent file is mapped onto its blob (``renamed_files`` with absolute
paths), so nothing is copied into a torrent layout; pad files stay virtual.
Torrents start in seed mode: ``shoal publish`` hashed every byte, and
libtorrent still checks each piece before it first sends it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import libtorrent as lt

from seeder.catalog import Catalog, Model
from shoal import encryption
from shoal.encryption import Mode

log = logging.getLogger("shoal.seed")


@dataclass(frozen=True, slots=True)
class SeedSettings:
    listen: str = "0.0.0.0:6881"
    enable_lsd: bool = True
    enable_dht: bool = False
    upload_rate_limit: int = 0  # bytes/s, 0 = unlimited
    trackers: tuple[str, ...] = ()  # announced to besides each torrent's own
    allow_multiple_connections_per_ip: bool = True
    encryption: Mode = "prefer"  # BitTorrent protocol encryption (shoal/encryption.py)


class Seeder:
    """A libtorrent session seeding every model of a catalog."""

    def __init__(self, catalog: Catalog, settings: SeedSettings) -> None:
        self.catalog = catalog
        self.settings = settings
        self.session: Any = None
        self.handles: dict[str, Any] = {}

    def start(self) -> None:
        s = self.settings
        self.session = lt.session(
            {
                "listen_interfaces": s.listen,
                "enable_dht": s.enable_dht,
                "enable_lsd": s.enable_lsd,
                "enable_upnp": False,
                "enable_natpmp": False,
                "allow_multiple_connections_per_ip": s.allow_multiple_connections_per_ip,
                "upload_rate_limit": s.upload_rate_limit,
                "unchoke_slots_limit": -1,
                # a pull that wants nothing yet (its scheduler has not spoken) says
                # "upload only"; dropping it as redundant delays its download by a minute
                "close_redundant_connections": False,
                "alert_mask": lt.alert_category.error,
                "user_agent": "shoal-seed",
            }
        )
        self.session.apply_settings(encryption.lt_settings(s.encryption))
        for model in self.catalog.models:
            self.add(model)
        log.info("seeding %d torrents on port %d", len(self.handles), self.listen_port)

    def add(self, model: Model) -> None:
        """Seed ``model`` from its blobs (in seed mode: publishing hashed every byte)."""
        ti = lt.torrent_info(model.torrent)
        blobs = {f.path: model.blob_path(f).resolve() for f in model.manifest.files}
        renamed = {
            index: str(blobs[path])
            for index, (path, _) in zip(model.meta.file_indices, model.meta.files, strict=True)
        }
        params = lt.add_torrent_params()
        params.ti = ti
        params.save_path = str(model.root.resolve())
        params.renamed_files = renamed
        params.trackers = list(self.settings.trackers)  # libtorrent adds the torrent's own
        params.flags |= lt.torrent_flags.seed_mode
        params.flags &= ~lt.torrent_flags.auto_managed
        params.flags &= ~lt.torrent_flags.paused
        self.handles[model.meta.name] = self.session.add_torrent(params)

    @property
    def listen_port(self) -> int:
        port: int = self.session.listen_port()
        return port

    def uploaded(self) -> int:
        """Payload bytes sent to peers since start, all torrents."""
        return sum(int(h.status().total_payload_upload) for h in self.handles.values())

    def errors(self) -> list[str]:
        """Error alerts since the last call (file errors, listen failures)."""
        return [a.message() for a in self.session.pop_alerts()]

    def close(self) -> None:
        if self.session is not None:
            for h in self.handles.values():
                self.session.remove_torrent(h)
            self.handles.clear()
            self.session = None
