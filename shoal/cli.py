"""The ``shoal`` command: the composition root.

This is the one module of ``shoal`` that imports ``seeder``, ``tracker`` and
``peer``, and only inside the commands that need them. Every ``ShoalError``
becomes a one-line message on stderr and its exit code (2 for bad input, 1
otherwise); no traceback reaches a user unless ``SHOAL_DEBUG=1``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from shoal import __version__
from shoal.errors import INTERNAL_EXIT, BadInput, LocalError, ShoalError
from shoal.ref import ModelRef
from shoal.units import format_size, parse_size

if TYPE_CHECKING:
    from seeder.sources import Source

TokenOption = Annotated[
    str | None,
    typer.Option(help="Token for it (shows in ps: prefer --token-file or the env)."),
]
TokenFileOption = Annotated[Path | None, typer.Option(help="File holding the token (first line).")]

app = typer.Typer(
    name="shoal",
    help="Pull a model once per fleet: BitTorrent + verified HTTP for large model files.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # help texts hold literal brackets: "[pull] table", "[8470]"
)


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


def _raise_signalled(signum: int, frame: FrameType | None) -> None:
    raise _Signalled(signum)


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"shoal: {message}", err=True)
    raise SystemExit(code)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn errors into one-line messages and exit codes."""
    try:
        yield
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


tracker_app = typer.Typer(
    help="The coordinator: BitTorrent tracker, model registry, fleet state.", no_args_is_help=True
)
app.add_typer(tracker_app, name="tracker")


@tracker_app.command("serve")
def tracker_serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on [0.0.0.0].")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [8470].")] = None,
    db: Annotated[
        Path | None, typer.Option(help="SQLite registry file [shoal-tracker/registry.sqlite].")
    ] = None,
    redis: Annotated[
        str | None, typer.Option(help="Redis URL: all state there, for replicas.")
    ] = None,
    publish_token: Annotated[
        list[str] | None, typer.Option(help="Token allowed to publish (repeatable).")
    ] = None,
    fleet_token: Annotated[str | None, typer.Option(help="Token every host may use.")] = None,
    edge_token: Annotated[
        list[str] | None,
        typer.Option(help="Token allowed to register an edge or origin (repeatable)."),
    ] = None,
    tokens_file: Annotated[Path | None, typer.Option(help="TOML file of tokens.")] = None,
    announce_interval: Annotated[
        int | None, typer.Option(help="Seconds between announces [1800].")
    ] = None,
    rate_limit: Annotated[
        float | None, typer.Option(help="Requests/s allowed per address (0: off) [100].")
    ] = None,
    trusted_proxy: Annotated[
        list[str] | None, typer.Option(help="Address whose ip= is believed (repeatable).")
    ] = None,
    private: Annotated[bool | None, typer.Option(help="Require /announce/<passkey>.")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML config file ([tracker] table).")] = None,
) -> None:
    """Run the coordinator until SIGTERM or Ctrl-C."""
    with _user_errors():
        import uvicorn

        from tracker.app import create_app, default_stores
        from tracker.auth import load_auth
        from tracker.settings import TrackerSettings

        settings = TrackerSettings.load(
            config,
            host=host,
            port=port,
            db=db,
            redis=redis,
            publish_tokens=tuple(publish_token) if publish_token else None,
            fleet_token=fleet_token,
            edge_tokens=tuple(edge_token) if edge_token else None,
            tokens_file=tokens_file,
            announce_interval=announce_interval,
            rate_limit=rate_limit,
            trusted_proxies=tuple(trusted_proxy) if trusted_proxy else None,
            private=private,
        )
        _daemon_logging()
        # opened here, not in the app's start-up: a damaged database or tokens file is
        # then said in one line, not as a server traceback followed by "port in use?"
        opened = default_stores(settings)
        load_auth(
            settings.state_dir,
            settings.publish_tokens,
            settings.fleet_token,
            settings.tokens_file,
            settings.edge_tokens,
        )
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(settings, stores=lambda _: opened),
                host=settings.host,
                port=settings.port,
                loop="uvloop",
                http="httptools",
                lifespan="on",
                log_level="warning",
                access_log=False,
                # X-Forwarded-For names the host only when a configured proxy sends it;
                # uvicorn's default believes it from 127.0.0.1, so any local process
                # could speak for any host
                proxy_headers=bool(settings.trusted_proxies),
                forwarded_allow_ips=list(settings.trusted_proxies),
            )
        )
        typer.echo(
            f"coordinator on http://{settings.host}:{settings.port} "
            f"(registry {settings.db}); announce URL /announce",
            err=True,
        )
        server.run()
        if not server.started:
            raise LocalError(
                f"coordinator could not start on {settings.host}:{settings.port}",
                "is the port in use? pick another with --port",
            )


@app.command()
def seed(
    dirs: Annotated[
        list[Path] | None,
        typer.Argument(help="Directories written by 'shoal publish' (or 'dirs' in [seed])."),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address for HTTP [0.0.0.0].")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port [8471].")] = None,
    bt_listen: Annotated[
        str | None, typer.Option(help="BitTorrent listen address:port [0.0.0.0:6881].")
    ] = None,
    bittorrent: Annotated[
        bool | None,
        typer.Option(
            "--bittorrent/--no-bittorrent", help="Seed over BitTorrent too, not HTTP only [on]."
        ),
    ] = None,
    public_url: Annotated[
        str | None, typer.Option(help="URL the fleet reaches this origin at.")
    ] = None,
    coordinator: Annotated[str | None, typer.Option(help="Coordinator to register with.")] = None,
    token: TokenOption = None,
    token_file: TokenFileOption = None,
    label: Annotated[list[str] | None, typer.Option(help="k=v label (repeatable).")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML config file ([seed] table).")] = None,
) -> None:
    """Serve published models over HTTP (Range, BEP 19 web seed) and seed them over BitTorrent."""
    with _user_errors():
        import asyncio

        from seeder.seed import OriginSettings, run

        settings = OriginSettings.load(
            config,
            dirs=tuple(dirs) if dirs else None,
            host=host,
            port=port,
            bt_listen=bt_listen,
            bittorrent=bittorrent,
            public_url=public_url,
            coordinator=coordinator,
            token=_token(token, token_file),
            labels=_labels(label) if label else None,
        )
        _daemon_logging()
        asyncio.run(run(settings))


edge_app = typer.Typer(
    help="A verifying pull-through cache in front of origins.", no_args_is_help=True
)
app.add_typer(edge_app, name="edge")


@edge_app.command("serve")
def edge_serve(
    upstream: Annotated[
        list[str] | None, typer.Option(help="Origin or edge URL, tried in order (repeatable).")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on [0.0.0.0].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [8472].")] = None,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Cache directory [shoal-edge-cache].")
    ] = None,
    max_size: Annotated[str | None, typer.Option(help="Cache budget, e.g. 500GiB [10GiB].")] = None,
    coordinator: Annotated[str | None, typer.Option(help="Coordinator URL.")] = None,
    token: TokenOption = None,
    token_file: TokenFileOption = None,
    label: Annotated[list[str] | None, typer.Option(help="k=v label (repeatable).")] = None,
    public_url: Annotated[str | None, typer.Option(help="URL the fleet reaches it at.")] = None,
    upstream_fetches: Annotated[
        int | None, typer.Option(help="Chunks fetched from upstream at once [8].")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="TOML config file ([edge] table).")] = None,
) -> None:
    """Serve blobs and web-seed paths from a verified chunk cache, filled from upstream."""
    with _user_errors():
        import asyncio

        from seeder.edge_serve import EdgeSettings, run

        settings = EdgeSettings.load(
            config,
            upstreams=tuple(upstream) if upstream else None,
            host=host,
            port=port,
            cache_dir=cache_dir,
            max_size=max_size,
            coordinator=coordinator,
            token=_token(token, token_file),
            labels=_labels(label) if label else None,
            public_url=public_url,
            upstream_fetches=upstream_fetches,
        )
        settings.max_bytes  # noqa: B018 - validate the size before starting
        _daemon_logging()
        asyncio.run(run(settings))


def _daemon_logging() -> None:
    """Servers log with timestamps; not a line per upstream request (httpx logs each)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _token(token: str | None, token_file: Path | None) -> str | None:
    """``--token`` or the first line of ``--token-file`` (never both): a token given as a
    flag is readable by every local user in /proc/<pid>/cmdline."""
    if token_file is None:
        return token
    if token is not None:
        raise BadInput("give --token or --token-file, not both")
    try:
        lines = token_file.read_text().splitlines()
    except OSError as exc:
        raise BadInput(f"cannot read token file {token_file}: {exc.strerror}") from None
    if not lines or not lines[0].strip():
        raise BadInput(f"token file {token_file} is empty", "write the token on its first line")
    return lines[0].strip()


def _labels(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BadInput(f"invalid label {item!r}", "write labels as key=value")
        out[key] = value
    return out


def _models_dir(given: Path | None) -> Path:
    if given is not None:
        return given
    env = os.environ.get("SHOAL_MODELS")
    return Path(env) if env else Path.home() / ".shoal"


@app.command()
def pull(
    ref: Annotated[str, typer.Argument(help="Model reference, e.g. deepseek-r1:7b.")],
    coordinator: Annotated[str | None, typer.Option(help="Coordinator URL.")] = None,
    token: TokenOption = None,
    token_file: TokenFileOption = None,
    edge: Annotated[list[str] | None, typer.Option(help="Edge or origin URL (repeatable).")] = None,
    models_dir: Annotated[
        Path | None, typer.Option(help="Store directory (default $SHOAL_MODELS or ~/.shoal).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="BitTorrent port (default: first free).")] = None,
    host: Annotated[str | None, typer.Option(help="BitTorrent listen address [0.0.0.0].")] = None,
    max_rate: Annotated[
        str | None, typer.Option(help="Download cap per source kind, e.g. 50M (bytes/s) [0: none].")
    ] = None,
    http_rate: Annotated[
        str | None, typer.Option(help="Cap on edges and the origin, e.g. 20M (bytes/s) [0: none].")
    ] = None,
    http_connections: Annotated[
        int | None, typer.Option(help="Parallel HTTP range requests [8].")
    ] = None,
    proxy: Annotated[
        str | None, typer.Option(help="HTTP(S) or SOCKS5 proxy for edges, with credentials.")
    ] = None,
    utp: Annotated[bool | None, typer.Option("--utp/--no-utp", help="uTP besides TCP.")] = None,
    lsd: Annotated[
        bool | None, typer.Option("--lsd/--no-lsd", help="Find peers on the LAN [on].")
    ] = None,
    stall_timeout: Annotated[
        float | None, typer.Option(help="Give up after this long without progress (s) [60].")
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Re-hash what the store holds of the model; fetch what fails.")
    ] = False,
    ollama: Annotated[
        Path | None, typer.Option(help="Then export into this ollama models dir.")
    ] = None,
    hf: Annotated[Path | None, typer.Option(help="Then export into this HF cache dir.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines: progress, result.")] = False,
    config: Annotated[Path | None, typer.Option(help="TOML config file ([pull] table).")] = None,
) -> None:
    """Fetch a model from peers and edges into the local store, every chunk verified.

    With an agent running for the store, the agent pulls (and seeds after) with its own
    settings; the flags here then only need to be valid."""
    with _user_errors():
        from peer import view
        from peer.delegate import find_agent, pull_via_agent

        model, root = ModelRef.parse(ref), _models_dir(models_dir)
        flags: dict[str, Any] = dict(
            coordinator=coordinator,
            token=_token(token, token_file),
            edges=tuple(edge) if edge else None,
            host=host,
            port=port,
            lsd=lsd,
            utp=utp,
            http_connections=http_connections,
            max_rate=max_rate,
            http_rate=http_rate,
            proxy=proxy,
            stall_timeout=stall_timeout,
        )
        logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
        # checked before the agent is asked, but only when given: settings and the pull
        # engine are most of what a CLI start costs (eight pulls at once on 2 cores: 0.5 s)
        settings = (
            _pull_settings(config, flags)
            if config is not None or any(v is not None for v in flags.values())
            else None
        )
        if force:
            _verify(root, model, as_json)
        agent_at = find_agent(root)
        with view.bars(f"pulling {model}") as bar:
            progress = view.json_lines() if as_json else bar
            if agent_at is not None:  # the agent of this store runs it, and seeds it after
                # JSON lines carry progress at most once a second: ask that often (each
                # request still returns as soon as the pull ends)
                summary = pull_via_agent(*agent_at, model, progress, 1.0 if as_json else 0.25)
            else:
                import asyncio

                from peer.engine import pull as run_pull

                opts = (settings or _pull_settings(config, flags)).options(model, root)
                result = asyncio.run(run_pull(opts, progress))
                summary = view.summary(str(opts.ref), result, str(opts.models_dir))
        typer.echo(json.dumps(summary) if as_json else view.sentence(summary))
        for where in _export(root, model, ollama, hf):
            typer.echo(f"exported {model} to {where}", err=as_json)


def _pull_settings(config: Path | None, flags: dict[str, Any]) -> Any:
    from peer.settings import PullSettings

    return PullSettings.load(config, **flags)


@app.command(name="ls")
def list_models(
    models_dir: Annotated[Path | None, typer.Option(help="Store directory.")] = None,
    remote: Annotated[
        bool, typer.Option("--remote", help="List what the coordinator holds instead.")
    ] = False,
    coordinator: Annotated[
        str | None, typer.Option(help="Coordinator URL (default: [pull] coordinator).")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="TOML config file ([pull] table).")] = None,
) -> None:
    """List the models in the local store: name, ID (digest), size, last used, and
    whether it is pinned or seeded. Listing creates nothing. With --remote: the models a
    coordinator holds (name, ID, when the tag last moved)."""
    with _user_errors():
        from peer.delegate import call_agent, find_agent
        from peer.store import Store

        if remote:
            _list_remote(_coordinator_url(config, coordinator))
            return
        root = _models_dir(models_dir)
        agent_at = find_agent(root)
        rows: list[dict[str, Any]]
        if agent_at is not None:
            rows = call_agent(*agent_at, "GET", "/v1/models")
        elif not (root / "tags").is_dir():
            rows = []  # no store here: say so, and do not make one
        else:
            store = Store(root)
            pins = store.pinned()
            rows = [
                {
                    "ref": str(r),
                    "bytes": m.total_size,
                    "digest": str(m.digest),
                    "pinned": r in pins,
                    "last_used": store.last_used(r),
                }
                for r, m in store.models()
            ]
        if not rows:
            typer.echo(f"no models in {root}", err=True)
            return
        typer.echo(_models_table(rows))


def _coordinator_url(config: Path | None, given: str | None) -> str:
    url = given or _pull_settings(config, {}).coordinator
    if not url:
        raise BadInput("no coordinator to ask", "give --coordinator URL (or coordinator in [pull])")
    return str(url)


def _when(stamp: float) -> str:
    """A Unix time as local ``YYYY-MM-DD HH:MM`` for the tables; ``-`` for none."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp)) if stamp else "-"


def _list_remote(url: str) -> None:
    from shoal.coordinator_client import CoordinatorClient

    with CoordinatorClient(url) as client:
        rows = client.models()
    if not rows:
        typer.echo(f"no models at {url}", err=True)
        return
    lines = [("NAME", "ID", "UPDATED")]
    for row in sorted(rows, key=lambda r: str(r.get("ref"))):
        when = _when(float(row.get("updated") or 0))
        digest = str(row.get("digest", "")).removeprefix("sha256:")[:12]
        lines.append((str(row.get("ref")), digest, when))
    width = [max(len(line[i]) for line in lines) for i in range(2)]
    for line in lines:
        typer.echo(f"{line[0].ljust(width[0])}  {line[1].ljust(width[1])}  {line[2]}")


@app.command()
def show(
    ref: Annotated[str, typer.Argument(help="Model reference, e.g. deepseek-r1:7b.")],
    coordinator: Annotated[
        str | None, typer.Option(help="Ask this coordinator (default: the local store).")
    ] = None,
    models_dir: Annotated[Path | None, typer.Option(help="Store directory.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The manifest as JSON.")] = False,
) -> None:
    """What a model is: digest, size, chunks, info-hashes and files, from a coordinator
    or the local store."""
    with _user_errors():
        from peer.store import Store
        from shoal.coordinator_client import CoordinatorClient
        from shoal.errors import NotFound

        model = ModelRef.parse(ref)
        if coordinator:
            with CoordinatorClient(coordinator) as client:
                manifest = client.resolve(model)
            where = coordinator
        else:
            root = _models_dir(models_dir)
            found = Store(root).resolve(model) if (root / "tags").is_dir() else None
            if found is None:
                raise NotFound(
                    f"{model} is not in {root}",
                    "see 'shoal ls', or ask a coordinator with --coordinator URL",
                )
            manifest, where = found, str(root)
        if as_json:
            typer.echo(json.dumps(manifest.to_json()))
            return
        m = manifest
        typer.echo(f"{model} (from {where})")
        typer.echo(f"  digest    {m.digest}")
        typer.echo(
            f"  size      {format_size(m.total_size)} in {len(m.files)} files, "
            f"{m.num_chunks} chunks of {format_size(m.chunk_size)}"
        )
        v2 = m.info_hash_v2.hex() if m.info_hash_v2 else "none (v1 only)"
        typer.echo(f"  torrent   v1 {m.info_hash_v1.hex()}, v2 {v2}")
        width = max(len(f.path.value) for f in m.files)
        for f in m.files:
            kind = f"  {f.media_type}" if f.media_type else ""
            size = format_size(f.size)
            typer.echo(f"  {f.path.value.ljust(width)}  {size:>10}  {f.sha256.hex[:12]}{kind}")


def _models_table(rows: list[dict[str, Any]]) -> str:
    """``shoal ls``'s table, ollama's columns (NAME, ID, SIZE) and shoal's own."""
    lines = [("NAME", "ID", "SIZE", "LAST USED", "")]
    for row in rows:
        marks = " ".join(
            m for m, on in (("pinned", row.get("pinned")), ("seeding", row.get("seeding"))) if on
        )
        when = _when(float(row.get("last_used") or 0))
        digest = str(row["digest"]).removeprefix("sha256:")[:12]
        lines.append((str(row["ref"]), digest, format_size(int(row["bytes"])), when, marks))
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    return "\n".join(
        "  ".join(
            (
                line[0].ljust(widths[0]),
                line[1].ljust(widths[1]),
                line[2].rjust(widths[2]),
                line[3].ljust(widths[3]),
                line[4],
            )
        ).rstrip()
        for line in lines
    )


@app.command()
def rm(
    ref: Annotated[str, typer.Argument(help="Model reference to remove.")],
    models_dir: Annotated[Path | None, typer.Option(help="Store directory.")] = None,
) -> None:
    """Remove a model from the local store; files other models use are kept.

    A running agent stops seeding it first."""
    with _user_errors():
        from peer.delegate import call_agent, find_agent
        from peer.store import Store

        model, root = ModelRef.parse(ref), _models_dir(models_dir)
        agent_at = find_agent(root)
        if agent_at is not None:
            freed = call_agent(*agent_at, "DELETE", f"/v1/models/{_quoted(model)}")["freed"]
        else:
            freed = Store(root).open().remove(model)
        typer.echo(f"removed {model}, freed {format_size(freed)}")


@app.command()
def pin(
    ref: Annotated[str, typer.Argument(help="Model reference in the local store.")],
    models_dir: Annotated[Path | None, typer.Option(help="Store directory.")] = None,
) -> None:
    """Keep a model whatever the agent's disk budget (never evicted)."""
    _pin(ref, models_dir, on=True)


@app.command()
def unpin(
    ref: Annotated[str, typer.Argument(help="Model reference in the local store.")],
    models_dir: Annotated[Path | None, typer.Option(help="Store directory.")] = None,
) -> None:
    """Let the agent's disk budget evict a model again (least recently used first)."""
    _pin(ref, models_dir, on=False)


def _pin(ref: str, models_dir: Path | None, on: bool) -> None:
    with _user_errors():
        from peer.delegate import call_agent, find_agent
        from peer.store import Store

        model, root = ModelRef.parse(ref), _models_dir(models_dir)
        agent_at = find_agent(root)
        if agent_at is not None:
            call_agent(*agent_at, "POST" if on else "DELETE", f"/v1/models/{_quoted(model)}/pin")
        else:
            Store(root).open().pin(model, on)
        typer.echo(f"{'pinned' if on else 'unpinned'} {model}")


def _quoted(model: ModelRef) -> str:
    from urllib.parse import quote

    return quote(str(model), safe="/:")


@app.command()
def export(
    ref: Annotated[str, typer.Argument(help="Model reference in the local store.")],
    ollama: Annotated[
        Path | None, typer.Option(help="Write into this ollama models dir (e.g. ~/.ollama/models).")
    ] = None,
    hf: Annotated[
        Path | None,
        typer.Option(help="Write into this Hugging Face cache (e.g. ~/.cache/huggingface/hub)."),
    ] = None,
    models_dir: Annotated[Path | None, typer.Option(help="Store directory.")] = None,
) -> None:
    """Hard-link a stored model into ollama's layout or the Hugging Face cache."""
    with _user_errors():
        if (ollama is None) == (hf is None):
            raise BadInput("give exactly one of --ollama DIR or --hf DIR")
        for where in _export(_models_dir(models_dir), ModelRef.parse(ref), ollama, hf):
            typer.echo(f"exported {ref} to {where}")


def _export(models_dir: Path, model: ModelRef, ollama: Path | None, hf: Path | None) -> list[Path]:
    from peer.export import export_hf, export_ollama
    from peer.store import Store

    store = Store(models_dir).open()
    manifest = store.resolve(model)
    if manifest is None:
        raise BadInput(f"{model} is not in {store.root}", "pull it first (shoal pull)")
    out = []
    if ollama is not None or hf is not None:
        store.touch(model)  # a use: the disk budget evicts the least recently used first
    if ollama is not None:
        out.append(export_ollama(store, model, manifest, ollama))
    if hf is not None:
        out.append(export_hf(store, model, manifest, hf))
    return out


@app.command()
def verify(
    ref: Annotated[str | None, typer.Argument(help="Model to check (default: all).")] = None,
    models_dir: Annotated[Path | None, typer.Option(help="Store directory.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Re-hash every chunk the store holds; bad blobs leave the store for a re-pull."""
    with _user_errors():
        bad = _verify(_models_dir(models_dir), ModelRef.parse(ref) if ref else None, as_json)
    if bad:
        raise typer.Exit(1)


def _verify(models_dir: Path, ref: ModelRef | None, as_json: bool) -> int:
    from peer.delegate import call_agent, find_agent
    from peer.store import Store
    from peer.verify import verify as run_verify

    agent_at = find_agent(models_dir)
    if agent_at is not None:  # the agent stops seeding what fails
        report = call_agent(*agent_at, "POST", "/v1/verify", {"ref": str(ref) if ref else None})
    else:
        store = Store(models_dir).open()
        if ref is None:
            models = list(store.models())
        else:
            manifest = store.resolve(ref)
            if manifest is None:
                raise BadInput(f"{ref} is not in {store.root}", "see 'shoal ls'")
            models = [(ref, manifest)]
        report = run_verify(store, models).as_dict()
    bad = report["bad"]
    if as_json:
        typer.echo(json.dumps(report))
    else:
        for b in bad:
            typer.echo(
                f"{b['ref']}: {b['path']}: {len(b['chunks'])} of {b['num_chunks']} chunks bad; "
                f"moved out of the store, `shoal pull {b['ref']}` fetches only those",
                err=True,
            )
        typer.echo(
            f"verified {report['blobs']} blobs ({format_size(report['bytes'])}): "
            + (f"{len(bad)} bad" if bad else "all good")
        )
    return len(bad)


@app.command()
def agent(
    models_dir: Annotated[
        Path | None, typer.Option(help="Store directory (default $SHOAL_MODELS or ~/.shoal).")
    ] = None,
    api_port: Annotated[int | None, typer.Option(help="Local API port [8473].")] = None,
    host: Annotated[str | None, typer.Option(help="BitTorrent listen address [0.0.0.0].")] = None,
    port: Annotated[int | None, typer.Option(help="BitTorrent port (default: first free).")] = None,
    lsd: Annotated[
        bool | None, typer.Option("--lsd/--no-lsd", help="Find peers on the LAN [on].")
    ] = None,
    coordinator: Annotated[str | None, typer.Option(help="Coordinator URL.")] = None,
    token: TokenOption = None,
    token_file: TokenFileOption = None,
    edge: Annotated[list[str] | None, typer.Option(help="Edge or origin URL (repeatable).")] = None,
    max_rate: Annotated[
        str | None, typer.Option(help="Download cap of each pull, e.g. 50M (bytes/s) [0: none].")
    ] = None,
    upload_rate: Annotated[
        str | None, typer.Option(help="Seeding cap, e.g. 20M (bytes/s) [0: none].")
    ] = None,
    http_rate: Annotated[
        str | None, typer.Option(help="Cap on edges and the origin, all pulls [0: none].")
    ] = None,
    schedule: Annotated[
        list[str] | None,
        typer.Option(help='Cap by time of day, e.g. "upload 50MB/s 08:00-20:00" (repeatable).'),
    ] = None,
    max_store_size: Annotated[
        str | None, typer.Option(help="Store budget, e.g. 200G; LRU eviction beyond [0: none].")
    ] = None,
    min_free: Annotated[
        str | None, typer.Option(help="Free disk space to leave, e.g. 10G [1G].")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="TOML config file ([agent] table).")] = None,
) -> None:
    """The host's daemon: seeds the store, runs pulls, keeps the disk budget and caps.

    Its local API answers on 127.0.0.1 (bearer token in agent.token beside the store)."""
    with _user_errors():
        import asyncio

        from peer.agent import Agent, AgentSettings, agent_token, run
        from peer.store import Store

        settings = AgentSettings.load(
            config,
            api_port=api_port,
            host=host,
            port=port,
            lsd=lsd,
            coordinator=coordinator,
            token=_token(token, token_file),
            edges=tuple(edge) if edge else None,
            max_rate=max_rate,
            upload_rate=upload_rate,
            http_rate=http_rate,
            schedule=tuple(schedule) if schedule else None,
            max_store_size=max_store_size,
            min_free=min_free,
        )
        store = Store(_models_dir(models_dir)).open()
        _daemon_logging()
        asyncio.run(run(Agent(store, settings, agent_token(store.root))))


sim_app = typer.Typer(help="Swarm simulations in network namespaces (root).", no_args_is_help=True)
app.add_typer(sim_app, name="sim")


@sim_app.command("run")
def sim_run(
    scenario: Annotated[Path, typer.Argument(help="Scenario file (scenarios/*.toml).")],
    out: Annotated[Path | None, typer.Option(help="Results directory [out/sim/<name>].")] = None,
) -> None:
    """Build the fleet, run each system on it, write result.json and plots, tear down."""
    with _user_errors():
        from scenarios.netns import require_root
        from scenarios.report import summary_lines
        from scenarios.runner import run
        from scenarios.scenario import Scenario

        sc = Scenario.load(scenario)
        require_root()
        logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
        result = run(sc, out or Path("out/sim") / sc.name)
        for line in summary_lines(result):
            typer.echo(line)


@sim_app.command("clean")
def sim_clean() -> None:
    """Kill what a crashed or killed run left and delete its namespaces."""
    with _user_errors():
        from scenarios.netns import FleetLock, clean_leftovers, require_root

        require_root()
        with FleetLock():  # never a running fleet's namespaces
            found = clean_leftovers()
        typer.echo(f"removed {len(found)} namespaces" + (f": {', '.join(found)}" if found else ""))


config_app = typer.Typer(help="Settings.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(
    config: Annotated[Path | None, typer.Option(help="TOML config file.")] = None,
) -> None:
    """Print the effective [pull] and [agent] settings (file < SHOAL_* < defaults shown),
    secrets masked."""
    with _user_errors():
        from peer.agent import AgentSettings
        from peer.settings import PullSettings
        from shoal.settings import masked

        for name, cls in (("pull", PullSettings), ("agent", AgentSettings)):
            typer.echo(f"[{name}]")
            for key, value in masked(cls.load(config).model_dump(mode="json")).items():
                typer.echo(f"{key} = {json.dumps(value)}")
            typer.echo("")


@app.command()
def demo(
    hosts: Annotated[int, typer.Option(min=1, max=16, help="Agents in the local swarm.")] = 4,
    size: Annotated[str, typer.Option(help="Size of the generated model.")] = "256MiB",
    work: Annotated[Path, typer.Option(help="Working directory (emptied first).")] = Path(
        "out/demo"
    ),
) -> None:
    """A local swarm on 127.0.0.1 pulls a generated model at once: no root needed.

    A coordinator, an origin, an edge and the agents; live progress, then a summary."""
    with _user_errors():
        from scenarios.demo import DemoOptions, run

        logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
        run(DemoOptions(work=work, hosts=hosts, size=parse_size(size)))


@app.command()
def version() -> None:
    """Print shoal's version."""
    typer.echo(f"shoal {__version__}")


@app.command()
def publish(
    source: Annotated[
        str, typer.Argument(help="A file, a directory, or ollama:NAME[:TAG] from ollama's store.")
    ],
    name: Annotated[
        str | None, typer.Option("--name", help="Model reference, e.g. deepseek-r1:7b.")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Output directory.")] = None,
    chunk_size: Annotated[
        str | None, typer.Option(help="Chunk size, a power of two, e.g. 4MiB (default: policy).")
    ] = None,
    tracker: Annotated[list[str] | None, typer.Option(help="Tracker URL (repeatable).")] = None,
    web_seed: Annotated[
        list[str] | None, typer.Option(help="Web seed base URL, BEP 19 (repeatable).")
    ] = None,
    v1_only: Annotated[bool, typer.Option(help="A v1-only torrent, for old clients.")] = False,
    force: Annotated[bool, typer.Option(help="Replace an existing output directory.")] = False,
    ollama_models: Annotated[
        Path | None,
        typer.Option(help="ollama's models dir (default: $OLLAMA_MODELS or ~/.ollama/models)."),
    ] = None,
    coordinator: Annotated[
        str | None, typer.Option(help="Coordinator URL to register the model with.")
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(help="Publisher token (shows in ps: prefer --token-file or the env)."),
    ] = None,
    token_file: Annotated[
        Path | None, typer.Option(help="File holding the publisher token (first line).")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="TOML config file ([publish] table).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Hash a model into chunks and write its manifest, torrent and blobs."""
    with _user_errors():
        from seeder.publish import PublishOptions
        from seeder.publish import publish as run_publish
        from seeder.settings import PublishSettings
        from shoal.coordinator_client import CoordinatorClient

        settings = PublishSettings.load(
            config, coordinator=coordinator, token=_token(token, token_file)
        )
        src = _open_source(source, ollama_models)
        if name is not None:
            ref = ModelRef.parse(name)
        elif src.default_ref is not None:
            ref = src.default_ref
        else:
            raise BadInput(
                "--name is required for a file or directory source", "e.g. --name mymodel:v1"
            )
        client = None
        if settings.coordinator:
            client = CoordinatorClient(settings.coordinator, settings.token)
        trackers = tuple(tracker or settings.trackers)
        if not trackers and client is not None:
            trackers = (client.announce_url,)
        opts = PublishOptions(
            ref=ref,
            out=out if out is not None else settings.out_root / ref.slug,
            chunk_size=parse_size(chunk_size) if chunk_size is not None else None,
            trackers=trackers,
            web_seeds=tuple(web_seed or settings.web_seeds),
            v1_only=v1_only,
            force=force,
            threads=settings.hash_threads,
            coordinator=client,
        )
        total = sum(f.size for f in src.files)
        try:
            with _progress(total, f"hashing {ref}") as advance:
                result = run_publish(src, opts, advance)
        finally:
            if client is not None:
                client.close()
        m = result.manifest
        if as_json:
            typer.echo(json.dumps(m.to_json(), indent=1))
            return
        typer.echo(
            f"published {m.ref}\n"
            f"  manifest  {m.digest}\n"
            f"  files     {len(m.files)} ({format_size(m.total_size)}), "
            f"{m.num_chunks} chunks of {format_size(m.chunk_size)}\n"
            f"  v1        {m.info_hash_v1.hex()}\n"
            f"  v2        {m.info_hash_v2.hex() if m.info_hash_v2 else '-'}\n"
            f"  blobs     {result.linked} hard-linked, {len(m.files) - result.linked} written\n"
            f"  torrent   {result.torrent_path}\n"
            f"  out       {result.out}"
            + (f"\n  registered with {settings.coordinator}" if client is not None else "")
        )


def _open_source(spec: str, ollama_models: Path | None) -> Source:
    from seeder.ollama import default_models_dir, ollama_source
    from seeder.sources import directory_source, file_source

    if spec.startswith("ollama:"):
        return ollama_source(spec.removeprefix("ollama:"), ollama_models or default_models_dir())
    path = Path(spec)
    if path.is_dir():
        return directory_source(path)
    if not path.exists() and not path.is_symlink():
        raise BadInput(f"source {spec} does not exist", "give a file, a directory or ollama:NAME")
    return file_source(path)


@contextmanager
def _progress(total: int, label: str) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on a terminal; nothing otherwise."""
    if not sys.stderr.isatty():
        yield None
        return
    from shoal.console import progress_bar

    with progress_bar() as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)
