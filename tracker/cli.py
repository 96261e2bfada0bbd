"""``shoal tracker``: the coordinator's commands (registered by the root, shoal_cli)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shoal.cliopts import TlsCertOption, TlsClientCaOption, TlsKeyOption, daemon_logging
from shoal.errors import LocalError

app = typer.Typer(
    help="The coordinator: BitTorrent tracker, model registry, fleet state.", no_args_is_help=True
)


@app.command("serve")
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
    private: Annotated[
        bool | None,
        typer.Option(
            "--private/--no-private",
            help="Announces need /announce/<token> [on with --fleet-token or --tokens-file].",
        ),
    ] = None,
    tag_ttl: Annotated[
        float | None,
        typer.Option(
            help="Seconds after which a tag fetched from upstream is checked again [3600]."
        ),
    ] = None,
    tls_cert: TlsCertOption = None,
    tls_key: TlsKeyOption = None,
    tls_client_ca: TlsClientCaOption = None,
    config: Annotated[Path | None, typer.Option(help="TOML config file ([tracker] table).")] = None,
) -> None:
    """Run the coordinator until SIGTERM or Ctrl-C (HTTPS with --tls-cert and --tls-key;
    mutual TLS with --tls-client-ca)."""
    import ssl

    import uvicorn

    from tracker.app import create_app, default_stores
    from tracker.auth import load_auth
    from tracker.settings import TrackerSettings
    from tracker.tlsid import CertifiedProtocol

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
        tag_ttl=tag_ttl,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_client_ca=tls_client_ca,
    )
    served = settings.server_tls()
    served.context()  # bad files are said now, in one line
    daemon_logging()
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
            # mutual TLS: the client certificate's host stands in for a token
            http=CertifiedProtocol if served.client_ca else "httptools",
            lifespan="on",
            log_level="warning",
            access_log=False,
            # X-Forwarded-For names the host only when a configured proxy sends it;
            # uvicorn's default believes it from 127.0.0.1, so any local process
            # could speak for any host
            proxy_headers=bool(settings.trusted_proxies),
            forwarded_allow_ips=list(settings.trusted_proxies),
            ssl_certfile=served.cert,
            ssl_keyfile=served.key,
            ssl_ca_certs=served.client_ca,
            ssl_cert_reqs=ssl.CERT_REQUIRED if served.client_ca else ssl.CERT_NONE,
        )
    )
    typer.echo(
        f"coordinator on {served.scheme}://{settings.host}:{settings.port} "
        f"(registry {settings.db}); announce URL /announce",
        err=True,
    )
    server.run()
    if not server.started:
        raise LocalError(
            f"coordinator could not start on {settings.host}:{settings.port}",
            "is the port in use? pick another with --port",
        )
