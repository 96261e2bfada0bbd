"""Issue 30, item 2: a repo fetched from a Hub-compatible upstream into a Hub cache
(shoal/upstream/hub.py), against a hand-written upstream on real sockets: every file
hashed to the Hub's own digest before it is named, the allow-list and gated repos
decided before a byte moves, and hostile answers refused with nothing kept."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal import hf_revision
from shoal.errors import AuthError, IntegrityError, NotFound
from shoal.hfrepo import HfRepo, code_of, git_blob_sha1
from shoal.testing import blob_fixture
from shoal.upstream.hub import HubSettings, _next_page, fetch
from tests.seeder.hub_upstream import HubUpstream, Running

BIG = blob_fixture(3 * 1024 * 1024 + 17, seed=5)
FILES = {
    "config.json": b'{"model_type": "llama"}',
    "model.safetensors": BIG,
    "tokenizer/vocab.txt": b"a\nb\nc\n",
    "README.md": b"# acme/tiny\n",
}


@pytest.fixture
def upstream() -> Iterator[Running]:
    hub = HubUpstream()
    hub.add("acme/tiny", FILES)
    hub.add("acme/gated", {"w.bin": b"secret weights"}, gated=True)
    hub.add("datasets/acme/rows", {"data/train.csv": b"x,y\n1,2\n"}, kind="dataset")
    with Running(hub) as running:
        yield running


def settings(tmp_path: Path, url: str, token: str | None = None, allow: str = "*") -> HubSettings:
    return HubSettings(work=tmp_path / "work", allow=(allow,), url=url, token=token)


def test_a_repo_is_fetched_into_a_hub_cache_each_file_by_its_hub_digest(
    upstream: Running, tmp_path: Path
) -> None:
    got = fetch(HfRepo("model", "acme/tiny"), "main", settings(tmp_path, upstream.url))
    commit = upstream.hub.repos["acme/tiny"].commit
    root = tmp_path / "work/hf/models--acme--tiny"
    assert got.snapshot == root / "snapshots" / commit
    assert (root / "refs/main").read_text() == commit
    for path, data in FILES.items():
        link = got.snapshot / path
        assert link.is_symlink() and link.read_bytes() == data
        name = Path(os.path.realpath(link)).name
        big = len(data) >= 1 << 20
        assert name == (hashlib.sha256(data).hexdigest() if big else git_blob_sha1(data))
    rev = hf_revision.Revision.decode(got.revision)
    assert (rev.commit, rev.refs, rev.repo, rev.gated) == (
        commit,
        ("main",),
        HfRepo("model", "acme/tiny"),
        False,
    )
    assert rev.etags["model.safetensors"] == hashlib.sha256(BIG).hexdigest()
    # the tree came in pages of two; the data host, another origin, got no token
    pages = [p for m, p, _ in upstream.hub.requests if "/tree/" in p]
    assert len(pages) >= 3
    assert all(sent == len(FILES[p.split("/", 2)[2]]) for p, sent in upstream.hub.sent.items())
    # a second fetch lists the tree again and fetches nothing
    before = sum(upstream.hub.sent.values())
    fetch(HfRepo("model", "acme/tiny"), commit, settings(tmp_path, upstream.url))
    assert sum(upstream.hub.sent.values()) == before


def test_a_dataset_and_a_branch_by_commit(upstream: Running, tmp_path: Path) -> None:
    got = fetch(HfRepo("dataset", "acme/rows"), "main", settings(tmp_path, upstream.url))
    assert (got.snapshot / "data/train.csv").read_bytes() == b"x,y\n1,2\n"
    assert "datasets--acme--rows" in str(got.snapshot)


def test_gated_repos_need_the_operators_token_which_never_leaves_the_endpoint(
    upstream: Running, tmp_path: Path
) -> None:
    with pytest.raises(AuthError) as refused:
        fetch(HfRepo("model", "acme/gated"), "main", settings(tmp_path, upstream.url))
    assert code_of(str(refused.value)) == "GatedRepo"
    got = fetch(
        HfRepo("model", "acme/gated"),
        "main",
        settings(tmp_path, upstream.url, token=upstream.hub.token),
    )
    assert hf_revision.Revision.decode(got.revision).gated
    upstream.hub.add("acme/private", {"p.bin": b"private"}, private=True)
    private = fetch(
        HfRepo("model", "acme/private"),
        "main",
        settings(tmp_path, upstream.url, token=upstream.hub.token),
    )
    assert hf_revision.Revision.decode(private.revision).gated  # as closed as gated
    api = [a for _, p, a in upstream.hub.requests if not p.startswith("/data/")]
    data = [a for _, p, a in upstream.hub.requests if p.startswith("/data/")]
    assert f"Bearer {upstream.hub.token}" in api and data and not any(data)
    assert upstream.hub.token not in repr(settings(tmp_path, upstream.url, upstream.hub.token))


def test_what_the_upstream_lacks_is_not_found_with_the_hubs_code(
    upstream: Running, tmp_path: Path
) -> None:
    s = settings(tmp_path, upstream.url)
    for repo, revision, code in [
        ("acme/none", "main", "RepoNotFound"),
        ("acme/tiny", "nobranch", "RevisionNotFound"),
    ]:
        with pytest.raises(NotFound) as missing:
            fetch(HfRepo("model", repo), revision, s)
        assert code_of(str(missing.value)) == code


def test_the_allow_list_is_decided_before_any_request(upstream: Running, tmp_path: Path) -> None:
    with pytest.raises(AuthError, match="allow-list"):
        fetch(
            HfRepo("model", "acme/tiny"), "main", settings(tmp_path, upstream.url, allow="other/*")
        )
    with pytest.raises(AuthError, match="allow-list"):  # datasets are named datasets/...
        fetch(
            HfRepo("dataset", "acme/rows"), "main", settings(tmp_path, upstream.url, allow="acme/*")
        )
    assert upstream.hub.requests == []


def test_bytes_that_do_not_hash_to_the_hubs_digest_are_refused_and_not_kept(
    upstream: Running, tmp_path: Path
) -> None:
    repo = upstream.hub.repos["acme/tiny"]
    tree_files = dict(FILES)
    upstream.hub.add("acme/liar", tree_files)
    liar = upstream.hub.repos["acme/liar"]
    honest_tree = {**tree_files}
    # the tree is made from the honest files; the data host sends other bytes
    liar.files = {**honest_tree, "model.safetensors": BIG[:-1] + b"X"}
    upstream.hub.hostile_tree = None
    from tests.seeder import hub_upstream

    upstream.hub.hostile_tree = hub_upstream._tree(honest_tree)
    with pytest.raises(IntegrityError, match="does not match its digest"):
        fetch(HfRepo("model", "acme/liar"), "main", settings(tmp_path, upstream.url))
    blobs = tmp_path / "work/hf/models--acme--liar/blobs"
    assert not (blobs / hashlib.sha256(BIG).hexdigest()).exists()
    assert not (tmp_path / "work/hf/models--acme--liar/snapshots").exists()
    assert repo.commit  # the honest repo is untouched


HOSTILE = [
    {"type": "file", "path": "../escape", "size": 1, "oid": "a" * 40},
    {"type": "file", "path": "/etc/passwd", "size": 1, "oid": "a" * 40},
    {"type": "file", "path": "a/../../b", "size": 1, "oid": "a" * 40},
    {"type": "file", "path": ".shoal/hf-revision.json", "size": 1, "oid": "a" * 40},
    {"type": "file", "path": "x", "size": -1, "oid": "a" * 40},
    {"type": "file", "path": "x", "size": 1, "oid": "not-a-sha"},
    {"type": "file", "path": "x", "size": 1, "oid": "a" * 40, "lfs": {"oid": "b" * 64, "size": 2}},
    {"type": "file", "path": "x", "size": 1, "oid": "a" * 40, "lfs": {"oid": "b" * 64, "size": 1}},
    {"type": "symlink", "path": "x", "size": 1, "oid": "a" * 40},
    "not an object",
]


@pytest.mark.parametrize("item", HOSTILE, ids=range(len(HOSTILE)))
def test_a_hostile_tree_is_refused_and_nothing_is_written(
    upstream: Running, tmp_path: Path, item: object
) -> None:
    upstream.hub.hostile_tree = [item]  # type: ignore[list-item]
    with pytest.raises(IntegrityError):
        fetch(HfRepo("model", "acme/tiny"), "main", settings(tmp_path, upstream.url))
    assert not (tmp_path / "work/hf/models--acme--tiny/snapshots").exists()
    assert not list(tmp_path.parent.glob("escape")) and not (tmp_path / "work/escape").exists()


def test_a_tree_that_lists_a_path_twice_or_as_file_and_folder_is_refused(
    upstream: Running, tmp_path: Path
) -> None:
    one = {"type": "file", "path": "a", "size": 1, "oid": git_blob_sha1(b"x")}
    under = {"type": "file", "path": "a/b", "size": 1, "oid": git_blob_sha1(b"x")}
    for tree in ([one, one], [one, under]):
        upstream.hub.hostile_tree = tree
        with pytest.raises(IntegrityError, match=r"twice|file and a folder"):
            fetch(HfRepo("model", "acme/tiny"), "main", settings(tmp_path, upstream.url))


def test_the_next_page_of_a_tree_is_on_the_endpoint_or_refused() -> None:
    base = "https://hub.example"
    assert _next_page('<https://hub.example/api/t?cursor=2>; rel="next"', base) == (
        "https://hub.example/api/t?cursor=2"
    )
    assert _next_page('</api/t?c=1>; rel=next, </p>; rel="prev"', base) == base + "/api/t?c=1"
    assert _next_page('</p>; rel="prev"', base) is None
    assert _next_page("<" * 10_000, base) is None  # bounded, one scan
    with pytest.raises(IntegrityError, match="another host"):
        _next_page('<https://elsewhere.example/t>; rel="next"', base)
