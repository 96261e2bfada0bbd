"""The SQLite registry maps its failures into the error tree (this host's environment)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.errors import LocalError
from tests.conftest import RunShoal
from tracker.stores.sqlite import SqliteRegistry


def test_a_damaged_database_is_a_local_error_naming_the_file(tmp_path: Path) -> None:
    db = tmp_path / "registry.sqlite"
    db.write_bytes(b"this is not a database" * 100)
    with pytest.raises(LocalError, match=r"registry\.sqlite failed: file is not a database"):
        SqliteRegistry(db)


def test_the_coordinator_refuses_a_damaged_database_with_exit_5(
    tmp_path: Path, run_shoal: RunShoal
) -> None:
    db = tmp_path / "registry.sqlite"
    db.write_bytes(b"this is not a database" * 100)
    r = run_shoal("tracker", "serve", "--db", db, "--port", "0")
    assert r.returncode == 5, r.stderr
    assert "file is not a database" in r.stderr and "--db" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_malformed_tokens_file_is_said_in_one_line(tmp_path: Path, run_shoal: RunShoal) -> None:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text("publishers = 3\n")
    r = run_shoal("tracker", "serve", "--db", tmp_path / "r.sqlite", "--tokens-file", tokens)
    assert r.returncode == 2 and f"tokens file {tokens} is malformed" in r.stderr
    assert "Traceback" not in r.stderr and "port" not in r.stderr
