"""A scenario file: TOML, parameters at the top, a comment saying what it measures.

[scenario]
name = "flash-8"
hosts = 8
model_size = "256MiB"
host_rate = "100mbit"      # each host's upload and download
origin_rate = "100mbit"
edges = 0                  # edges in front of the origin
edge_rate = "100mbit"
warm_edges = false         # edges hold the model before the run
slow_hosts = 0             # hosts whose link is slow_factor times slower
slow_factor = 10.0
stagger_s = 0.0            # host i asks at i * stagger_s
p2p = true                 # false: hosts fetch from edges and the origin only
systems = ["shoal", "http_only", "aria2c"]
timeout_s = 600
queue_ms = 20              # what each shaped link queues (a shallow switch port)
tcp_congestion = "reno"    # every node's TCP: Linux's default cubic acts as Reno at LAN
                           # round trips, and cubic cannot be chosen in a namespace here
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from shoal.errors import BadInput
from shoal.units import parse_size

SYSTEMS = ("shoal", "http_only", "aria2c")
_CC = re.compile(r"[a-z][a-z0-9_]{0,15}")
_RATE = re.compile(r"(\d+(?:\.\d+)?)\s*(k|m|g)bit", re.IGNORECASE)


def parse_rate_bits(text: str) -> int:
    """``100mbit`` -> bits/s (decimal units, as tc reads them)."""
    m = _RATE.fullmatch(text.strip()) if isinstance(text, str) else None
    if m is None:
        raise BadInput(f"invalid link rate {text!r}", "write e.g. 100mbit, 25mbit or 1gbit")
    return int(float(m.group(1)) * {"k": 1e3, "m": 1e6, "g": 1e9}[m.group(2).lower()])


@dataclass(frozen=True)
class Scenario:
    name: str
    hosts: int
    model_size: int
    host_bps: int
    origin_bps: int
    edges: int = 0
    edge_bps: int = 0
    warm_edges: bool = False
    slow_hosts: int = 0
    slow_factor: float = 10.0
    stagger_s: float = 0.0
    coordinator: bool = True
    kill_origin_at: float = 0.0
    origin_down_s: float = 5.0
    churn_hosts: int = 0
    churn_at_s: float = 10.0
    churn_down_s: float = 5.0
    systems: tuple[str, ...] = SYSTEMS
    timeout_s: float = 600.0
    queue_ms: float = 20.0
    tcp_congestion: str = "reno"

    def host_rate(self, index: int) -> int:
        """Bits/s of host ``index`` (0-based): the last ``slow_hosts`` are the slow ones."""
        if index >= self.hosts - self.slow_hosts:
            return int(self.host_bps / self.slow_factor)
        return self.host_bps

    @classmethod
    def load(cls, path: Path) -> Scenario:
        try:
            raw = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise BadInput(f"cannot read scenario {path}: {exc}") from None
        table = raw.get("scenario")
        if not isinstance(table, dict):
            raise BadInput(f"{path} has no [scenario] table", "see scenarios/README.md")
        try:
            return cls.from_table(table)
        except BadInput as exc:
            raise BadInput(f"{path}: {exc.message}", exc.hint) from None

    @classmethod
    def from_table(cls, t: dict[str, Any]) -> Scenario:
        known = {f.name for f in fields(cls)} | {
            "model_size",
            "host_rate",
            "origin_rate",
            "edge_rate",
        }
        unknown = set(t) - known - {"host_bps", "origin_bps", "edge_bps"}
        if unknown:
            raise BadInput(f"unknown scenario keys: {', '.join(sorted(unknown))}")
        try:
            sc = cls(
                name=str(t["name"]),
                hosts=int(t["hosts"]),
                model_size=parse_size(str(t["model_size"])),
                host_bps=parse_rate_bits(t["host_rate"]),
                origin_bps=parse_rate_bits(t["origin_rate"]),
                edges=int(t.get("edges", 0)),
                edge_bps=parse_rate_bits(t.get("edge_rate", t["host_rate"])),
                warm_edges=bool(t.get("warm_edges", False)),
                slow_hosts=int(t.get("slow_hosts", 0)),
                slow_factor=float(t.get("slow_factor", 10.0)),
                stagger_s=float(t.get("stagger_s", 0.0)),
                coordinator=bool(t.get("coordinator", True)),
                kill_origin_at=float(t.get("kill_origin_at", 0.0)),
                origin_down_s=float(t.get("origin_down_s", 5.0)),
                churn_hosts=int(t.get("churn_hosts", 0)),
                churn_at_s=float(t.get("churn_at_s", 10.0)),
                churn_down_s=float(t.get("churn_down_s", 5.0)),
                systems=tuple(t.get("systems", SYSTEMS)),
                timeout_s=float(t.get("timeout_s", 600.0)),
                queue_ms=float(t.get("queue_ms", 20.0)),
                tcp_congestion=str(t.get("tcp_congestion", "reno")),
            )
        except KeyError as exc:
            raise BadInput(f"the scenario needs {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise BadInput(f"bad scenario value: {exc}") from None
        sc.check()
        return sc

    def check(self) -> None:
        if not 1 <= self.hosts <= 64:
            raise BadInput(f"hosts must be 1-64, not {self.hosts}")
        if not 0 <= self.edges <= 4 or not 0 <= self.slow_hosts <= self.hosts:
            raise BadInput("edges must be 0-4 and slow_hosts at most hosts")
        if self.model_size <= 0 or self.slow_factor < 1 or self.stagger_s < 0:
            raise BadInput("model_size > 0, slow_factor >= 1 and stagger_s >= 0, please")
        if not 0 <= self.kill_origin_at < 1 or self.origin_down_s < 0:
            raise BadInput("kill_origin_at is a fraction in [0, 1), origin_down_s >= 0")
        if not 0 <= self.churn_hosts < self.hosts or min(self.churn_at_s, self.churn_down_s) < 0:
            raise BadInput("churn_hosts is 0 to hosts - 1, churn times >= 0")
        if self.warm_edges and not self.edges:
            raise BadInput("warm_edges needs edges")
        if not 1 <= self.queue_ms <= 1000:
            raise BadInput(f"queue_ms must be 1-1000, not {self.queue_ms:g}")
        if not _CC.fullmatch(self.tcp_congestion):
            raise BadInput(
                f"bad tcp_congestion {self.tcp_congestion!r}", "name one, e.g. reno or bbr"
            )
        bad = [s for s in self.systems if s not in SYSTEMS]
        if bad or not self.systems:
            raise BadInput(f"systems are among {', '.join(SYSTEMS)}, not {bad}")
