"""The ``shoal`` command: the composition root.

Each program keeps its commands in its own room (``tracker/cli.py``, ``seeder/cli.py``,
``peer/cli.py``, ``scenarios/cli.py``); this root wires them into one command, owns the
signals, and reports every error by the error tree's table (shoal/errors.py): one line
and a hint on stderr, the class's exit code, no traceback unless ``SHOAL_DEBUG=1``.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType
from typing import NoReturn

import typer

from peer.cli import app as peer_app
from peer.cli import config_app, mirror_app
from scenarios.cli import app as scenarios_app
from scenarios.cli import sim_app
from seeder.cli import app as seeder_app
from seeder.cli import edge_app
from shoal import __version__
from shoal.errors import INTERNAL_EXIT, LocalError, ShoalError
from tracker.cli import app as tracker_app

app = typer.Typer(
    name="shoal",
    help="Pull a model once per fleet: BitTorrent + verified HTTP for large model files.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # help texts hold literal brackets: "[pull] table", "[8470]"
)
app.add_typer(peer_app)
app.add_typer(seeder_app)
app.add_typer(scenarios_app)
app.add_typer(tracker_app, name="tracker")
app.add_typer(edge_app, name="edge")
app.add_typer(sim_app, name="sim")
app.add_typer(config_app, name="config")
app.add_typer(mirror_app, name="mirror")


@app.command()
def version() -> None:
    """Print shoal's version."""
    typer.echo(f"shoal {__version__}")


class _Signalled(BaseException):
    """SIGINT or SIGTERM: unwinds like an exception so cleanups run, then exits 128+N."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def main() -> None:
    """Console-script entry point."""
    # httpx imports its own command-line client (rich, pygments) when it can; shoal never
    # runs it, and skipping it takes ~30 ms off every command (a cache-hit pull included)
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _raise_signalled)
    try:
        app()
    except _Signalled as exc:
        name = "interrupted" if exc.signum == signal.SIGINT else "terminated"
        _fail(f"{name} ({signal.Signals(exc.signum).name}); stopped cleanly", 128 + exc.signum)
    except ShoalError as exc:
        hint = f"\n  hint: {exc.hint}" if exc.hint else ""
        _fail(f"error: {exc.message}{hint}", exc.exit_code)
    except MemoryError:
        _fail("error: out of memory", LocalError.exit_code)
    except OSError as exc:  # one no layer below mapped: this host's environment
        if os.environ.get("SHOAL_DEBUG"):
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        _fail(f"error: {exc.strerror or exc}{where}", LocalError.exit_code)
    except Exception as exc:  # a bug: still no traceback unless asked for
        if os.environ.get("SHOAL_DEBUG"):
            raise
        _fail(
            f"internal error: {type(exc).__name__}: {exc}\n"
            "  hint: this is a bug in shoal; rerun with SHOAL_DEBUG=1 for a traceback "
            "and report it",
            INTERNAL_EXIT,
        )


def _raise_signalled(signum: int, frame: FrameType | None) -> None:
    raise _Signalled(signum)


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"shoal: {message}", err=True)
    raise SystemExit(code)
