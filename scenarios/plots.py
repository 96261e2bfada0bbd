"""PNG plots of a run's ``result.json``: completion-time CDF per system with T_min marked,
bytes by source per host, origin egress over time, and the hosts' verified bytes over time
beside the origin's egress and the pace that finishes at T_min."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shoal.errors import BadInput


def write_plots(result: dict[str, Any], out: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BadInput(
            "plots need matplotlib", "pip install 'shoal[sim]' (result.json is written)"
        ) from None
    systems: dict[str, Any] = result["systems"]
    size = result["scenario"]["model_size"]
    name = result["scenario"]["name"]
    written = []

    fig, ax = plt.subplots(figsize=(7, 4))
    for sys_name, s in systems.items():
        times = sorted(h["done_s"] for h in s["hosts"])
        fractions = [(i + 1) / len(times) for i in range(len(times))]
        ax.step([0.0, *times], [0.0, *fractions], where="post", label=sys_name)
    ax.axvline(result["t_min_s"], color="black", linestyle="--", label="T_min")
    ax.set_xlabel("completion time (s)")
    ax.set_ylabel("hosts done (fraction)")
    ax.set_title(f"{name}: completion time")
    ax.legend()
    written.append(_save(fig, out / "completion_cdf.png"))

    fig, ax = plt.subplots(figsize=(7, 4))
    shoal = systems.get("shoal") or next(iter(systems.values()))
    hosts = [h["name"] for h in shoal["hosts"]]
    bottom = [0.0] * len(hosts)
    for key, label in (
        ("bytes_peer", "peers"),
        ("bytes_edge", "edges"),
        ("bytes_origin", "origin"),
    ):
        values = [(h[key] or 0) / 2**20 for h in shoal["hosts"]]
        ax.bar(hosts, values, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_ylabel("MiB")
    ax.set_title(f"{name}: bytes by source per host ({'shoal' if 'shoal' in systems else ''})")
    ax.legend()
    written.append(_save(fig, out / "bytes_by_source.png"))

    fig, ax = plt.subplots(figsize=(7, 4))
    for sys_name, s in systems.items():
        if s["origin_egress"]:
            ts, bs = zip(*s["origin_egress"], strict=True)
            ax.plot(ts, [b / size for b in bs], label=sys_name)
    ax.axhline(1.0, color="black", linestyle="--", label="one copy")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("origin egress (copies of the model)")
    ax.set_title(f"{name}: origin egress over time")
    ax.legend()
    written.append(_save(fig, out / "origin_egress.png"))

    with_progress = {n: s for n, s in systems.items() if all(h.get("progress") for h in s["hosts"])}
    if with_progress:
        fig, ax = plt.subplots(figsize=(7, 4))
        for sys_name, s in with_progress.items():
            for i, h in enumerate(s["hosts"]):
                ts, bs = zip(*h["progress"], strict=True)
                label = f"{sys_name}: each host" if i == 0 else "_"  # one legend entry
                ax.plot(ts, [b / size for b in bs], linewidth=0.6, alpha=0.5, label=label)
            if s["origin_egress"]:
                ts, bs = zip(*s["origin_egress"], strict=True)
                ax.plot(ts, [b / size for b in bs], color="black", label=f"{sys_name}: origin sent")
        t_min = result["t_min_s"]
        ax.plot([0.0, t_min], [0.0, 1.0], color="black", linestyle="--", label="pace of T_min")
        ax.set_xlabel("time (s)")
        ax.set_ylabel("copies of the model")
        ax.set_title(f"{name}: verified bytes per host over time")
        ax.legend()
        written.append(_save(fig, out / "progress.png"))
    return written


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
