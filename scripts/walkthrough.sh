#!/usr/bin/env bash
# Run the README's "Run a fleet" walkthrough as written: every ```sh block between the
# walkthrough markers, in order, in one shell, in an empty directory (the first argument,
# or a new temporary one). What it starts in the background is stopped at the end.
# Usage: scripts/walkthrough.sh [DIR]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-$(mktemp -d)}"
mkdir -p "$work"
[[ -z "$(ls -A "$work")" ]] || { echo "walkthrough: $work is not empty" >&2; exit 2; }
export PATH="$root/.venv/bin:$PATH"
script="$work/.walkthrough.sh"
{
  echo 'set -euo pipefail -x'
  awk '/^<!-- walkthrough -->$/ { on = 1 } /^<!-- \/walkthrough -->$/ { on = 0 }
       on && /^```sh$/ { code = 1; next } code && /^```$/ { code = 0; next } code' \
    "$root/README.md"
} > "$script"
grep -q shoal "$script" || { echo "walkthrough: no blocks found in README.md" >&2; exit 2; }
cd "$work"
# its own session: the services it starts are one process group, stopped together
setsid bash "$script" &
leader=$!
stop() {
  kill -TERM -- "-$leader" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 -- "-$leader" 2>/dev/null || return 0; sleep 0.2; done
  kill -KILL -- "-$leader" 2>/dev/null || true
}
trap stop EXIT
wait "$leader"
