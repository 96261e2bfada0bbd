"""Scenario files: every shipped one loads; bad values are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from scenarios.scenario import Scenario, parse_rate_bits
from shoal.errors import BadInput

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((ROOT / "scenarios").glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_scenarios_load(path: Path) -> None:
    sc = Scenario.load(path)
    assert sc.name == path.stem
    assert path.read_text().startswith("# "), "each scenario says what it measures"


def test_rates_and_slow_hosts() -> None:
    assert parse_rate_bits("100mbit") == 100_000_000
    assert parse_rate_bits("2.5Gbit") == 2_500_000_000
    sc = Scenario.from_table(
        {
            "name": "x",
            "hosts": 4,
            "model_size": "1MiB",
            "host_rate": "100mbit",
            "origin_rate": "100mbit",
            "slow_hosts": 1,
        }
    )
    assert [sc.host_rate(i) for i in range(4)] == [100_000_000] * 3 + [10_000_000]
    assert (sc.queue_ms, sc.tcp_congestion) == (20.0, "reno")  # the fabric's defaults


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"hosts": 0}, "hosts must be 1-64"),
        ({"host_rate": "100mb"}, "invalid link rate"),
        ({"systems": ["kraken"]}, "systems are among"),
        ({"warm_edges": True}, "warm_edges needs edges"),
        ({"colour": "blue"}, "unknown scenario keys: colour"),
        ({"model_size": "lots"}, "invalid size"),
        ({"queue_ms": 0}, "queue_ms must be 1-1000"),
        ({"queue_ms": "deep"}, "bad scenario value"),
        ({"tcp_congestion": "Reno; rm"}, "bad tcp_congestion"),
    ],
)
def test_bad_values(change: dict[str, object], match: str) -> None:
    table = {
        "name": "x",
        "hosts": 4,
        "model_size": "1MiB",
        "host_rate": "100mbit",
        "origin_rate": "100mbit",
        **change,
    }
    with pytest.raises(BadInput, match=match):
        Scenario.from_table(table)


def test_missing_key_is_named(tmp_path: Path) -> None:
    f = tmp_path / "s.toml"
    f.write_text('[scenario]\nname = "x"\n')
    with pytest.raises(BadInput, match="needs 'hosts'"):
        Scenario.load(f)
