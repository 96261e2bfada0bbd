"""``shoal publish`` end to end, as a user runs it, checked independently of our own code."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import libtorrent as lt
import pytest

from shoal.digest import Digest
from shoal.manifest import Manifest
from shoal.testing import write_blob, write_model_dir, write_ollama_store
from tests.conftest import RunShoal

KiB = 1024
CS = 64 * KiB
FILES = {
    "model.gguf": 5 * CS + 1234,
    "tokenizer/tokenizer.json": 40_000,
    "tokenizer/empty.txt": 0,
    "config.json": CS,
    "params/p.bin": 1,
}


def publish_model(run_shoal: RunShoal, tmp_path: Path, *extra: str) -> tuple[Path, Path]:
    src = write_model_dir(tmp_path / "src", FILES, seed=7)
    out = tmp_path / "out"
    r = run_shoal(
        "publish",
        src,
        "--name",
        "org/demo:v1",
        "--out",
        out,
        "--chunk-size",
        "64KiB",
        "--tracker",
        "http://127.0.0.1:1/announce",
        "--web-seed",
        "http://127.0.0.1:2/ws",
        *extra,
    )
    assert r.returncode == 0, r.stderr
    return src, out


def test_every_digest_checked_independently(run_shoal: RunShoal, tmp_path: Path) -> None:
    src, out = publish_model(run_shoal, tmp_path)
    view = json.loads((out / "manifest.json").read_text())
    manifest = Manifest.load((out / "manifest.msgpack").read_bytes())
    assert view["digest"] == str(manifest.digest)
    assert (
        view["digest"]
        == "sha256:" + hashlib.sha256((out / "manifest.msgpack").read_bytes()).hexdigest()
    )
    assert view["ref"] == "org/demo:v1" and view["chunk_size"] == CS
    assert sorted(f["path"] for f in view["files"]) == sorted(FILES)
    info = lt.torrent_info(str(out / "demo-v1.torrent"))
    assert str(info.info_hashes().v1) == view["info_hash_v1"]
    assert str(info.info_hashes().v2) == view["info_hash_v2"]
    piece = 0
    for f in view["files"]:
        data = (src / f["path"]).read_bytes()
        assert f["size"] == len(data)
        assert f["sha256"] == hashlib.sha256(data).hexdigest()
        slices = [data[i : i + CS] for i in range(0, len(data), CS)]
        assert f["chunks"] == [hashlib.sha256(s).hexdigest() for s in slices]
        blob = out / "blobs" / f"sha256-{f['sha256']}"
        assert blob.read_bytes() == data
        for s in slices:  # v1 pieces: the same byte ranges, pad zeros included
            assert bytes(info.hash_for_piece(piece)) == hashlib.sha1(s.ljust(CS, b"\0")).digest()
            piece += 1
    assert piece == info.num_pieces()
    assert (out / "blobs" / f"sha256-{hashlib.sha256(b'').hexdigest()}").stat().st_size == 0
    # hard links on the same filesystem
    assert (out / "blobs" / f"sha256-{view['files'][1]['sha256']}").stat().st_nlink == 2


def _wait(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met before the deadline")


def test_libtorrent_verifies_every_piece_v1_and_v2(run_shoal: RunShoal, tmp_path: Path) -> None:
    src, out = publish_model(run_shoal, tmp_path)
    save = tmp_path / "save"
    shutil.copytree(src, save / "demo-v1")  # the torrent's layout: <name>/<path>
    ses = lt.session(
        {
            "listen_interfaces": "127.0.0.1:0",
            "enable_dht": False,
            "enable_lsd": False,
            "enable_upnp": False,
            "enable_natpmp": False,
            "alert_mask": lt.alert_category.status,
        }
    )
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(str(out / "demo-v1.torrent"))
    params.save_path = str(save)
    params.url_seeds = []
    params.trackers = []
    handle = ses.add_torrent(params)
    _wait(lambda: handle.status().state == lt.torrent_status.seeding)
    status = handle.status()
    assert status.num_pieces == params.ti.num_pieces()
    # a single flipped byte is caught by the hashes libtorrent reads from our torrent
    with (save / "demo-v1" / "model.gguf").open("r+b") as f:
        f.seek(CS + 5)
        byte = f.read(1)
        f.seek(CS + 5)
        f.write(bytes([byte[0] ^ 1]))
    handle.force_recheck()
    checking = (lt.torrent_status.checking_files, lt.torrent_status.checking_resume_data)

    def rechecked() -> bool:
        st = handle.status()
        return st.state not in checking and st.num_pieces == params.ti.num_pieces() - 1

    _wait(rechecked)
    ses.remove_torrent(handle)


def _listed(cmd: list[str], marker: str) -> list[tuple[str, int]]:
    text = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=30).stdout
    return [(p, n) for p, n in _parse(text, marker)]


def _parse(text: str, marker: str):  # type: ignore[no-untyped-def]
    import re

    if marker == "aria2":
        for m in re.finditer(r"\|\./demo-v1/(.+)\n\s+\|.*\(([\d,]+)\)", text):
            yield m.group(1), int(m.group(2).replace(",", ""))
    else:
        files = text.split("FILES", 1)[1]
        for m in re.finditer(r"^\s+demo-v1/(.+) \(([\d.]+ \w+)\)$", files, re.M):
            yield m.group(1), m.group(2)


def test_third_party_clients_read_v1_only(run_shoal: RunShoal, tmp_path: Path) -> None:
    _, out = publish_model(run_shoal, tmp_path, "--v1-only")
    torrent = str(out / "demo-v1.torrent")
    view = json.loads((out / "manifest.json").read_text())
    assert view["info_hash_v2"] is None
    expected = {f["path"]: f["size"] for f in view["files"]}
    aria = subprocess.run(
        ["aria2c", "--show-files", torrent], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    assert f"Info Hash: {view['info_hash_v1']}" in aria
    listed = dict(_parse(aria, "aria2"))
    assert {p: n for p, n in listed.items() if not p.startswith(".pad/")} == expected
    assert all(n == int(p.split("/")[1]) for p, n in listed.items() if p.startswith(".pad/"))
    tr = subprocess.run(
        ["transmission-show", torrent], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    assert f"Hash: {view['info_hash_v1']}" in tr
    names = {p for p, _ in _parse(tr, "transmission")}
    assert {p for p in names if not p.startswith(".pad/")} == set(expected)


def test_ollama_store_publishes_with_media_types(run_shoal: RunShoal, tmp_path: Path) -> None:
    models = tmp_path / "ollama"
    layers = [
        ("application/vnd.ollama.image.model", os.urandom(300_000)),
        ("application/vnd.ollama.image.template", b"{{ .Prompt }}"),
        ("application/vnd.ollama.image.params", b'{"stop": ["<|end|>"]}'),
    ]
    doc = write_ollama_store(models, "tiny:1b", layers)
    out = tmp_path / "out"
    r = run_shoal("publish", "ollama:tiny:1b", "--ollama-models", models, "--out", out)
    assert r.returncode == 0, r.stderr
    view = json.loads((out / "manifest.json").read_text())
    assert view["ref"] == "library/tiny:1b"
    types = {f["path"]: f["media_type"] for f in view["files"]}
    for layer in [doc["config"], *doc["layers"]]:
        assert types[f"blobs/{Digest.parse(layer['digest']).filename}"] == layer["mediaType"]
    assert types["ollama-manifest.json"] == doc["mediaType"]
    ollama_json = (models / "manifests/registry.ollama.ai/library/tiny/1b").read_bytes()
    assert (out / "blobs" / Digest.of(ollama_json).filename).read_bytes() == ollama_json


def test_ollama_blob_with_wrong_digest_is_refused(run_shoal: RunShoal, tmp_path: Path) -> None:
    models = tmp_path / "ollama"
    doc = write_ollama_store(
        models, "tiny:1b", [("application/vnd.ollama.image.model", b"A" * 1000)]
    )
    blob = models / "blobs" / Digest.parse(doc["layers"][0]["digest"]).filename
    blob.write_bytes(b"B" * 1000)  # same size, other bytes
    out = tmp_path / "out"
    r = run_shoal("publish", "ollama:tiny:1b", "--ollama-models", models, "--out", out)
    assert r.returncode == 2
    assert "does not match its digest" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()
    assert not list(tmp_path.glob(".out.partial-*"))


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    good = write_model_dir(tmp_path / "good", {"a.bin": 10})
    (tmp_path / "empty").mkdir()
    escape = write_model_dir(tmp_path / "escape", {"a.bin": 10})
    (escape / "link").symlink_to("/etc/hostname")
    dangling = write_model_dir(tmp_path / "dangling", {"a.bin": 10})
    (dangling / "link").symlink_to("missing")
    zero = tmp_path / "zero.bin"
    zero.write_bytes(b"")
    return {
        "missing": (["publish", str(tmp_path / "nope"), "--name", "m"], "does not exist"),
        "empty dir": (["publish", str(tmp_path / "empty"), "--name", "m"], "contains no files"),
        "escaping symlink": (["publish", str(escape), "--name", "m"], "points outside"),
        "dangling symlink": (["publish", str(dangling), "--name", "m"], "dangling"),
        "ref Foo:bar:baz": (
            ["publish", str(good), "--name", "Foo:bar:baz"],
            "more than one ':tag'",
        ),
        "ref ../x": (["publish", str(good), "--name", "../x"], "two dots in a row"),
        "ref empty": (["publish", str(good), "--name", ""], "empty model reference"),
        "no name": (["publish", str(good)], "--name is required"),
        "only empty files": (["publish", str(zero), "--name", "m"], "only empty files"),
        "bad chunk size": (
            ["publish", str(good), "--name", "m", "--chunk-size", "3MiB"],
            "invalid chunk size",
        ),
        "bad web seed": (
            ["publish", str(good), "--name", "m", "--web-seed", "ftp://x"],
            "invalid web seed URL",
        ),
        "bad ollama": (
            ["publish", "ollama:nothere", "--ollama-models", str(tmp_path)],
            "is not in",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "empty dir",
        "escaping symlink",
        "dangling symlink",
        "ref Foo:bar:baz",
        "ref ../x",
        "ref empty",
        "no name",
        "only empty files",
        "bad chunk size",
        "bad web seed",
        "bad ollama",
    ],
)
def test_bad_input_exit_2_and_no_output(run_shoal: RunShoal, tmp_path: Path, case: str) -> None:
    args, words = _bad_inputs(tmp_path)[case]
    out = tmp_path / "out"
    r = run_shoal(*args, "--out", out, cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert words in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) <= 2
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root to drop to another user",
)
def test_unreadable_file(run_shoal: RunShoal, tmp_path: Path) -> None:
    base = Path(os.environ.get("TMPDIR", "/tmp")) / f"shoal-unreadable-{os.getpid()}"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(mode=0o777)
    base.chmod(0o777)
    try:
        src = write_model_dir(base / "src", {"a.bin": 10, "secret.bin": 10})
        src.chmod(0o755)
        (src / "a.bin").chmod(0o644)
        (src / "secret.bin").chmod(0o600)
        r = run_shoal("publish", src, "--name", "m", "--out", base / "out", user="nobody", cwd=base)
        assert r.returncode == 2, r.stderr
        assert "cannot read" in r.stderr and "secret.bin" in r.stderr and "permission" in r.stderr
        assert not (base / "out").exists()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_zero_length_files_are_handled(run_shoal: RunShoal, tmp_path: Path) -> None:
    src = write_model_dir(tmp_path / "src", {"a": 0, "b/c": 0, "d": 100})
    out = tmp_path / "out"
    r = run_shoal("publish", src, "--name", "m", "--out", out, "--json")
    assert r.returncode == 0, r.stderr
    view = json.loads(r.stdout)
    assert [(f["path"], f["size"], f["chunks"]) for f in view["files"][:2]] == [
        ("a", 0, []),
        ("b/c", 0, []),
    ]
    assert lt.torrent_info(str(out / "m-latest.torrent")).num_files() >= 3


def test_output_exists_and_force(run_shoal: RunShoal, tmp_path: Path) -> None:
    src, out = publish_model(run_shoal, tmp_path)
    r = run_shoal("publish", src, "--name", "org/demo:v1", "--out", out)
    assert r.returncode == 2 and "already exists" in r.stderr and "--force" in r.stderr
    (out / "marker").write_text("old")
    r = run_shoal("publish", src, "--name", "org/demo:v1", "--out", out, "--force")
    assert r.returncode == 0, r.stderr
    assert not (out / "marker").exists() and (out / "manifest.msgpack").exists()


def test_output_inside_source_is_refused(run_shoal: RunShoal, tmp_path: Path) -> None:
    src = write_model_dir(tmp_path / "src", {"a": 10})
    r = run_shoal("publish", src, "--name", "m", "--out", src / "published")
    assert r.returncode == 2 and "inside the source" in r.stderr


def test_copies_across_filesystems(run_shoal: RunShoal, tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on another filesystem")
    src = shm / f"shoal-src-{os.getpid()}"
    try:
        write_model_dir(src, {"w.bin": 300_000})
        out = tmp_path / "out"
        r = run_shoal("publish", src, "--name", "m", "--out", out)
        assert r.returncode == 0, r.stderr
        blob = next((out / "blobs").iterdir())
        assert blob.stat().st_nlink == 1 and blob.read_bytes() == (src / "w.bin").read_bytes()
        assert blob.stat().st_mode & 0o777 == 0o644
    finally:
        shutil.rmtree(src, ignore_errors=True)


def test_kill_mid_publish_leaves_no_output(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_blob(src / "big.bin", 400 << 20, seed=1)
    out = tmp_path / "out"
    from tests.conftest import SHOAL

    proc = subprocess.Popen(
        [str(SHOAL), "publish", str(src), "--name", "m", "--out", str(out), "--chunk-size", "16KiB"]
    )
    try:
        _wait(lambda: any(tmp_path.glob(".out.partial-*")) or proc.poll() is not None)
        assert proc.poll() is None, "publish finished before it could be killed; use a larger file"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not out.exists()
    assert list(tmp_path.glob(".out.partial-*"))  # what the kill left, hidden beside it
    r = subprocess.run(
        [str(SHOAL), "publish", str(src), "--name", "m", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert not list(tmp_path.glob(".out.partial-*"))  # the next publish cleaned it up
