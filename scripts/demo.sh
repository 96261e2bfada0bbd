#!/usr/bin/env bash
# The main job: a local swarm on 127.0.0.1 (a coordinator, an origin, an edge and 4 agents)
# pulls a generated 256 MiB model at once, with live progress, then a summary. No root.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/shoal demo --work "${SHOAL_DEMO_DIR:-out/demo}" "$@"
