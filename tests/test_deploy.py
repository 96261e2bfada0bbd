"""deploy/: the example config holds valid settings for every component, and each
systemd unit's command line is one the CLI accepts."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from peer.agent.settings import AgentSettings
from seeder.edge_serve import EdgeSettings
from seeder.origin_serve import OriginSettings
from shoal.settings import ComponentSettings
from tests.conftest import SHOAL
from tracker.settings import TrackerSettings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
CONFIG = DEPLOY / "shoal.toml"


@pytest.mark.parametrize("cls", [TrackerSettings, OriginSettings, EdgeSettings, AgentSettings])
def test_the_example_config_is_valid_for_each_component(cls: type[ComponentSettings]) -> None:
    settings = cls.load(CONFIG)
    assert settings.model_fields_set, f"[{cls.toml_section}] sets nothing"


@pytest.mark.parametrize("unit", sorted((DEPLOY / "systemd").glob("*.service")), ids=str)
def test_each_unit_runs_a_command_the_cli_accepts(unit: Path, tmp_path: Path) -> None:
    line = next(x for x in unit.read_text().splitlines() if x.startswith("ExecStart="))
    argv = shlex.split(line.removeprefix("ExecStart="))
    assert argv[0] == "/usr/local/bin/shoal" and "--config" in argv
    args = [str(CONFIG) if a == "/etc/shoal/shoal.toml" else a for a in argv[1:]]
    r = subprocess.run([str(SHOAL), *args, "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
