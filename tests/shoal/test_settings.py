from pathlib import Path
from typing import ClassVar

import pytest
from pydantic_settings import SettingsConfigDict

from shoal.errors import BadInput
from shoal.settings import ComponentSettings


class DemoSettings(ComponentSettings):
    model_config = SettingsConfigDict(env_prefix="SHOAL_DEMO_", extra="forbid", frozen=True)
    toml_section: ClassVar[str] = "demo"

    port: int = 1
    name: str = "default"
    urls: tuple[str, ...] = ()


def test_defaults() -> None:
    s = DemoSettings.load()
    assert (s.port, s.name, s.urls) == (1, "default", ())


def test_precedence_flags_env_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[demo]\nport = 2\nname = "toml"\nurls = ["http://a/"]\n[other]\nport = 9\n')
    assert DemoSettings.load(cfg).port == 2
    monkeypatch.setenv("SHOAL_DEMO_PORT", "3")
    s = DemoSettings.load(cfg)
    assert (s.port, s.name, s.urls) == (3, "toml", ("http://a/",))
    assert DemoSettings.load(cfg, port=4, name=None).port == 4
    assert DemoSettings.load(cfg, name=None).name == "toml"


def test_errors(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[demo]\nport = "x"\n')
    with pytest.raises(BadInput, match="port"):
        DemoSettings.load(cfg)
    cfg.write_text("[demo]\nunknown = 1\n")
    with pytest.raises(BadInput, match="unknown"):
        DemoSettings.load(cfg)
    with pytest.raises(BadInput, match="cannot read config file"):
        DemoSettings.load(tmp_path / "missing.toml")
    cfg.write_text("demo = 1\n")
    with pytest.raises(BadInput, match="must be a table"):
        DemoSettings.load(cfg)
