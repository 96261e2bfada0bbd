"""Looking at what a coordinator or the local store holds (issue 27, item 5): there was
no command to list a coordinator's models or to inspect one."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import SHOAL
from tests.peer.conftest import Fleet, finish


def shoal(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SHOAL), *map(str, args)], capture_output=True, text=True, timeout=60)


def test_ls_remote_and_show(fleet: Fleet, tmp_path: Path) -> None:
    manifest = fleet.pubs["demo:v1"].manifest
    listed = shoal("ls", "--remote", "--coordinator", fleet.coord_url)
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split() == ["NAME", "ID", "UPDATED"]
    assert row.split()[:2] == ["library/demo:v1", manifest.digest.hex[:12]]

    shown = shoal("show", "demo:v1", "--coordinator", fleet.coord_url)
    assert shown.returncode == 0, shown.stderr
    assert str(manifest.digest) in shown.stdout
    assert f"{len(manifest.files)} files, {manifest.num_chunks} chunks" in shown.stdout
    assert "weights/model.gguf" in shown.stdout
    as_json = json.loads(
        shoal("show", "demo:v1", "--coordinator", fleet.coord_url, "--json").stdout
    )
    assert as_json["digest"] == str(manifest.digest)

    models = tmp_path / "m"
    finish(fleet.coordinated_pull("demo:v1", models))
    local = shoal("show", "demo:v1", "--models-dir", models)
    assert local.returncode == 0 and str(manifest.digest) in local.stdout


def test_show_and_ls_remote_say_what_is_missing(fleet: Fleet, tmp_path: Path) -> None:
    r = shoal("show", "nope:1", "--models-dir", tmp_path / "none")
    assert r.returncode == 3 and "nope:1 is not in" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "none").exists()
    r = shoal("show", "nope:1", "--coordinator", fleet.coord_url)
    assert r.returncode == 3 and "not published here" in r.stderr
    r = shoal("ls", "--remote")
    assert r.returncode == 2 and "--coordinator" in r.stderr
