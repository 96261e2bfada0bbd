"""The README's "Run a fleet" walkthrough, run as written (scripts/walkthrough.sh):
tokens, a coordinator, a published model, an origin, an edge, two agents and a pull on
each, their registry mirrors, on 127.0.0.1 with the default ports."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from peer.mirror.oci import artifact_manifest
from peer.store import Store
from shoal.digest import Digest
from shoal.ref import ModelRef

ROOT = Path(__file__).resolve().parent.parent


def test_the_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    work = tmp_path / "fleet"
    r = subprocess.run(
        [str(ROOT / "scripts" / "walkthrough.sh"), str(work)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout + r.stderr
    assert out.count("pulled library/demo:v1 (48.0 MiB)") == 2, out
    assert "Traceback" not in out
    weights = (work / "model" / "weights.bin").read_bytes()
    for host in ("host-a", "host-b"):
        store = Store(work / host).open()
        manifest = store.resolve(ModelRef.parse("demo:v1"))
        assert manifest is not None, host
        entry = next(f for f in manifest.files if f.path.value == "weights.bin")
        assert store.blob_path(entry.sha256).read_bytes() == weights
    # step 8: each agent's registry mirror serves the model, under one digest
    digests = re.findall(r"^(sha256:[0-9a-f]{64})$", r.stdout, re.M)
    assert digests == [str(Digest.of(artifact_manifest(manifest)))] * 2, r.stdout
    # everything it started was stopped: no process is left working in its directory
    left = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if Path(proc / "cwd").resolve().is_relative_to(work):
                left.append((proc / "cmdline").read_bytes().replace(b"\0", b" "))
        except OSError:
            continue
    assert not left, left
