"""Issue 29, item 2: the registry mirror every agent answers (peer/mirror/).

A coordinator and an origin hold an ollama model (published from ollama's own store
layout) and a model published from files. An agent with ``--mirror`` on a free port is
asked through it by a client that does what ``ollama serve`` does, by Debian's skopeo,
and by hand for the spec's answers and for bad input.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from peer.store import Store
from shoal.publishing.ollama import ollama_source
from shoal.ref import ModelRef
from shoal.testing import (
    blob_fixture,
    free_port,
    stop_processes,
    wait_listening,
    write_ollama_store,
)
from tests.conftest import SHOAL
from tests.peer.conftest import MODEL, Fleet
from tests.peer.mirror import ollama_client


def need(*programs: str) -> None:
    """Fail, not skip: scripts/test.sh installs them, so a missing one is a broken setup."""
    for program in programs:
        if shutil.which(program) is None:
            pytest.fail(f"{program} is not installed: run scripts/test.sh, which installs it")


def start_mirror_agent(fleet: Fleet, models: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    """An agent of ``fleet`` with its mirror on 127.0.0.1:``port``, once it listens."""
    agent = subprocess.Popen(
        [
            *(str(SHOAL), "agent", "--models-dir", str(models), "--api-port", str(free_port())),
            *("--host", "127.0.0.1", "--no-lsd", "--mirror", f"127.0.0.1:{port}"),
            *("--coordinator", fleet.coord_url, "--token", "fleet", *extra),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_listening(port, agent, "the agent's mirror")
    return agent


LAYERS = [
    ("application/vnd.ollama.image.model", blob_fixture(3 * 1024 * 1024 + 777, seed=5)),
    ("application/vnd.ollama.image.template", b"{{ .Prompt }}"),
    ("application/vnd.ollama.image.params", b'{"stop":["<|end|>"]}'),
]


class Mirrored:
    def __init__(self, fleet: Fleet, url: str, models: Path, ollama: Path) -> None:
        self.fleet, self.url, self.models, self.ollama = fleet, url, models, ollama

    @property
    def manifest_bytes(self) -> bytes:
        return (self.ollama / "manifests" / "registry.ollama.ai/library/tiny/1").read_bytes()


@pytest.fixture
def mirrored(tmp_path: Path) -> Iterator[Mirrored]:
    ollama = tmp_path / "ollama-src"
    write_ollama_store(ollama, "tiny:1", LAYERS)
    fleet = Fleet(tmp_path)
    fleet.add_source("tiny:1", ollama_source("tiny:1", ollama), ollama)
    fleet.add_model("files:1", MODEL)
    agent: subprocess.Popen[str] | None = None
    try:
        fleet.start_coordinator()
        fleet.start_seed()
        port = free_port()
        models = tmp_path / "host"
        agent = start_mirror_agent(fleet, models, port)
        yield Mirrored(fleet, f"http://127.0.0.1:{port}", models, ollama)
    finally:
        stop_processes([p for p in (agent, fleet.seed, fleet.coordinator) if p is not None])


def test_an_ollama_client_pulls_a_fleet_model_through_the_mirror(
    mirrored: Mirrored, tmp_path: Path
) -> None:
    """The model is not on the host: the manifest GET pulls it through the fleet; then
    ollama's five steps end with ollama's layout, the manifest byte for byte."""
    out = tmp_path / "ollama"
    pulled = ollama_client.pull(mirrored.url, "library", "tiny", "1", out)
    host = mirrored.url.removeprefix("http://")
    stored = out / "manifests" / host / "library" / "tiny" / "1"
    assert stored.read_bytes() == mirrored.manifest_bytes == pulled.manifest
    doc = json.loads(pulled.manifest)
    for layer in [doc["config"], *doc["layers"]]:
        blob = out / "blobs" / layer["digest"].replace(":", "-")
        src = mirrored.ollama / "blobs" / blob.name
        assert blob.read_bytes() == src.read_bytes()
        assert "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest() == layer["digest"]
    assert len(pulled.stalls) >= 16  # the model layer was read in 16 ranges
    assert max(pulled.stalls) < 30


def test_spec_answers(mirrored: Mirrored) -> None:
    base = mirrored.url
    r = httpx.get(f"{base}/v2/")
    assert r.status_code == 200 and r.headers["docker-distribution-api-version"] == "registry/2.0"
    m = httpx.get(f"{base}/v2/library/tiny/manifests/1", timeout=120)
    assert m.status_code == 200
    digest = "sha256:" + hashlib.sha256(m.content).hexdigest()
    assert m.headers["docker-content-digest"] == digest
    assert m.headers["content-type"] == "application/vnd.docker.distribution.manifest.v2+json"
    h = httpx.head(f"{base}/v2/library/tiny/manifests/{digest}")
    assert h.status_code == 200 and int(h.headers["content-length"]) == len(m.content)
    layer = json.loads(m.content)["layers"][0]
    blob = f"{base}/v2/library/tiny/blobs/{layer['digest']}"
    h = httpx.head(blob)
    assert int(h.headers["content-length"]) == layer["size"]
    assert h.headers["docker-content-digest"] == layer["digest"]
    r = httpx.get(blob)
    assert r.status_code == 307 and r.headers["location"].endswith(f"{layer['digest']}/data")
    whole = httpx.get(blob, follow_redirects=True).content
    assert hashlib.sha256(whole).hexdigest() == layer["digest"].removeprefix("sha256:")
    r = httpx.get(blob, headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == whole[10:20]
    assert r.headers["content-range"] == f"bytes 10-19/{len(whole)}"
    r = httpx.get(blob + "/data", headers={"Range": f"bytes={len(whole)}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(whole)}"
    r = httpx.get(blob + "/data", headers={"Range": "bytes=-5"})
    assert r.status_code == 206 and r.content == whole[-5:]


def test_a_model_from_files_is_an_oci_artifact_with_the_same_digest_everywhere(
    mirrored: Mirrored,
) -> None:
    m = httpx.get(f"{mirrored.url}/v2/library/files/manifests/1", timeout=120)
    assert m.status_code == 200, m.text
    assert m.headers["content-type"] == "application/vnd.oci.image.manifest.v1+json"
    doc = json.loads(m.content)
    titles = {x["annotations"]["org.opencontainers.image.title"]: x for x in doc["layers"]}
    empty = {p for p, size in MODEL.items() if not size}
    assert set(titles) == set(MODEL) - empty  # empty files are named, not layers
    assert json.loads(doc["annotations"]["io.shoal.empty-files"]) == sorted(empty)
    for path, layer in titles.items():
        got = httpx.get(
            f"{mirrored.url}/v2/library/files/blobs/{layer['digest']}", follow_redirects=True
        ).content
        assert got == (mirrored.fleet.srcs["files:1"] / path).read_bytes()
    config = httpx.get(
        f"{mirrored.url}/v2/library/files/blobs/{doc['config']['digest']}", follow_redirects=True
    )
    assert config.content == b"{}"
    # derived from the shoal manifest alone: what any host serves
    from peer.mirror.oci import artifact_manifest

    assert m.content == artifact_manifest(mirrored.fleet.pubs["files:1"].manifest)


def skopeo_copy(url: str, name: str, out: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *("skopeo", "copy", "--src-tls-verify=false"),
            f"docker://{url.removeprefix('http://')}/{name}",
            f"dir:{out}",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "HOME": str(tmp_path)},
    )


def test_skopeo_copies_an_artifact_through_the_mirror(mirrored: Mirrored, tmp_path: Path) -> None:
    need("skopeo")
    out = tmp_path / "copy"
    done = skopeo_copy(mirrored.url, "library/files:1", out, tmp_path)
    assert done.returncode == 0, done.stderr
    doc = json.loads((out / "manifest.json").read_bytes())
    for layer in doc["layers"]:
        path = layer["annotations"]["org.opencontainers.image.title"]
        got = (out / layer["digest"].removeprefix("sha256:")).read_bytes()
        assert got == (mirrored.fleet.srcs["files:1"] / path).read_bytes()


def test_skopeo_reads_an_ollama_manifest_but_will_not_copy_its_layers(
    mirrored: Mirrored, tmp_path: Path
) -> None:
    """containers/image (skopeo 1.9) refuses a docker v2 manifest whose layers are not
    image layers, from any registry: ollama's models are copied by ollama's protocol."""
    need("skopeo")
    port = mirrored.url.rsplit(":", 1)[1]
    raw = subprocess.run(
        [
            "skopeo",
            "inspect",
            "--raw",
            "--tls-verify=false",
            f"docker://127.0.0.1:{port}/library/tiny:1",
        ],
        capture_output=True,
        timeout=180,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert raw.returncode == 0 and raw.stdout == mirrored.manifest_bytes, raw.stderr
    done = skopeo_copy(mirrored.url, "library/tiny:1", tmp_path / "copy", tmp_path)
    assert done.returncode != 0
    assert (
        'unsupported docker v2s2 media type: \\"application/vnd.ollama.image.model' in done.stderr
    )


BAD = [
    ("GET", "/v2/library/nothere/manifests/1", 404, "MANIFEST_UNKNOWN"),
    ("GET", "/v2/library/tiny/manifests/sha256:" + "0" * 64, 404, "MANIFEST_UNKNOWN"),
    ("GET", "/v2/library/tiny/blobs/sha256:" + "0" * 64, 404, "BLOB_UNKNOWN"),
    ("HEAD", "/v2/library/tiny/blobs/sha256:" + "0" * 64, 404, None),
    ("GET", "/v2/library/tiny/blobs/sha256:XYZ", 400, "DIGEST_INVALID"),
    ("GET", "/v2/library/tiny/blobs/md5:abcd", 400, "DIGEST_INVALID"),
    ("GET", "/v2/library/tiny/manifests/sha256:" + "0" * 63, 400, "DIGEST_INVALID"),
    ("GET", "/v2/library/tiny/manifests/-bad", 400, "TAG_INVALID"),
    ("GET", "/v2/library/tiny/manifests/" + "t" * 200, 400, "TAG_INVALID"),
    ("GET", "/v2/Li..b/tiny/manifests/1", 400, "NAME_INVALID"),
    ("GET", "/v2/library/%2e%2e/manifests/1", 400, "NAME_INVALID"),
    ("GET", "/v2/../../etc/passwd/manifests/1", 404, "NAME_UNKNOWN"),  # httpx folds the dots
    ("GET", "/v2/a/b/c/manifests/1", 404, "NAME_UNKNOWN"),
    ("GET", "/v2/library/tiny/tags/list", 404, "NAME_UNKNOWN"),
    ("GET", "/etc/passwd", 404, "NAME_UNKNOWN"),
    ("GET", "/v2/" + "a/" * 600 + "manifests/1", 400, "NAME_INVALID"),
    ("GET", "/v2/library/tiny/manifests/1?ns=bad%20host", 400, "NAME_INVALID"),
    ("PUT", "/v2/library/tiny/manifests/1", 405, "UNSUPPORTED"),
    ("DELETE", "/v2/library/tiny/blobs/sha256:" + "0" * 64, 405, "UNSUPPORTED"),
]


def test_bad_input_is_a_4xx_with_the_specs_error_body(mirrored: Mirrored) -> None:
    with httpx.Client(base_url=mirrored.url, timeout=60) as c:
        for method, path, status, code in BAD:
            r = c.request(method, path)
            assert r.status_code == status, (method, path, r.status_code, r.text)
            if code is not None:
                assert r.json()["errors"][0]["code"] == code, (path, r.text)
    # a client that sends dots as they are (http.client does not fold them)
    host, port = mirrored.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    for path in ("/v2/../../etc/passwd/manifests/1", "/v2/library/../blobs/sha256:" + "0" * 64):
        conn.request("GET", path)
        r = conn.getresponse()
        body = json.loads(r.read())
        assert r.status in (400, 404) and body["errors"][0]["code"] in (
            "NAME_INVALID",
            "NAME_UNKNOWN",
        )
    conn.close()
    files = {p.name for p in mirrored.models.rglob("*")}
    assert "passwd" not in files


def test_a_client_reads_a_model_while_the_swarm_fills_without_stalling(tmp_path: Path) -> None:
    """The host's pull is capped at 1 MiB/s (about 8 s for the model): the manifest
    comes back while the pull runs, and ollama's 16 ranged reads get the right bytes as
    the chunks are verified, the ones they wait for first, never 30 s without bytes."""
    ollama = tmp_path / "ollama-src"
    big = [("application/vnd.ollama.image.model", blob_fixture(8 * 1024 * 1024 + 99, seed=8))]
    write_ollama_store(ollama, "slow:1", big)
    fleet = Fleet(tmp_path)
    fleet.add_source("slow:1", ollama_source("slow:1", ollama), ollama)
    agent = None
    try:
        fleet.start_coordinator()
        fleet.start_seed(bittorrent=False)
        port = free_port()
        models = tmp_path / "host"
        agent = start_mirror_agent(fleet, models, port, "--max-rate", "1M")
        url = f"http://127.0.0.1:{port}"
        asked = time.monotonic()
        m = httpx.get(f"{url}/v2/library/slow/manifests/1", timeout=60)
        answered = time.monotonic() - asked
        assert m.status_code == 200, m.text
        assert Store(models).open().resolve(ModelRef.parse("slow:1")) is None  # still pulling
        pulled = ollama_client.pull(url, "library", "slow", "1", tmp_path / "ollama")
        took = time.monotonic() - asked
        assert pulled.manifest == m.content
        digest = json.loads(m.content)["layers"][0]["digest"]
        got = (tmp_path / "ollama" / "blobs" / digest.replace(":", "-")).read_bytes()
        assert got == big[0][1]
        assert max(pulled.stalls) < 30
        assert answered < took / 2, (answered, took)  # the manifest did not wait for the model
    finally:
        stop_processes([p for p in (agent, fleet.seed, fleet.coordinator) if p is not None])


def test_the_printed_registries_conf_sends_skopeo_through_the_mirror(
    mirrored: Mirrored, tmp_path: Path
) -> None:
    """``shoal mirror config --client podman`` as printed: skopeo asked for the model at
    registry.ollama.ai gets it from this host's mirror."""
    need("skopeo")
    port = mirrored.url.rsplit(":", 1)[1]
    printed = subprocess.run(
        [str(SHOAL), "mirror", "config", "--client", "podman"],
        capture_output=True,
        text=True,
        env={**os.environ, "SHOAL_AGENT_MIRROR": f"127.0.0.1:{port}"},
        check=True,
    ).stdout
    conf = tmp_path / "registries.conf"
    conf.write_text(printed.split("\n", 1)[1])  # without the "## podman" title
    out = tmp_path / "copy"
    done = subprocess.run(
        [
            *("skopeo", "--registries-conf", str(conf), "copy"),
            *("docker://registry.ollama.ai/library/files:1", f"dir:{out}"),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads((out / "manifest.json").read_bytes())
    titles = {x["annotations"]["org.opencontainers.image.title"] for x in doc["layers"]}
    assert titles == {p for p, size in MODEL.items() if size}


def test_mirror_config_names_each_client(tmp_path: Path) -> None:
    r = subprocess.run([str(SHOAL), "mirror", "config"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for client in ("ollama", "containerd", "podman", "skopeo", "crane", "oras"):
        assert f"## {client}\n" in r.stdout
    assert "ollama pull --insecure 127.0.0.1:8474/library/deepseek-r1:7b" in r.stdout
    bad = subprocess.run(
        [str(SHOAL), "mirror", "config", "--client", "docker"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "pick one of" in bad.stderr
    off = subprocess.run(
        [str(SHOAL), "mirror", "config"],
        capture_output=True,
        text=True,
        env={**os.environ, "SHOAL_AGENT_MIRROR": "off"},
    )
    assert off.returncode == 2 and "mirror is off" in off.stderr


def test_a_mirror_read_of_a_model_beyond_the_disk_budget_is_refused_clearly(
    tmp_path: Path,
) -> None:
    ollama = tmp_path / "ollama-src"
    write_ollama_store(ollama, "tiny:1", LAYERS)
    fleet = Fleet(tmp_path)
    fleet.add_source("tiny:1", ollama_source("tiny:1", ollama), ollama)
    agent = None
    try:
        fleet.start_coordinator()
        fleet.start_seed()
        port = free_port()
        models = tmp_path / "host"
        agent = start_mirror_agent(fleet, models, port, "--max-store-size", "1M", "--min-free", "0")
        r = httpx.get(f"http://127.0.0.1:{port}/v2/library/tiny/manifests/1", timeout=60)
        assert r.status_code == 507, r.text
        error = r.json()["errors"][0]
        assert error["code"] == "UNAVAILABLE" and "cannot pull library/tiny:1" in error["message"]
        blobs = models / "blobs"
        assert not blobs.exists() or not any(blobs.iterdir())  # nothing half-written
    finally:
        stop_processes([p for p in (agent, fleet.seed, fleet.coordinator) if p is not None])


@pytest.mark.parametrize("model", ["library/files:1", "library/tiny:1"])
def test_containerd_fetches_through_the_mirror_as_its_hosts_toml_says(
    mirrored: Mirrored, model: str
) -> None:
    """Debian's containerd 1.6 with the hosts.toml ``shoal mirror config`` prints:
    ``ctr content fetch registry.ollama.ai/...`` takes every blob from the agent's mirror."""
    need("containerd", "ctr")
    port = mirrored.url.rsplit(":", 1)[1]
    printed = subprocess.run(
        [str(SHOAL), "mirror", "config", "--client", "containerd"],
        capture_output=True,
        text=True,
        env={**os.environ, "SHOAL_AGENT_MIRROR": f"127.0.0.1:{port}"},
        check=True,
    ).stdout
    base = Path(tempfile.mkdtemp(prefix="ctd-", dir="/tmp"))  # a socket path is short
    hosts = base / "certs.d" / "registry.ollama.ai" / "hosts.toml"
    hosts.parent.mkdir(parents=True)
    hosts.write_text(printed.split("\n", 1)[1])
    sock = base / "sock"
    config = base / "config.toml"
    config.write_text(
        f'version = 2\nroot = "{base / "root"}"\nstate = "{base / "state"}"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{sock}"\n'
    )
    daemon = subprocess.Popen(
        ["containerd", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not sock.exists():
            assert time.monotonic() < deadline and daemon.poll() is None, "containerd did not start"
            time.sleep(0.1)
        ctr = ["ctr", "-a", str(sock)]
        done = subprocess.run(
            [
                *ctr,
                "content",
                "fetch",
                "--hosts-dir",
                str(base / "certs.d"),
                f"registry.ollama.ai/{model}",
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr
        manifest = httpx.get(
            f"{mirrored.url}/v2/{model.replace(':', '/manifests/')}", timeout=60
        ).content
        doc = json.loads(manifest)
        for layer in doc["layers"]:
            got = subprocess.run(
                [*ctr, "content", "get", layer["digest"]], capture_output=True, timeout=60
            )
            assert got.returncode == 0, got.stderr
            assert hashlib.sha256(got.stdout).hexdigest() == layer["digest"].removeprefix("sha256:")
    finally:
        stop_processes([daemon])
        shutil.rmtree(base, ignore_errors=True)


def test_a_mirror_beyond_loopback_asks_for_its_token(tmp_path: Path) -> None:
    """``--mirror 0.0.0.0:P`` needs ``--mirror-token-file``; then every request shows the
    token (Bearer, or as a Basic password), except ollama's ranged reads of a data URL,
    which carry the capability the 307 gave: forged or moved to another blob, refused."""
    ollama = tmp_path / "ollama-src"
    write_ollama_store(ollama, "tiny:1", LAYERS)
    fleet = Fleet(tmp_path)
    fleet.add_source("tiny:1", ollama_source("tiny:1", ollama), ollama)
    agent = None
    port = free_port()
    common = [
        *(str(SHOAL), "agent", "--models-dir", str(tmp_path / "host")),
        *("--host", "127.0.0.1", "--no-lsd", "--mirror", f"0.0.0.0:{port}"),
    ]
    refused = subprocess.run(
        [*common, "--api-port", str(free_port())], capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 2 and "--mirror-token-file" in refused.stderr
    token = tmp_path / "mirror.token"
    token.write_text("m1rr0r-secret\n")
    try:
        fleet.start_coordinator()
        fleet.start_seed()
        agent = subprocess.Popen(
            [
                *common,
                *("--api-port", str(free_port()), "--mirror-token-file", str(token)),
                *("--coordinator", fleet.coord_url, "--token", "fleet"),
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_listening(port, agent, "the agent's mirror")
        url = f"http://127.0.0.1:{port}"
        r = httpx.get(f"{url}/v2/library/tiny/manifests/1")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
        assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"
        assert httpx.get(f"{url}/v2/", auth=("x", "wrong")).status_code == 401
        assert httpx.get(f"{url}/v2/", auth=("anyone", "m1rr0r-secret")).status_code == 200
        bearer = "Bearer m1rr0r-secret"
        out = tmp_path / "ollama"
        pulled = ollama_client.pull(url, "library", "tiny", "1", out, authorization=bearer)
        doc = json.loads(pulled.manifest)
        layer = doc["layers"][0]
        got = (out / "blobs" / layer["digest"].replace(":", "-")).read_bytes()
        assert got == LAYERS[0][1]
        # the capability names one blob's data URL, for a while, signed by this process
        moved = httpx.get(
            f"{url}/v2/library/tiny/blobs/{layer['digest']}", headers={"Authorization": bearer}
        )
        location = moved.headers["location"]
        assert moved.status_code == 307 and "cap=" in location
        assert httpx.get(f"{url}{location}", headers={"Range": "bytes=0-9"}).status_code == 206
        other = doc["layers"][1]["digest"]
        elsewhere = location.replace(layer["digest"], other)
        assert httpx.get(f"{url}{elsewhere}").status_code == 401
        forged = location[:-4] + ("0000" if not location.endswith("0000") else "1111")
        assert httpx.get(f"{url}{forged}").status_code == 401
    finally:
        stop_processes([p for p in (agent, fleet.seed, fleet.coordinator) if p is not None])
