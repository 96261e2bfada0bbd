"""An agent as a process: check its token, bind its API on loopback, seed, report,
learn and apply caps until cancelled; ``agent.json`` names the API while it serves."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import ssl
from collections.abc import Iterator

import uvicorn

from peer.agent.api import create_app
from peer.agent.client import AGENT_FILE
from peer.agent.daemon import Agent
from peer.mirror.app import Mirror
from peer.mirror.auth import MirrorAuth
from shoal.coordinator_client import CoordinatorClient, check_token
from shoal.errors import LocalError
from shoal.fsutil import atomic_write

log = logging.getLogger("shoal.agent")


async def run(agent: Agent, api_host: str = "127.0.0.1") -> None:
    """Seed and serve the API until cancelled (SIGTERM/SIGINT end the CLI's event loop)."""
    agent.settings.use_tls()
    served = agent.settings.server_tls()
    served.context()  # bad files are said now
    if agent.settings.coordinator:  # a refused token stops the agent here, with the reason
        with CoordinatorClient(agent.settings.coordinator, agent.settings.token) as client:
            await asyncio.to_thread(check_token, client)
    try:  # bound here, not by uvicorn: its failure is a SystemExit out of a task
        sock = socket.create_server((api_host, agent.settings.api_port))
    except OSError as exc:
        raise LocalError(
            f"cannot serve the agent API on {api_host}:{agent.settings.api_port}: {exc.strerror}",
            "is another agent running on this host? give this one another --api-port",
        ) from None
    mirror_sock = _mirror_socket(agent)
    agent.start()
    await agent.start_lan()
    reporter = asyncio.ensure_future(agent.report_forever())
    learner = asyncio.ensure_future(agent.learn_forever())
    capper = asyncio.ensure_future(agent.caps_forever())
    config = uvicorn.Config(
        create_app(agent),
        log_level="warning",
        lifespan="off",
        proxy_headers=False,  # no proxy stands before a loopback API
    )
    server = uvicorn.Server(config)
    marker = agent.store.root / AGENT_FILE
    mirroring = None
    try:
        serving = asyncio.ensure_future(server.serve(sockets=[sock]))
        if mirror_sock is not None:
            token = agent.settings.mirror_token
            mirror = Mirror(
                agent.store,
                agent,
                agent.settings.mirror_readers,
                agent.metrics,
                MirrorAuth(token) if token else None,
                agent.settings.hf_gated,
                agent.settings.hf_branch_ttl,
            )
            quiet = uvicorn.Config(
                mirror,
                log_level="warning",
                lifespan="off",
                proxy_headers=False,
                ssl_certfile=served.cert,  # on the LAN: HTTPS, and mutual TLS if asked
                ssl_keyfile=served.key,
                ssl_ca_certs=served.client_ca,
                ssl_cert_reqs=ssl.CERT_REQUIRED if served.client_ca else ssl.CERT_NONE,
            )
            mirroring = asyncio.ensure_future(_Quiet(quiet).serve(sockets=[mirror_sock]))
            log.info("registry mirror on %s:%d", *mirror_sock.getsockname()[:2])
        while not server.started and not serving.done():
            await asyncio.sleep(0.05)
        if server.started:  # the CLI delegates pulls of this store to this agent
            port = sock.getsockname()[1]
            atomic_write(marker, json.dumps({"api": f"http://{api_host}:{port}"}).encode())
        await serving
    finally:
        if mirroring is not None:
            mirroring.cancel()
        marker.unlink(missing_ok=True)
        reporter.cancel()
        learner.cancel()
        capper.cancel()
        agent.close()
        await asyncio.sleep(0)


class _Quiet(uvicorn.Server):
    """A second server in the process: the API's server owns the signals, and its end
    cancels this one."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _mirror_socket(agent: Agent) -> socket.socket | None:
    address = agent.settings.mirror_address()
    if address is None:
        return None
    host, port = address
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        raise LocalError(
            f"cannot serve the registry mirror on {host}:{port}: {exc.strerror}",
            "is another agent running on this host? give this one another --mirror, or off",
        ) from None
