"""Issue 31, item 1: a host with trusted publishers takes a model only if one of them
signed its manifest, whoever serves it. The coordinator is a real process whose registry
is altered on disk (its SQLite file) as an attacker who holds it would: a forged manifest
and a tag rolled back to an older signed one are refused before a byte is fetched; a
host with no trusted keys pulls as before and says the model is unsigned."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from peer.store import Store
from shoal.coordinator_client import CoordinatorClient
from shoal.publishing.publish import Published, PublishOptions, publish
from shoal.publishing.sources import directory_source
from shoal.ref import ModelRef
from shoal.signing import PublicKey, keygen, load_private, sign
from shoal.testing import free_port, stop_processes, wait_listening, write_model_dir
from shoal.torrent import Torrent
from tests.conftest import SHOAL
from tests.peer.conftest import CHUNK, Fleet

REF = "acme/tiny:latest"
FILES = {"weights.bin": 3 * 1024 * 1024 + 7, "config.json": 100}


class Signed:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.fleet = Fleet(tmp)
        self.key = tmp / "acme.key"
        self.public: PublicKey = keygen(self.key)
        self.versions: dict[str, Published] = {}
        self.origins: list[subprocess.Popen[str]] = []

    def version(self, name: str, seed: int) -> Published:
        src = write_model_dir(self.tmp / "src" / name, FILES, seed=seed)
        pub = publish(
            directory_source(src),
            PublishOptions(ref=ModelRef.parse(REF), out=self.tmp / "pub" / name, chunk_size=CHUNK),
        )
        self.versions[name] = pub
        self.fleet.pubs[name], self.fleet.srcs[name] = pub, src
        return pub

    def register(self, pub: Published, signed_at: int | None) -> None:
        sigs = []
        if signed_at is not None:
            sigs = [sign(pub.manifest, load_private(self.key), now=signed_at).to_wire()]
        with CoordinatorClient(self.fleet.coord_url, "pub") as c:
            c.publish(pub.manifest, pub.torrent_path.read_bytes(), None, sigs)

    def alter_registry(self, pub: Published) -> None:
        """Point the tag at ``pub`` behind the coordinator's back, registering it first
        if it is not (a forgery: no signature comes with it)."""
        db = sqlite3.connect(self.tmp / "coord" / "registry.sqlite")
        m = pub.manifest
        with db:
            db.execute(
                "INSERT OR IGNORE INTO manifests VALUES (?, ?, ?)",
                (str(m.digest), m.canonical_bytes, time.time()),
            )
            t = Torrent.load(pub.torrent_path.read_bytes())
            db.execute(
                "INSERT OR IGNORE INTO torrents VALUES (?, ?, ?, ?, ?)",
                (
                    t.info_hash_v1,
                    t.info_hash_v2,
                    t.info_hash_v2[:20] if t.info_hash_v2 else None,
                    str(m.digest),
                    pub.torrent_path.read_bytes(),
                ),
            )
            db.execute(
                "INSERT INTO tags (ref, digest, created) VALUES (?, ?, ?)",
                (REF, str(m.digest), time.time()),
            )
        db.close()

    def pull(self, host: str, *trusted: str) -> tuple[int, str, str]:
        args = [a for t in trusted for a in ("--trusted-publisher", t)]
        proc = self.fleet.coordinated_pull(REF, self.tmp / host, *args)
        out, err = proc.communicate(timeout=180)
        return proc.returncode or 0, out, err

    def start_origins(self) -> None:
        """One origin per version (an origin serves one torrent of a name)."""
        for pub in self.versions.values():
            port = free_port()
            self.origins.append(
                subprocess.Popen(
                    [
                        *(str(SHOAL), "seed", str(pub.out), "--host", "127.0.0.1"),
                        *("--port", str(port), "--no-bittorrent"),
                        *("--coordinator", self.fleet.coord_url, "--token", "edge"),
                    ],
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
            wait_listening(port, self.origins[-1], "shoal seed")
        deadline = time.monotonic() + 20
        while len(CoordinatorClient(self.fleet.coord_url).edges()) < len(self.versions):
            assert time.monotonic() < deadline, "the origins did not register"
            time.sleep(0.1)


@pytest.fixture
def signed(tmp_path: Path) -> Iterator[Signed]:
    s = Signed(tmp_path)
    s.version("v1", seed=1)
    s.version("v2", seed=2)
    s.version("forged", seed=3)
    try:
        s.fleet.start_coordinator()
        s.start_origins()
        yield s
    finally:
        stop_processes([*s.origins, *(p for p in (s.fleet.coordinator,) if p is not None)])


def done(out: str) -> dict[str, object]:
    return json.loads(out.strip().splitlines()[-1])


def test_forged_and_rolled_back_manifests_are_refused_by_hosts_that_trust_a_publisher(
    signed: Signed,
) -> None:
    s = signed
    trust = f"{s.public.line()} acme/*"
    s.register(s.versions["v1"], signed_at=1_800_000_000)
    code, out, err = s.pull("trusting", trust)
    assert code == 0, err
    assert done(out)["signed"] == f"signed by trusted key {s.public.id} at 1800000000"
    s.register(s.versions["v2"], signed_at=1_800_000_100)
    code, out, err = s.pull("trusting", trust)
    assert code == 0, err and done(out)["digest"] == str(s.versions["v2"].manifest.digest)

    # the tag rolled back to v1, whose signature is valid but older: refused
    s.alter_registry(s.versions["v1"])
    code, out, err = s.pull("trusting", trust)
    assert code != 0 and "Traceback" not in err
    assert f"refused {REF}" in err and "rollback" in err, err
    store = Store(s.tmp / "trusting")
    assert store.resolve(ModelRef.parse(REF)) == s.versions["v2"].manifest  # v2 stands

    # a forged manifest under the tag: refused before a byte of it is fetched
    s.alter_registry(s.versions["forged"])
    code, out, err = s.pull("trusting", trust)
    assert code != 0 and f"refused {REF}" in err and "unsigned" in err, err
    forged = s.versions["forged"].manifest
    assert not any(store.blob_path(f.sha256).exists() for f in forged.files)
    assert not (s.tmp / "trusting" / "staging" / forged.digest.hex).exists()

    # a host without trusted keys takes it as before, and says it is unsigned
    code, out, err = s.pull("open")
    assert code == 0, err
    assert done(out)["signed"] == "unsigned"
    assert done(out)["digest"] == str(forged.digest)


def test_a_key_trusted_for_one_namespace_cannot_vouch_for_another(signed: Signed) -> None:
    s = signed
    s.register(s.versions["v1"], signed_at=1_800_000_000)
    code, _, err = s.pull("scoped", f"{s.public.line()} library/*")
    assert code != 0 and f"key {s.public.id} is not trusted for acme/tiny" in err, err
    other = keygen(s.tmp / "other.key")
    code, _, err = s.pull("stranger", str(s.tmp / "other.key.pub"))
    assert code != 0 and f"key {s.public.id} is not trusted here" in err, err
    assert other.id in (s.tmp / "other.key.pub").read_text() or other.id
    code, out, err = s.pull("untrusting")  # no keys: signed, but nobody checked
    assert code == 0, err
    assert (
        done(out)["signed"] == f"signed by key {s.public.id} (not checked: no trusted_publishers)"
    )


def test_a_bad_trusted_publisher_entry_is_refused_at_start(signed: Signed) -> None:
    code, _, err = signed.pull("bad", "shoal-ed25519 not-base64")
    assert code == 2 and "trusted_publishers" in err and "Traceback" not in err, err
