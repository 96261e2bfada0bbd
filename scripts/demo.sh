#!/usr/bin/env bash
# The main job, for now: generate a sample model and publish it (manifest + hybrid torrent).
# The local swarm demo replaces this once the coordinator, seeder and agent exist.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
out="${SHOAL_DEMO_DIR:-out/demo}"
rm -rf "$out"
.venv/bin/python -c "import sys; from pathlib import Path; from shoal.testing import write_model_dir; write_model_dir(Path(sys.argv[1]))" "$out/sample-model"
.venv/bin/shoal publish "$out/sample-model" --name sample:demo --out "$out/published" \
  --tracker http://127.0.0.1:8470/announce --web-seed http://127.0.0.1:8471/webseed/
echo
echo "manifest summary ($out/published/manifest.json):"
.venv/bin/python - "$out/published/manifest.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"  ref {m['ref']}  digest {m['digest']}  chunk_size {m['chunk_size']}")
for f in m["files"]:
    print(f"  {f['path']:<32} {f['size']:>12} bytes  {len(f['chunks']):>4} chunks  sha256 {f['sha256'][:16]}...")
PY
