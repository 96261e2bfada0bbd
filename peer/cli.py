"""A host's commands: ``shoal pull``, ``ls``, ``show``, ``rm``, ``pin``, ``unpin``, ``export``,
``verify``, ``agent`` and ``config`` (registered by the root, shoal_cli). Heavy imports stay
inside the commands: a pull handed to the agent starts in a fraction of a second."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from shoal.cliopts import (
    CaOption,
    EncryptionOption,
    TlsCertOption,
    TlsClientCaOption,
    TlsKeyOption,
    TokenFileOption,
    TokenOption,
    daemon_logging,
    local_time,
    read_token,
    store_dir,
)
from shoal.errors import BadInput
from shoal.ref import ModelRef
from shoal.units import format_size

app = typer.Typer()  # its commands join the root's at the top level


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
    ca: CaOption = None,
    tls_cert: TlsCertOption = None,
    tls_key: TlsKeyOption = None,
    encryption: EncryptionOption = None,
    trusted_publisher: Annotated[
        list[str] | None,
        typer.Option(
            help="Take only models this publisher signed: 'shoal-ed25519 KEY [patterns]' "
            "or 'KEY.pub [patterns]' (repeatable; [pull] trusted_publishers)."
        ),
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
    from peer import view
    from peer.agent.client import on_store, pull_via_agent

    model, root = ModelRef.parse(ref), store_dir(models_dir)
    flags: dict[str, Any] = dict(
        coordinator=coordinator,
        token=read_token(token, token_file),
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
        trusted_publishers=tuple(trusted_publisher) if trusted_publisher else None,
        encryption=encryption,
        ca=ca,
        tls_cert=tls_cert,
        tls_key=tls_key,
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
    with view.bars(f"pulling {model}") as bar:
        progress = view.json_lines() if as_json else bar

        def by_agent(url: str, token: str) -> dict[str, Any]:  # and it seeds it after
            # JSON lines carry progress at most once a second: ask that often (each
            # request still returns as soon as the pull ends)
            return pull_via_agent(url, token, model, progress, 1.0 if as_json else 0.25)

        def here() -> dict[str, Any]:
            import asyncio

            from peer.engine import pull as run_pull

            chosen = settings or _pull_settings(config, flags)
            chosen.use_tls()
            opts = chosen.options(model, root)
            result = asyncio.run(run_pull(opts, progress))
            return view.summary(str(opts.ref), result, str(opts.models_dir))

        summary = on_store(root, by_agent, here)
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
    from peer.agent.client import call_agent, on_store
    from peer.store import Store

    if remote:
        _list_remote(_coordinator_url(config, coordinator))
        return
    root = store_dir(models_dir)

    def here() -> list[dict[str, Any]]:
        if not (root / "tags").is_dir():
            return []  # no store here: say so, and do not make one
        store = Store(root)
        pins = store.pinned()
        return [
            {
                "ref": str(r),
                "bytes": m.total_size,
                "digest": str(m.digest),
                "pinned": r in pins,
                "last_used": store.last_used(r),
            }
            for r, m in store.models()
        ]

    rows: list[dict[str, Any]] = on_store(
        root, lambda url, token: call_agent(url, token, "GET", "/v1/models"), here
    )
    if not rows:
        typer.echo(f"no models in {root}", err=True)
        return
    typer.echo(_models_table(rows))


def _coordinator_url(config: Path | None, given: str | None) -> str:
    url = given or _pull_settings(config, {}).coordinator
    if not url:
        raise BadInput("no coordinator to ask", "give --coordinator URL (or coordinator in [pull])")
    return str(url)


def _list_remote(url: str) -> None:
    from shoal.coordinator_client import CoordinatorClient

    with CoordinatorClient(url) as client:
        rows = client.models()
    if not rows:
        typer.echo(f"no models at {url}", err=True)
        return
    lines = [("NAME", "ID", "UPDATED")]
    for row in sorted(rows, key=lambda r: str(r.get("ref"))):
        when = local_time(float(row.get("updated") or 0))
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
    from peer.store import Store
    from shoal.coordinator_client import CoordinatorClient
    from shoal.errors import NotFound

    model = ModelRef.parse(ref)
    if coordinator:
        with CoordinatorClient(coordinator) as client:
            manifest = client.resolve(model)
        where = coordinator
    else:
        root = store_dir(models_dir)
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
        when = local_time(float(row.get("last_used") or 0))
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
    from peer.agent.client import call_agent, on_store
    from peer.store import Store

    model, root = ModelRef.parse(ref), store_dir(models_dir)
    freed: int = on_store(
        root,
        lambda url, token: call_agent(url, token, "DELETE", f"/v1/models/{_quoted(model)}")[
            "freed"
        ],
        lambda: Store(root).open().remove(model),
    )
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
    from peer.agent.client import call_agent, on_store
    from peer.store import Store

    model, root = ModelRef.parse(ref), store_dir(models_dir)
    path = f"/v1/models/{_quoted(model)}/pin"
    on_store(
        root,
        lambda url, token: call_agent(url, token, "POST" if on else "DELETE", path),
        lambda: Store(root).open().pin(model, on),
    )
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
    if (ollama is None) == (hf is None):
        raise BadInput("give exactly one of --ollama DIR or --hf DIR")
    for where in _export(store_dir(models_dir), ModelRef.parse(ref), ollama, hf):
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
    bad = _verify(store_dir(models_dir), ModelRef.parse(ref) if ref else None, as_json)
    if bad:
        raise typer.Exit(1)


def _verify(models_dir: Path, ref: ModelRef | None, as_json: bool) -> int:
    from peer.agent.client import call_agent, on_store
    from peer.store import Store
    from peer.verify import verify as run_verify

    def here() -> dict[str, Any]:
        store = Store(models_dir).open()
        if ref is None:
            models = list(store.models())
        else:
            manifest = store.resolve(ref)
            if manifest is None:
                raise BadInput(f"{ref} is not in {store.root}", "see 'shoal ls'")
            models = [(ref, manifest)]
        return run_verify(store, models).as_dict()

    report = on_store(  # the agent stops seeding what fails
        models_dir,
        lambda url, token: call_agent(
            url, token, "POST", "/v1/verify", {"ref": str(ref) if ref else None}
        ),
        here,
    )
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
    mirror: Annotated[
        str | None,
        typer.Option(
            help="Registry mirror (OCI, ollama) address, loopback, or off [127.0.0.1:8474]."
        ),
    ] = None,
    mirror_token_file: Annotated[
        Path | None,
        typer.Option(help="File holding the mirror's token: readers must show it (LAN use)."),
    ] = None,
    ca: CaOption = None,
    tls_cert: TlsCertOption = None,
    tls_key: TlsKeyOption = None,
    tls_client_ca: TlsClientCaOption = None,
    encryption: EncryptionOption = None,
    hf_gated: Annotated[
        bool | None,
        typer.Option(
            "--hf-gated/--no-hf-gated",
            help="Serve Hub repos gated upstream to this host's clients [off].",
        ),
    ] = None,
    upstream: Annotated[
        list[str] | None,
        typer.Option(
            help="No coordinator: a registry this host fetches from, URL or HOST=URL "
            "(repeatable); the LAN shares what one host fetched."
        ),
    ] = None,
    upstream_credentials: Annotated[
        Path | None, typer.Option(help="File of 'HOST USER:PASSWORD' lines for --upstream.")
    ] = None,
    upstream_proxy: Annotated[
        str | None, typer.Option(help="HTTP(S) proxy for --upstream [the environment's].")
    ] = None,
    lan_group: Annotated[
        str | None,
        typer.Option(help="Multicast ADDR:PORT where agents with --upstream meet, or off."),
    ] = None,
    config: Annotated[Path | None, typer.Option(help="TOML config file ([agent] table).")] = None,
) -> None:
    """The host's daemon: seeds the store, runs pulls, keeps the disk budget and caps.

    Its local API answers on 127.0.0.1 (bearer token in agent.token beside the store), its
    registry mirror on 127.0.0.1:8474 (ollama, skopeo, containerd pull through it)."""
    import asyncio

    from peer.agent.auth import agent_token
    from peer.agent.daemon import Agent
    from peer.agent.run import run
    from peer.agent.settings import AgentSettings
    from peer.store import Store

    settings = AgentSettings.load(
        config,
        api_port=api_port,
        host=host,
        port=port,
        lsd=lsd,
        coordinator=coordinator,
        token=read_token(token, token_file),
        edges=tuple(edge) if edge else None,
        max_rate=max_rate,
        upload_rate=upload_rate,
        http_rate=http_rate,
        schedule=tuple(schedule) if schedule else None,
        max_store_size=max_store_size,
        min_free=min_free,
        mirror=mirror,
        mirror_token=read_token(None, mirror_token_file) if mirror_token_file else None,
        hf_gated=hf_gated,
        encryption=encryption,
        ca=ca,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_client_ca=tls_client_ca,
        upstream=tuple(upstream) if upstream else None,
        upstream_credentials=upstream_credentials,
        upstream_proxy=upstream_proxy,
        lan_group=lan_group,
    )
    store = Store(store_dir(models_dir)).open()
    daemon_logging()
    asyncio.run(run(Agent(store, settings, agent_token(store.root))))


config_app = typer.Typer(help="Settings.", no_args_is_help=True)


@config_app.command("show")
def config_show(
    config: Annotated[Path | None, typer.Option(help="TOML config file.")] = None,
) -> None:
    """Print the effective [pull] and [agent] settings (file < SHOAL_* < defaults shown),
    secrets masked."""
    from peer.agent.settings import AgentSettings
    from peer.settings import PullSettings
    from shoal.settings import masked

    for name, cls in (("pull", PullSettings), ("agent", AgentSettings)):
        typer.echo(f"[{name}]")
        for key, value in masked(cls.load(config).model_dump(mode="json")).items():
            typer.echo(f"{key} = {json.dumps(value)}")
        typer.echo("")


mirror_app = typer.Typer(help="The registry mirror each agent answers.", no_args_is_help=True)


@mirror_app.command("config")
def mirror_config(
    client: Annotated[
        str | None,
        typer.Option(help="ollama, containerd, podman, skopeo, crane or oras [all of them]."),
    ] = None,
    model: Annotated[str, typer.Option(help="Model the examples name.")] = "library/deepseek-r1:7b",
    config: Annotated[Path | None, typer.Option(help="TOML config file ([agent] table).")] = None,
) -> None:
    """Print what each client needs to pull through this host's registry mirror."""
    from peer.agent.settings import AgentSettings
    from peer.mirror.clients import CLIENTS
    from peer.mirror.clients import config as client_config

    if client is not None and client not in CLIENTS:
        raise BadInput(f"no client {client!r}", f"pick one of {', '.join(CLIENTS)}")
    address = AgentSettings.load(config).mirror_address()
    if address is None:
        raise BadInput("the mirror is off in these settings", "set mirror = HOST:PORT in [agent]")
    host, port = address
    mirror = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    for name in (client,) if client else CLIENTS:
        typer.echo(f"## {name}\n{client_config(name, mirror, model)}")
