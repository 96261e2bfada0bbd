"""The error tree: the table drawn in shoal/errors.py is what the classes carry, and
every error class of every package is in the tree."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import pytest

from shoal import errors
from shoal.errors import AuthError, RemoteError, ShoalError

PACKAGES = ("shoal", "peer", "seeder", "tracker", "scenarios")
ROW = re.compile(r"^[\s│├└─]*(\w+)\s+(\d+)\s+(\d+)\s", re.M)


def test_the_drawn_table_is_what_the_classes_carry() -> None:
    rows = ROW.findall(errors.__doc__ or "")
    assert len(rows) >= 10
    for name, exit_code, status in rows:
        cls = getattr(errors, name)
        assert (cls.exit_code, cls.http_status) == (int(exit_code), int(status)), name
    drawn = {name for name, _, _ in rows} | set(re.findall(r"[├└]── (\w+)", errors.__doc__ or ""))
    defined = {
        n for n, c in vars(errors).items() if isinstance(c, type) and issubclass(c, ShoalError)
    }
    assert defined == drawn, "draw every class of shoal/errors.py in its docstring"


def test_statuses_carried_by_instances() -> None:
    assert AuthError("x", status=403).http_status == 403
    assert RemoteError("x").http_status == 502
    assert RemoteError("x", status=404).status == 404


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        pkg = importlib.import_module(package)
        names += [m.name for m in pkgutil.walk_packages(pkg.__path__, f"{package}.")]
    return names


@pytest.mark.parametrize("module", _modules())
def test_every_error_class_is_in_the_tree(module: str) -> None:
    """Errors that cross a module are ``ShoalError``s; only private control-flow
    exceptions (a leading underscore) stay outside."""
    mod = importlib.import_module(module)
    for name, cls in vars(mod).items():
        if not (inspect.isclass(cls) and issubclass(cls, BaseException)):
            continue
        if cls.__module__ != module or name.startswith("_"):
            continue
        assert issubclass(cls, ShoalError), f"{module}.{name} is outside the error tree"
