"""Property-based API fuzzing from the coordinator's own OpenAPI schema: never a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from shoal.coordinator_client import CoordinatorClient
from tests.tracker.conftest import FLEET_TOKEN, PUBLISH_TOKEN, make_published, start


def _fit(value: Any) -> Any:
    """msgpack carries 64-bit integers; bigger ones are sent as text (the server refuses)."""
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        return str(value)
    if isinstance(value, dict):
        return {k: _fit(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_fit(v) for v in value]
    return value


@schemathesis.serializer("application/msgpack")
def _to_msgpack(ctx: Any, value: Any) -> bytes:
    return msgpack.packb(_fit(value), use_bin_type=True)


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("schemathesis")
    gen = start(tmp, None)
    running = next(gen)
    pub = make_published(tmp, chunk_size=16 * 1024)
    with CoordinatorClient(running.url, PUBLISH_TOKEN) as cc:
        cc.publish(pub.manifest, pub.torrent_path.read_bytes())
    yield schemathesis.openapi.from_url(f"{running.url}/openapi.json")
    gen.close()


def test_no_server_errors(api_schema: Any) -> None:
    """Every operation, a bounded number of generated cases each, with no token, a host
    token and a publisher token. (schemathesis' pytest plugin does not load under this
    pytest, so operations are driven through its Python API.)"""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 10
    failures: list[str] = []
    calls = [0]

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def run(case: Any) -> None:
            for token in (None, FLEET_TOKEN, PUBLISH_TOKEN):
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                response = case.call(headers=headers)
                calls[0] += 1
                if response.status_code >= 500:
                    failures.append(
                        f"{case.method} {case.formatted_path}: "
                        f"{response.status_code} {response.text[:200]}"
                    )

        run()
    assert failures == []
    assert calls[0] >= 3 * 5 * len(operations)  # the generator really ran
