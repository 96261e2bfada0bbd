"""peer/mirror/oci.py: request paths to routes, as a table; the derived manifest."""

from __future__ import annotations

import json

import pytest

from peer.mirror import oci
from shoal.digest import Digest
from shoal.testing import manifest_fixture

D = "sha256:" + "ab" * 32

ROUTES = [
    ("/v2/", oci.Base()),
    ("/v2", oci.Base()),
    ("/v2/library/m/manifests/1", oci.ManifestReq("library/m", "1", None)),
    ("/v2/m/manifests/latest", oci.ManifestReq("library/m", "latest", None)),
    ("/v2/Org/Model-7b/manifests/Q4_K_M", oci.ManifestReq("Org/Model-7b", "Q4_K_M", None)),
    (f"/v2/library/m/manifests/{D}", oci.ManifestReq("library/m", None, Digest.parse(D))),
    (f"/v2/library/m/blobs/{D}", oci.BlobReq("library/m", Digest.parse(D), False)),
    (f"/v2/library/m/blobs/{D}/data", oci.BlobReq("library/m", Digest.parse(D), True)),
    (f"/v2/blobs/blobs/{D}", oci.BlobReq("library/blobs", Digest.parse(D), False)),
]

REFUSED = [
    ("/v2/library/m/manifests/-x", 400, "TAG_INVALID"),
    ("/v2/library/m/manifests/sha256:AB", 400, "DIGEST_INVALID"),
    ("/v2/library/m/blobs/latest", 400, "DIGEST_INVALID"),
    ("/v2/li..b/m/manifests/1", 400, "NAME_INVALID"),
    ("/v2/library/./manifests/1", 400, "NAME_INVALID"),
    ("/v2//m/manifests/1", 400, "NAME_INVALID"),
    ("/v2/a.b/m/manifests/1", 404, "NAME_UNKNOWN"),  # a namespace holds no dot
    ("/v2/a/b/c/manifests/1", 404, "NAME_UNKNOWN"),
    ("/v2/manifests/1", 404, "NAME_UNKNOWN"),
    ("/v2/library/m/tags/list", 404, "NAME_UNKNOWN"),
    ("/other", 404, "NAME_UNKNOWN"),
    ("/v2/" + "a" * 2000, 400, "NAME_INVALID"),
]


@pytest.mark.parametrize(("path", "want"), ROUTES)
def test_routes(path: str, want: oci.Route) -> None:
    assert oci.route(path) == want


@pytest.mark.parametrize(("path", "status", "code"), REFUSED)
def test_refused(path: str, status: int, code: str) -> None:
    with pytest.raises(oci.MirrorError) as e:
        oci.route(path)
    assert (e.value.status, e.value.code) == (status, code)
    assert json.loads(e.value.body())["errors"][0]["code"] == code


def test_registry_from_containerds_ns() -> None:
    assert oci.registry_host(None) is None
    assert oci.registry_host("registry.ollama.ai") == "registry.ollama.ai"
    assert oci.registry_host("127.0.0.1:5000") == "127.0.0.1:5000"
    for bad in ("a b", "x/y", "", "h:0", "h:99999"):
        with pytest.raises(oci.MirrorError):
            oci.registry_host(bad)


def test_the_artifact_manifest_is_one_text_for_one_model() -> None:
    m = manifest_fixture({"b/weights.bin": b"w" * 100, "a.json": b"{}", "z/empty": b""})
    raw = oci.artifact_manifest(m)
    assert raw == oci.artifact_manifest(m)
    doc = json.loads(raw)
    assert doc["mediaType"] == oci.OCI_MANIFEST
    assert doc["config"] == {
        "mediaType": oci.EMPTY_MEDIA_TYPE,
        "digest": str(oci.EMPTY_DIGEST),
        "size": 2,
    }
    files = [f for f in m.files if f.size]  # the empty one is named, not a layer
    assert [x["annotations"][oci.TITLE] for x in doc["layers"]] == [f.path.value for f in files]
    assert [x["digest"] for x in doc["layers"]] == [str(f.sha256) for f in files]
    assert json.loads(doc["annotations"][oci.EMPTY_FILES]) == ["z/empty"]
    assert raw == json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def test_media_type_of_a_manifest() -> None:
    assert oci.media_type(b'{"mediaType":"application/vnd.oci.image.index.v1+json"}') == (
        "application/vnd.oci.image.index.v1+json"
    )
    assert oci.media_type(b"{}") == oci.DOCKER_MANIFEST
    assert oci.media_type(b"not json") == oci.DOCKER_MANIFEST
