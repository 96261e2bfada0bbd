"""``shoal demo`` and ``shoal sim``: the local swarm and the netns simulations (registered
by the root, shoal_cli)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from shoal.units import parse_size

app = typer.Typer()  # its commands join the root's at the top level


sim_app = typer.Typer(
    help="Swarm simulations: in network namespaces (run, root) or in simulated time (fluid).",
    no_args_is_help=True,
)


@sim_app.command("run")
def sim_run(
    scenario: Annotated[Path, typer.Argument(help="Scenario file (scenarios/*.toml).")],
    out: Annotated[Path | None, typer.Option(help="Results directory [out/sim/<name>].")] = None,
) -> None:
    """Build the fleet, run each system on it, write result.json and plots, tear down."""
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


@sim_app.command("fluid")
def sim_fluid(
    scenario: Annotated[Path, typer.Argument(help="Scenario file (scenarios/*.toml).")],
    hosts: Annotated[
        int | None, typer.Option(min=1, max=100_000, help="Hosts instead of the scenario's.")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write result.json here.")] = None,
) -> None:
    """The scenario in simulated time: real pull machines and the coordinator's real fleet
    state over a fluid network model, no sockets (scenarios/fluid.py). No root needed."""
    import dataclasses
    import json

    from scenarios.fluid import simulate
    from scenarios.scenario import Scenario

    sc = Scenario.load(scenario)
    if hosts is not None:
        sc = dataclasses.replace(sc, hosts=hosts)
    result = simulate(sc)
    text = json.dumps({"scenario": sc.name, **result}, indent=1)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "result.json").write_text(text + "\n")
    typer.echo(text)


@sim_app.command("clean")
def sim_clean() -> None:
    """Kill what a crashed or killed run left and delete its namespaces."""
    from scenarios.netns import FleetLock, clean_leftovers, require_root

    require_root()
    with FleetLock():  # never a running fleet's namespaces
        found = clean_leftovers()
    typer.echo(f"removed {len(found)} namespaces" + (f": {', '.join(found)}" if found else ""))


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
    from scenarios.demo import DemoOptions, run

    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    run(DemoOptions(work=work, hosts=hosts, size=parse_size(size)))
