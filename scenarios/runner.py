"""``shoal sim run SCENARIO.toml``: build the fleet in network namespaces, run each system
(shoal, HTTP only, aria2c) on it in turn, measure per host and at the origin, compare with
the fluid bound, write ``result.json`` and plots, and always tear everything down."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from scenarios.bound import Links, breakdown, figures, http_only_bound, t_min
from scenarios.netns import Node, exec_argv
from scenarios.plots import write_plots
from scenarios.scenario import Scenario
from scenarios.stage import ORIGIN_PORT, Stage, SystemRun
from scenarios.systems import run_system


def _system_figures(sc: Scenario, links: Links, run: SystemRun) -> dict[str, Any]:
    done = [h.done_s or 0.0 for h in run.hosts]
    f = figures(sc.model_size, links, done, run.origin_bytes)
    gap = breakdown(
        sc.model_size,
        t_min(sc.model_size, links),
        [h.progress for h in run.hosts],
        done,
        run.egress,
        [h.redundant for h in run.hosts],
    )
    return {
        **{k: round(v, 3) for k, v in asdict(f).items()},
        "breakdown": None
        if gap is None
        else {k: v if v is None else round(v, 3) for k, v in asdict(gap).items()},
        "hosts": [h.row() for h in run.hosts],
        "origin_egress": [[round(t, 2), b] for t, b in run.egress],
        "events": [[t, what] for t, what in run.events],
    }


def calibrate(run: Stage, flows: int = 2) -> float:
    """Measured single-flow goodput over nominal rate: the best of ``flows`` curls from the
    origin to the first host, about 2.5 s each (one Reno flow varied from 0.936 to 0.958 of
    nominal at 100 Mbit/s; a low one let plain HTTP beat its own bound)."""
    published = run.work / "published-hybrid"
    run.origin(published, bittorrent=False)
    try:
        manifest = json.loads((published / "manifest.json").read_text())
        big = max(manifest["files"], key=lambda f: f["size"])
        url = f"{run.url('origin', ORIGIN_PORT)}/blobs/sha256:{big['sha256']}"
        nominal = min(run.sc.origin_bps, run.sc.host_rate(0)) / 8
        return min(1.0, max(_goodput(run.hosts[0], url) for _ in range(flows)) / nominal)
    finally:
        run.stop_all()


def _goodput(host: Node, url: str) -> float:
    """Bytes/s of one curl of ``url`` from ``host``, cut after 2.5 s."""
    r = subprocess.run(
        exec_argv(
            host.ns,
            [
                *("curl", "-s", "-o", "/dev/null", "--max-time", "2.5"),
                *("-w", "%{size_download} %{time_total}", url),
            ],
        ),
        capture_output=True,
        text=True,
    )
    size, seconds = (float(x) for x in r.stdout.split())
    return size / seconds if seconds > 0 else float("inf")


def run(sc: Scenario, out: Path, shoal: Path | None = None) -> dict[str, Any]:
    shoal = shoal or Path(sys.executable).parent / "shoal"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    r = Stage(sc, out, shoal)
    try:
        r.build()
        r.publish()
        factor = calibrate(r)
        servers = sc.origin_bps + (sc.edges * sc.edge_bps if sc.warm_edges else 0)
        links = Links(
            server_up=servers / 8 * factor,
            host_up=tuple(sc.host_rate(i) / 8 * factor for i in range(sc.hosts)),
            host_down=tuple(sc.host_rate(i) / 8 * factor for i in range(sc.hosts)),
        )
        systems = {}
        for name in sc.systems:
            systems[name] = _system_figures(sc, links, run_system(r, name))
    finally:
        r.stop_all()
        r.fleet.teardown()
    result = {
        "scenario": asdict(sc),
        "goodput_factor": round(factor, 4),
        "t_min_s": round(t_min(sc.model_size, links), 3),
        "http_only_bound_s": round(http_only_bound(sc.model_size, links), 3),
        "systems": systems,
    }
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    shutil.rmtree(r.work, ignore_errors=True)
    write_plots(result, out)
    return result
