"""What a run's result says, as lines for a terminal (the plots come from ``plots``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def summary_lines(result: dict[str, Any]) -> Iterator[str]:
    sc = result["scenario"]
    yield (
        f"{sc['name']}: {sc['hosts']} hosts, {sc['model_size'] / 2**20:.0f} MiB; "
        f"T_min {result['t_min_s']:.2f} s, HTTP-only bound {result['http_only_bound_s']:.2f} s "
        f"(goodput {result['goodput_factor']:.3f} of nominal{_fabric(sc)})"
    )
    yield f"{'system':<10} {'last/Tmin':>9} {'median/Tmin':>11} {'eta':>6} {'origin/F':>8}"
    for name, s in result["systems"].items():
        yield (
            f"{name:<10} {s['last_over_tmin']:>9.3f} {s['median_over_tmin']:>11.3f} "
            f"{s['eta']:>6.3f} {s['origin_egress_over_f']:>8.3f}"
        )
    for name, s in result["systems"].items():
        if s.get("breakdown"):
            yield f"{name}: {_breakdown(s['breakdown'])}"


def _breakdown(b: dict[str, Any]) -> str:
    parts = [
        f"starts at {b['start_s']:.1f} s",
        f"steady {b['steady_over_bound']:.3f} of the pace F/T_min",
        f"tail {b['tail_s']:.1f} s",
    ]
    if b["drain_s"] is not None:
        parts.append(f"last host {b['drain_s']:.1f} s after the origin sent one copy")
    if b["redundant_over_f"] is not None:
        parts.append(f"{100 * b['redundant_over_f']:.1f} % of F received twice")
    return ", ".join(parts)


def _fabric(sc: dict[str, Any]) -> str:
    if "tcp_congestion" not in sc:  # a result from before these were parameters
        return ""
    return f"; TCP {sc['tcp_congestion']}, links queue {sc['queue_ms']:g} ms"
