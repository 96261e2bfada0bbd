"""Issue 30: Hugging Face clients pull through the fleet. Each host's own huggingface_hub
(the real client, ``endpoint=`` its agent's mirror, as ``HF_ENDPOINT`` sets it) asks for a
repo the fleet has never seen; the origin (``shoal seed --hf-upstream``) fetches it once
from a Hub-compatible upstream (tests/seeder/hub_upstream.py) and it reaches every host
through the fleet."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from shoal.coordinator_client import CoordinatorClient
from shoal.ref import ModelRef
from shoal.signing import keygen
from shoal.testing import blob_fixture, free_port, stop_processes, wait_listening
from tests.conftest import SHOAL
from tests.peer.conftest import Fleet
from tests.seeder.hub_upstream import HubUpstream, Running
from tests.seeder.test_ingest import PullThrough

BIG = blob_fixture(12 * 1024 * 1024 + 4321, seed=21)
FILES = {
    "config.json": b'{"model_type": "llama", "hidden_size": 64}',
    "model.safetensors": BIG,
    "tokenizer/tokenizer.json": b'{"version": "1.0"}' * 50,
    "tokenizer/special/added.txt": b"<s>\n</s>\n",
    "README.md": b"# acme/tiny\n\nA model for tests.\n",
}


class HubFleet(PullThrough):
    """Coordinator, origin with a Hub endpoint, edge and agents, as real processes."""

    def __init__(self, tmp: Path, upstream: Running, fleet: Fleet) -> None:
        super().__init__(tmp, None, fleet)  # type: ignore[arg-type]
        self.hub = upstream

    def start_origin(self, *extra: str) -> None:
        token = self.tmp / "hf-token"
        token.write_text(self.hub.hub.token + "\n")
        self.start_origin_with(
            *("--hf-upstream", self.hub.url, "--hf-allow", "acme/*"),
            *("--hf-token-file", str(token), *extra),
        )


@pytest.fixture
def hub_fleet(tmp_path: Path) -> Iterator[HubFleet]:
    hub = HubUpstream()
    hub.add("acme/tiny", FILES)
    hub.add("acme/gated", {"w.bin": b"gated weights"}, gated=True)
    with Running(hub) as upstream:
        fleet = Fleet(tmp_path)
        h = HubFleet(tmp_path, upstream, fleet)
        try:
            fleet.start_coordinator()
            yield h
        finally:
            stop_processes([*h.procs, *(x for x in (fleet.coordinator,) if x is not None)])


def _tree_hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_three_hosts_snapshot_download_a_repo_the_fleet_fetched_once(hub_fleet: HubFleet) -> None:
    h = hub_fleet
    h.start_origin()
    h.start_edge()
    h.start_agents(3)
    with ThreadPoolExecutor(3) as pool:
        snapshots = list(
            pool.map(
                lambda i: snapshot_download(
                    "acme/tiny", endpoint=h.mirrors[i], cache_dir=h.tmp / f"cache{i}"
                ),
                range(3),
            )
        )
    want = {p: hashlib.sha256(d).hexdigest() for p, d in FILES.items()}
    commit = h.hub.hub.repos["acme/tiny"].commit
    for i, snap in enumerate(snapshots):
        assert Path(snap).name == commit
        assert _tree_hashes(Path(snap)) == want, i
        repo = h.tmp / f"cache{i}/models--acme--tiny"
        assert (repo / "refs/main").read_text() == commit
        # the cache names each file as the Hub does: LFS by SHA-256, the rest by git SHA-1
        assert (repo / "blobs" / hashlib.sha256(BIG).hexdigest()).exists()
    # the upstream sent each file's bytes once in all
    assert dict(h.hub.hub.sent) == {f"acme/tiny/{p}": len(d) for p, d in FILES.items()}
    with CoordinatorClient(h.fleet.coord_url) as c:  # the branch and its commit, one model
        main = c.resolve(ModelRef.parse("hf.co/acme/tiny:main"))
        assert main == c.resolve(ModelRef.parse(f"hf.co/acme/tiny:{commit}"))
    assert h.edge_served() > 0  # the hosts fetched over HTTP through the edge
    # ranges as RFC 9110 has them (the client resumes with bytes=N-)
    big = f"{h.mirrors[2]}/acme/tiny/resolve/{commit}/model.safetensors"
    part = httpx.get(big, headers={"Range": "bytes=10-19"}, timeout=30)
    assert part.status_code == 206 and part.content == BIG[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(BIG)}"
    tail = httpx.get(big, headers={"Range": f"bytes={len(BIG) - 5}-"}, timeout=30)
    assert tail.status_code == 206 and tail.content == BIG[-5:]
    assert httpx.get(big, headers={"Range": f"bytes={len(BIG)}-"}, timeout=30).status_code == 416
    # exported into a Hub cache: the same names, found offline by the client
    exported = h.tmp / "exported"
    r = subprocess.run(
        [
            *(str(SHOAL), "export", "hf.co/acme/tiny:main", "--hf", str(exported)),
            *("--models-dir", str(h.tmp / "host0")),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    repo = exported / "models--acme--tiny"
    assert (repo / "refs/main").read_text() == commit
    assert sorted(os.listdir(repo / "blobs")) == sorted(
        os.listdir(h.tmp / "cache0/models--acme--tiny/blobs")
    )
    offline = hf_hub_download(
        "acme/tiny", "tokenizer/tokenizer.json", cache_dir=exported, local_files_only=True
    )
    assert Path(offline).read_bytes() == FILES["tokenizer/tokenizer.json"]
    # a second snapshot_download on a host, into a new cache: its store answers
    before = sum(h.hub.hub.sent.values())
    again = snapshot_download("acme/tiny", endpoint=h.mirrors[1], cache_dir=h.tmp / "again")
    assert _tree_hashes(Path(again)) == want
    assert sum(h.hub.hub.sent.values()) == before
    # nothing the mirror answered carries a Xet hint: the client read every byte from it
    for url in (
        f"{h.mirrors[0]}/acme/tiny/resolve/main/model.safetensors",
        f"{h.mirrors[0]}/api/models/acme/tiny/tree/main?recursive=true",
    ):
        r = httpx.get(url, timeout=30)
        assert r.status_code == 200
        assert not any(k.lower().startswith("x-xet") for k in r.headers)
        assert "xet" not in r.headers.get("link", "") and b"xetHash" not in r.content[:100_000]


def test_single_files_revisions_and_errors_as_the_client_reports_them(
    hub_fleet: HubFleet,
) -> None:
    h = hub_fleet
    h.start_origin()
    h.start_agents(1)
    ep, cache = h.mirrors[0], h.tmp / "cache"
    commit = h.hub.hub.repos["acme/tiny"].commit
    path = hf_hub_download("acme/tiny", "config.json", endpoint=ep, cache_dir=cache)
    assert Path(path).read_bytes() == FILES["config.json"]
    by_commit = hf_hub_download(
        "acme/tiny", "tokenizer/special/added.txt", revision=commit, endpoint=ep, cache_dir=cache
    )
    assert Path(by_commit).read_bytes() == FILES["tokenizer/special/added.txt"]
    info = HfApi(endpoint=ep).model_info("acme/tiny", revision="main")
    assert info.sha == commit
    assert sorted(s.rfilename for s in info.siblings or []) == sorted(FILES)
    for s in info.siblings or []:  # the old snapshot path: siblings, each at the commit
        got = hf_hub_download(
            "acme/tiny", s.rfilename, revision=info.sha, endpoint=ep, cache_dir=h.tmp / "old"
        )
        assert Path(got).read_bytes() == FILES[s.rfilename]
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("acme/tiny", "missing.bin", endpoint=ep, cache_dir=cache)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("acme/nothing", "config.json", endpoint=ep, cache_dir=cache)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(
            "acme/tiny", "config.json", revision="nobranch", endpoint=ep, cache_dir=cache
        )
    # gated upstream: the origin holds a token, but the host does not serve it (no --hf-gated)
    with pytest.raises(GatedRepoError):
        hf_hub_download("acme/gated", "w.bin", endpoint=ep, cache_dir=cache)
    assert not list((cache / "models--acme--gated").rglob("w.bin"))
    # outside the allow-list: the upstream is never asked
    asked = len(h.hub.hub.requests)
    with pytest.raises(GatedRepoError):
        hf_hub_download("other/tiny", "config.json", endpoint=ep, cache_dir=cache)
    assert not any("other" in p for _, p, _ in h.hub.hub.requests[asked:])


def test_a_host_that_allows_gated_repos_serves_them(hub_fleet: HubFleet) -> None:
    h = hub_fleet
    h.start_origin()
    h.start_agents(1, "--hf-gated")
    path = hf_hub_download("acme/gated", "w.bin", endpoint=h.mirrors[0], cache_dir=h.tmp / "c")
    assert Path(path).read_bytes() == b"gated weights"


BAD_PATHS = [
    "/acme/tiny/resolve/main/..%2F..%2Fetc%2Fpasswd",
    "/acme/tiny/resolve/main/%2Fetc%2Fpasswd",
    "/acme/tiny/resolve/main/a/../../b",
    "/..%2F..%2Fetc/x/resolve/main/f",
    "/acme/" + "n" * 200 + "/resolve/main/f",
    "/api/models/acme/tiny/tree/main/..%2F..",
    "/api/models/acme/ti--ny/revision/main",
    "/acme/tiny/resolve/" + "r" * 300 + "/f",
    "/acme/tiny/resolve/main/.shoal/hf-revision.json",
]


def test_bad_paths_are_refused_never_a_server_error(hub_fleet: HubFleet) -> None:
    h = hub_fleet
    h.start_origin()
    h.start_agents(1)
    for path in BAD_PATHS:
        r = httpx.get(h.mirrors[0] + path, timeout=30)
        assert 400 <= r.status_code < 500, (path, r.status_code, r.text)
        assert "error" in r.json()
    assert not (h.tmp / "host0" / "etc").exists()


def test_an_upstream_that_lists_hostile_paths_publishes_nothing(hub_fleet: HubFleet) -> None:
    h = hub_fleet
    h.hub.hub.hostile_tree = [
        {"type": "file", "path": "../../escape.txt", "size": 3, "oid": "a" * 40}
    ]
    h.start_origin()
    h.start_agents(1)
    r = httpx.get(f"{h.mirrors[0]}/acme/tiny/resolve/main/config.json", timeout=60)
    assert r.status_code == 502 and "unsafe path" in r.json()["error"]
    assert not list(h.tmp.rglob("escape.txt"))
    assert not list((h.tmp / "ingest").glob("published/*"))


def test_a_branch_that_moves_upstream_is_served_at_its_new_commit_and_only_changes_move(
    tmp_path: Path,
) -> None:
    """The coordinator checks the branch again after --tag-ttl, the agent after
    SHOAL_AGENT_HF_BRANCH_TTL; until then the commit held is served, then the new one,
    and the upstream sends only the file that changed."""
    hub = HubUpstream()
    first = hub.add("acme/tiny", FILES)
    with Running(hub) as upstream:
        fleet = Fleet(tmp_path)
        h = HubFleet(tmp_path, upstream, fleet)
        try:
            fleet.coordinator = subprocess.Popen(
                [
                    *(str(SHOAL), "tracker", "serve", "--host", "127.0.0.1"),
                    *("--port", str(fleet.coord_port), "--db", str(tmp_path / "coord.sqlite")),
                    *("--publish-token", "pub", "--fleet-token", "fleet", "--edge-token", "edge"),
                    *("--rate-limit", "0", "--tag-ttl", "1"),
                ],
                stderr=subprocess.PIPE,
                text=True,
            )
            wait_listening(fleet.coord_port, fleet.coordinator, "shoal tracker serve")
            h.start_origin()
            os.environ["SHOAL_AGENT_HF_BRANCH_TTL"] = "1"
            try:
                h.start_agents(1)
            finally:
                del os.environ["SHOAL_AGENT_HF_BRANCH_TTL"]
            url = f"{h.mirrors[0]}/acme/tiny/resolve/main/config.json"
            assert httpx.head(url, timeout=60).headers["x-repo-commit"] == first.commit
            moved = hub.add("acme/tiny", {**FILES, "config.json": b'{"model_type": "new"}'})
            assert moved.commit != first.commit
            deadline = time.monotonic() + 90
            while httpx.head(url, timeout=60).headers["x-repo-commit"] != moved.commit:
                assert time.monotonic() < deadline, "the moved branch was not served"
                time.sleep(0.5)
            got = hf_hub_download(
                "acme/tiny", "config.json", endpoint=h.mirrors[0], cache_dir=tmp_path / "c"
            )
            assert Path(got).read_bytes() == b'{"model_type": "new"}'
            # the old commit is still served by commit; the weights moved once
            old = httpx.get(
                f"{h.mirrors[0]}/acme/tiny/resolve/{first.commit}/config.json", timeout=60
            )
            assert old.content == FILES["config.json"]
            assert hub.sent["acme/tiny/model.safetensors"] == len(BIG)
        finally:
            stop_processes([*h.procs, *(x for x in (fleet.coordinator,) if x is not None)])


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--hf-upstream", "https://huggingface.co"], "--hf-upstream needs --hf-allow"),
        (["--hf-upstream", "not a url", "--hf-allow", "*"], "invalid Hugging Face endpoint"),
        (["--hf-upstream", "https://h.example", "--hf-allow", "a b"], "allow pattern"),
    ],
)
def test_an_origin_with_a_hub_endpoint_needs_an_allow_list(
    tmp_path: Path, args: list[str], says: str
) -> None:
    r = subprocess.run(
        [
            *(str(SHOAL), "seed", "--port", str(free_port()), "--no-bittorrent"),
            *("--coordinator", "http://127.0.0.1:9", "--token", "edge", *args),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_an_origin_signs_what_it_ingests_and_a_trusting_host_takes_it(
    hub_fleet: HubFleet,
) -> None:
    """Issue 31: an ingest is signed by the origin's key (--sign-key); a host that trusts
    that key for hf.co/acme/* takes the repo, one that trusts it for other names does not."""
    h = hub_fleet
    public = keygen(h.tmp / "origin.key")
    h.start_origin("--sign-key", str(h.tmp / "origin.key"))

    def pull(where: str, trusted: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                *(str(SHOAL), "pull", "hf.co/acme/tiny:main", "--models-dir", str(h.tmp / where)),
                *("--coordinator", h.fleet.coord_url, "--token", "fleet", "--host", "127.0.0.1"),
                *("--no-lsd", "--json", "--trusted-publisher", trusted),
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )

    taken = pull("trusting", f"{public.line()} hf.co/acme/*")
    assert taken.returncode == 0, taken.stderr
    assert public.id in json.loads(taken.stdout.strip().splitlines()[-1])["signed"]
    refused = pull("elsewhere", f"{public.line()} hf.co/other/*")
    assert refused.returncode != 0 and "not trusted for acme/tiny" in refused.stderr
