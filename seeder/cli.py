"""``shoal publish``, ``shoal seed`` and ``shoal edge``: the origin's and edges' commands
(registered by the root, shoal_cli). Heavy imports stay inside the commands."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

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
    parse_labels,
    read_token,
)
from shoal.errors import BadInput
from shoal.ref import ModelRef
from shoal.signing import Signature, load_private
from shoal.signing import keygen as generate_key
from shoal.units import format_size, parse_size

if TYPE_CHECKING:
    from shoal.publishing.sources import Source


app = typer.Typer()  # its commands join the root's at the top level


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
    upstream: Annotated[
        list[str] | None,
        typer.Option(
            help="Registry to fetch models the fleet asks for: URL or HOST=URL (repeatable), "
            "e.g. https://registry.ollama.ai."
        ),
    ] = None,
    upstream_credentials: Annotated[
        Path | None, typer.Option(help="File of 'HOST USER:PASSWORD' lines for upstreams.")
    ] = None,
    upstream_proxy: Annotated[
        str | None, typer.Option(help="Proxy for upstream requests [$HTTPS_PROXY].")
    ] = None,
    ingest_dir: Annotated[
        Path | None, typer.Option(help="Where models fetched from upstream are kept [ingested].")
    ] = None,
    hf_upstream: Annotated[
        str | None,
        typer.Option(
            help="Hugging Face endpoint to fetch repos the fleet asks for, e.g. "
            "https://huggingface.co (needs --hf-allow)."
        ),
    ] = None,
    hf_allow: Annotated[
        list[str] | None,
        typer.Option(help="Repos the fleet may fetch: 'org/*', 'datasets/org/name' (repeatable)."),
    ] = None,
    hf_token_file: Annotated[
        Path | None, typer.Option(help="File holding the Hub token for gated repos [$HF_TOKEN].")
    ] = None,
    encryption: EncryptionOption = None,
    sign_key: Annotated[
        Path | None, typer.Option(help="Sign the models this origin ingests ('shoal keygen').")
    ] = None,
    ca: CaOption = None,
    tls_cert: TlsCertOption = None,
    tls_key: TlsKeyOption = None,
    tls_client_ca: TlsClientCaOption = None,
    config: Annotated[Path | None, typer.Option(help="TOML config file ([seed] table).")] = None,
) -> None:
    """Serve published models over HTTP (Range, BEP 19 web seed) and seed them over BitTorrent.

    With --upstream, also fetch for the fleet, once, any model it asks for that is not
    published: from that registry, verified, published and served like the rest; with
    --hf-upstream, any Hugging Face repo the allow-list names."""
    import asyncio

    from seeder.origin_serve import OriginSettings, run

    settings = OriginSettings.load(
        config,
        dirs=tuple(dirs) if dirs else None,
        host=host,
        port=port,
        bt_listen=bt_listen,
        bittorrent=bittorrent,
        public_url=public_url,
        coordinator=coordinator,
        token=read_token(token, token_file),
        labels=parse_labels(label) if label else None,
        upstream=tuple(upstream) if upstream else None,
        upstream_credentials=upstream_credentials,
        upstream_proxy=upstream_proxy,
        ingest_dir=ingest_dir,
        hf_upstream=hf_upstream,
        hf_allow=tuple(hf_allow) if hf_allow else None,
        hf_token_file=hf_token_file,
        sign_key=sign_key,
        encryption=encryption,
        ca=ca,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_client_ca=tls_client_ca,
    )
    daemon_logging()
    asyncio.run(run(settings))


edge_app = typer.Typer(
    help="A verifying pull-through cache in front of origins.", no_args_is_help=True
)


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
    ca: CaOption = None,
    tls_cert: TlsCertOption = None,
    tls_key: TlsKeyOption = None,
    tls_client_ca: TlsClientCaOption = None,
    config: Annotated[Path | None, typer.Option(help="TOML config file ([edge] table).")] = None,
) -> None:
    """Serve blobs and web-seed paths from a verified chunk cache, filled from upstream."""
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
        token=read_token(token, token_file),
        labels=parse_labels(label) if label else None,
        public_url=public_url,
        upstream_fetches=upstream_fetches,
        ca=ca,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_client_ca=tls_client_ca,
    )
    settings.max_bytes  # noqa: B018 - validate the size before starting
    daemon_logging()
    asyncio.run(run(settings))


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
    ca: CaOption = None,
    sign: Annotated[
        Path | None, typer.Option(help="Sign the manifest with this key ('shoal keygen').")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="TOML config file ([publish] table).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Hash a model into chunks and write its manifest, torrent and blobs."""
    from seeder.settings import PublishSettings
    from shoal.coordinator_client import CoordinatorClient
    from shoal.publishing.publish import PublishOptions
    from shoal.publishing.publish import publish as run_publish

    settings = PublishSettings.load(
        config, coordinator=coordinator, token=read_token(token, token_file), ca=ca
    )
    settings.use_tls()
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
        signer=load_private(sign) if sign is not None else None,
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
        f"  signed    {_signed_by(result.signatures)}\n"
        f"  torrent   {result.torrent_path}\n"
        f"  out       {result.out}"
        + (f"\n  registered with {settings.coordinator}" if client is not None else "")
    )


@app.command()
def keygen(
    out: Annotated[Path, typer.Argument(help="Private key file to write (and OUT.pub).")],
) -> None:
    """Write a publisher key pair: OUT (private, mode 0600) and OUT.pub, the line hosts
    list in trusted_publishers."""
    public = generate_key(out)
    typer.echo(f"wrote {out} (private, keep it) and {out}.pub (key {public.id})")
    typer.echo(public.line(out.name))


def _signed_by(signatures: list[bytes]) -> str:
    if not signatures:
        return "no (unsigned: hosts with trusted_publishers refuse it)"
    return f"by key {Signature.from_wire(signatures[0]).key.id}"


def _open_source(spec: str, ollama_models: Path | None) -> Source:
    from shoal.publishing.ollama import default_models_dir, ollama_source
    from shoal.publishing.sources import directory_source, file_source

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
