"""/v1/ingests (tracker/ingest_api.py) on a real coordinator: who may ask, claim and end
an ingest, and what an origin may register with it: the model of the reference it
claimed, and no other."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shoal import wire
from shoal.coordinator_client import CoordinatorClient
from shoal.errors import AuthError, BadInput, Conflict, NotFound
from shoal.ref import ModelRef
from tests.tracker.conftest import FLEET_TOKEN, Running, make_published, start

EDGE_TOKEN = "edge-secret"


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    yield from start(tmp_path, None, edge_tokens=(EDGE_TOKEN,))


def test_an_origin_ends_an_ingest_with_the_model_it_claimed(
    running: Running, tmp_path: Path
) -> None:
    pub = make_published(tmp_path, "tiny:1")
    other = make_published(tmp_path, "other:1", seed=1)
    host = CoordinatorClient(running.url, FLEET_TOKEN)
    origin = CoordinatorClient(running.url, EDGE_TOKEN)
    with pytest.raises(NotFound, match="no origin here fetches"):
        host.ask_ingest(ModelRef.parse("tiny:1"))
    assert origin.claim_ingest(["registry.ollama.ai"], 0) is None  # polls: now it serves
    assert host.ask_ingest(ModelRef.parse("tiny:1"))["state"] == "pending"
    claimed = origin.claim_ingest(["registry.ollama.ai"], 0)
    assert claimed is not None and claimed["ref"] == "library/tiny:1"
    ref = ModelRef.parse("tiny:1")
    with pytest.raises(AuthError):  # a host token may not end it
        host.update_ingest(ref, {"state": "failed", "error": "x", "missing": False})
    with pytest.raises(BadInput, match="the manifest is of library/other:1"):
        origin.update_ingest(
            ref,
            {
                "state": "done",
                "manifest": other.manifest.canonical_bytes,
                "torrent": other.torrent_path.read_bytes(),
            },
        )
    with pytest.raises(Conflict):  # nothing claimed under that name
        origin.update_ingest(ModelRef.parse("other:1"), {"state": "running", "progress": {}})
    done = origin.update_ingest(
        ref,
        {
            "state": "done",
            "manifest": pub.manifest.canonical_bytes,
            "torrent": pub.torrent_path.read_bytes(),
        },
    )
    assert done["state"] == "done"
    assert host.ingest(ref)["state"] == "done"
    assert CoordinatorClient(running.url).resolve(ref).digest == pub.manifest.digest
    with pytest.raises(NotFound):  # registered under the claimed reference only
        CoordinatorClient(running.url).resolve(ModelRef.parse("other:1"))


def test_an_ingest_of_a_moving_tag_may_end_with_the_fixed_version_it_names(
    running: Running, tmp_path: Path
) -> None:
    """A Hub branch is fetched as its commit: the tag and the commit are both registered,
    to the same model; a version of another repository is still refused."""
    fixed = make_published(tmp_path, "hf.co/org/name:" + "c" * 40)
    host = CoordinatorClient(running.url, FLEET_TOKEN)
    origin = CoordinatorClient(running.url, EDGE_TOKEN)
    origin.claim_ingest(["hf.co"], 0)
    branch = ModelRef.parse("hf.co/org/name:main")
    host.ask_ingest(branch)
    assert origin.claim_ingest(["hf.co"], 0) is not None
    body = {
        "state": "done",
        "manifest": fixed.manifest.canonical_bytes,
        "torrent": fixed.torrent_path.read_bytes(),
    }
    with pytest.raises(BadInput, match="the manifest is of"):
        origin.update_ingest(ModelRef.parse("hf.co/org/other:main"), body)
    assert origin.update_ingest(branch, body)["state"] == "done"
    reader = CoordinatorClient(running.url)
    assert reader.resolve(branch).digest == fixed.manifest.digest
    assert reader.resolve(fixed.manifest.ref).digest == fixed.manifest.digest


BAD_BODIES = [
    ("POST", "/v1/ingests", {"ref": 7}),
    ("POST", "/v1/ingests", {"ref": "Bad Ref!"}),
    ("POST", "/v1/ingests/claim", {"hosts": "registry.ollama.ai"}),
    ("POST", "/v1/ingests/claim", {"hosts": ["registry.ollama.ai"], "wait": 3600}),
    ("POST", "/v1/ingests/claim", {"hosts": ["not a host"]}),
    ("PUT", "/v1/ingests/tiny:1", {"state": "maybe"}),
    ("PUT", "/v1/ingests/tiny:1", {"state": "failed", "error": 3}),
    ("PUT", "/v1/ingests/tiny:1", {"state": "running", "progress": {"a": "b"}}),
    ("PUT", "/v1/ingests/tiny:1", {"state": "done", "manifest": b"junk", "torrent": b"x"}),
]


@pytest.mark.parametrize(("method", "path", "body"), BAD_BODIES)
def test_bad_bodies_are_400(running: Running, method: str, path: str, body: object) -> None:
    token = FLEET_TOKEN if path == "/v1/ingests" else EDGE_TOKEN
    r = httpx.request(
        method,
        f"{running.url}{path}",
        content=wire.pack(body),
        headers={
            "Content-Type": wire.MSGPACK,
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
        },
    )
    assert r.status_code == 400, r.text
