"""An agent as a process: check its token, bind its API on loopback, seed, report,
learn and apply caps until cancelled; ``agent.json`` names the API while it serves."""

from __future__ import annotations

import asyncio
import json
import logging
import socket

from peer.agent.api import create_app
from peer.agent.client import AGENT_FILE
from peer.agent.daemon import Agent
from shoal.coordinator_client import CoordinatorClient, check_token
from shoal.errors import LocalError
from shoal.fsutil import atomic_write

log = logging.getLogger("shoal.agent")


async def run(agent: Agent, api_host: str = "127.0.0.1") -> None:
    """Seed and serve the API until cancelled (SIGTERM/SIGINT end the CLI's event loop)."""
    import uvicorn

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
    agent.start()
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
    try:
        serving = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started and not serving.done():
            await asyncio.sleep(0.05)
        if server.started:  # the CLI delegates pulls of this store to this agent
            port = sock.getsockname()[1]
            atomic_write(marker, json.dumps({"api": f"http://{api_host}:{port}"}).encode())
        await serving
    finally:
        marker.unlink(missing_ok=True)
        reporter.cancel()
        learner.cancel()
        capper.cancel()
        agent.close()
        await asyncio.sleep(0)
