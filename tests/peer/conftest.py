from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.seeder.test_origin import Origin, start_seed


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[Origin]:
    """A real ``shoal seed`` process serving a freshly published model."""
    yield from start_seed(tmp_path)
