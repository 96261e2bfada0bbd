"""Issue 30, first step: the Hub's routes as the real huggingface_hub client asks them
(peer/mirror/hf.py). The client's requests are recorded by a server on a real socket and
parsed back; anything malformed is an ``HfError``, never a crash."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import huggingface_hub
import pytest
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError

from peer.mirror.hf import HfError, RepoInfo, Resolve, Tree, route
from shoal.hfrepo import HfRepo as Repo
from shoal.hfrepo import is_commit
from shoal.relpath import RelPath
from shoal.testing import ServerThread

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class Recorder:
    """Answers 404 to everything and keeps each request's raw path."""

    def __init__(self) -> None:
        self.paths: list[bytes] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.paths.append(scope["raw_path"])
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture
def recorded() -> Iterator[tuple[str, Recorder]]:
    rec = Recorder()
    with ServerThread(rec) as server:
        yield server.url, rec


def asked(rec: Recorder, call: Any) -> list[bytes]:
    rec.paths.clear()
    with pytest.raises((HfHubHTTPError, OSError, ValueError)):
        call()
    return list(rec.paths)


def test_the_client_is_one_that_lists_trees() -> None:
    major, minor = (int(x) for x in huggingface_hub.__version__.split(".")[:2])
    assert (major, minor) >= (1, 22)


def test_what_hf_hub_download_asks_is_a_resolve(
    recorded: tuple[str, Recorder], tmp_path: Any
) -> None:
    url, rec = recorded
    for repo, revision, filename, kind in [
        ("org/model-1.5", "main", "config.json", "model"),
        ("gpt2", "refs/pr/1", "sub dir/model-00001.safetensors", "model"),
        ("org/data", COMMIT, "train/part-0.parquet", "dataset"),
    ]:
        download = partial(
            hf_hub_download,
            repo,
            filename,
            revision=revision,
            repo_type=kind,
            endpoint=url,
            cache_dir=tmp_path,
        )
        paths = asked(rec, download)
        assert paths, "the client asked nothing"
        got = route(paths[0])
        assert got == Resolve(Repo(kind, repo), revision, RelPath(filename))  # type: ignore[arg-type]


def test_what_snapshot_download_asks_is_repo_info_then_tree(
    recorded: tuple[str, Recorder],
) -> None:
    url, rec = recorded
    api = HfApi(endpoint=url)
    (info,) = asked(rec, lambda: api.model_info("org/model", revision="refs/pr/2"))
    assert route(info) == RepoInfo(Repo("model", "org/model"), "refs/pr/2")
    (tree,) = asked(
        rec,
        lambda: list(api.list_repo_tree("org/model", "sub/dir", revision="main", recursive=True)),
    )
    assert route(tree.split(b"?")[0]) == Tree(
        Repo("model", "org/model"), "main", RelPath("sub/dir")
    )
    (root,) = asked(rec, lambda: list(api.list_repo_tree("gpt2", revision=COMMIT)))
    assert route(root.split(b"?")[0]) == Tree(Repo("model", "gpt2"), COMMIT, None)
    assert is_commit(COMMIT) and not is_commit("main")


def test_paths_that_are_not_the_hub_s_are_left_to_the_registry_routes() -> None:
    for path in (b"/v2/", b"/v2/library/m/manifests/1", b"/healthz", b"/", b"/api/spaces/a/b"):
        assert route(path) is None


@pytest.mark.parametrize(
    "path",
    [
        b"/../etc/resolve/main/passwd",
        b"/org/../resolve/main/x",
        b"/org/na--me/resolve/main/x",
        b"/org/.hidden/resolve/main/x",
        b"/" + b"a" * 97 + b"/resolve/main/x",
        b"/org/name/resolve/main/../../../etc/passwd",
        b"/org/name/resolve/main/%2E%2E/secret",
        b"/org/name/resolve/main/%2Fetc%2Fpasswd",
        b"/org/name/resolve/main/a%00b",
        b"/org/name/resolve/main/",
        b"/org/name/resolve/main",
        b"/org/name/resolve/..%2F..%2Fx/f",
        b"/org/name/resolve/%FF/f",
        b"/org/name/resolve/main/%FF",
        b"/api/models/org/name/revision/",
        b"/api/models/org/name/revision/a/b",
        b"/api/models/org/name/tree/main/../../x",
        b"/api/models/a/b/c/d",
        b"/api/models/org/n%20ame",
        b"/org/name/resolve/main/" + b"a" * 4096,
        "/org/näme/resolve/main/x".encode(),
    ],
)
def test_malformed_paths_are_refused_as_bad_requests(path: bytes) -> None:
    with pytest.raises(HfError) as info:
        route(path)
    assert info.value.status == 400 and info.value.code == "BadRequest"
    assert b'"error"' in info.value.body()
