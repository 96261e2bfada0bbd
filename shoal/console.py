"""The one place that builds progress bars (rich, on stderr, gone when done)."""

from __future__ import annotations

from typing import Any


def progress_bar() -> Any:
    """A ``rich.progress.Progress`` with bytes, rate and ETA columns; use it as a context."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
