"""Benchmark: ``shoal publish`` of a 2 GiB multi-file model against ``openssl dgst -sha256``.

Both run in the same process tree on the same files with a warm page cache,
alternating, several rounds; medians are compared. Also measured: bytes shoal
reads per byte of model (``rchar`` from /proc/self/io around an in-process
publish), which is 1.0 when every byte is read once. Writes JSON.

    .venv/bin/python bench/publish.py [--size-mib 2048] [--rounds 3] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shoal.publishing.publish import PublishOptions, publish  # noqa: E402
from shoal.publishing.sources import directory_source  # noqa: E402
from shoal.ref import ModelRef  # noqa: E402
from shoal.testing import write_blob  # noqa: E402

SHOAL = Path(sys.executable).parent / "shoal"


def layout(total_mib: int) -> dict[str, int]:
    """A model shaped like real ones: one big weights file, shards, small files."""
    mib = 1 << 20
    shards = {f"shards/model-{i:05d}-of-00004.safetensors": total_mib * mib // 8 for i in range(4)}
    small = {"config.json": 1_500, "tokenizer.json": 2_000_000, "generation_config.json": 0}
    big = total_mib * mib - sum(shards.values()) - sum(small.values())
    return {"model.gguf": big, **shards, **small}


def rchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise RuntimeError("no rchar in /proc/self/io")


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=ROOT / "bench" / "results" / "publish-work")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "publish.json")
    args = ap.parse_args()

    model = args.workdir / "model"
    files = layout(args.size_mib)
    total = sum(files.values())
    if (
        not model.exists()
        or sum(p.stat().st_size for p in model.rglob("*") if p.is_file()) != total
    ):
        shutil.rmtree(model, ignore_errors=True)
        print(f"writing a {args.size_mib} MiB model to {model} ...", file=sys.stderr)
        for i, (rel, size) in enumerate(files.items()):
            write_blob(model / rel, size, seed=i)
    paths = [str(model / rel) for rel in sorted(files)]
    subprocess.run(["cat", *paths], check=True, stdout=subprocess.DEVNULL)  # warm the cache

    out = args.workdir / "published"
    openssl_s, shoal_s = [], []
    for r in range(args.rounds):
        openssl_s.append(timed(["openssl", "dgst", "-sha256", *paths]))
        shutil.rmtree(out, ignore_errors=True)
        shoal_s.append(
            timed([str(SHOAL), "publish", str(model), "--name", "bench:2g", "--out", str(out)])
        )
        print(
            f"round {r + 1}: openssl {openssl_s[-1]:.2f} s, shoal publish {shoal_s[-1]:.2f} s",
            file=sys.stderr,
        )

    shutil.rmtree(out, ignore_errors=True)
    before, t = rchar(), time.perf_counter()
    result = publish(
        directory_source(model), PublishOptions(ref=ModelRef.parse("bench:2g"), out=out)
    )
    inproc_s = time.perf_counter() - t
    read_per_byte = (rchar() - before) / total
    shutil.rmtree(out, ignore_errors=True)

    o, s = statistics.median(openssl_s), statistics.median(shoal_s)
    report = {
        "benchmark": "publish",
        "model_bytes": total,
        "files": len(files),
        "chunk_size": result.manifest.chunk_size,
        "chunks": result.manifest.num_chunks,
        "torrent": "hybrid v1+v2",
        "rounds": args.rounds,
        "baseline": "openssl dgst -sha256 over the same files (one process, warm cache)",
        "openssl_s": openssl_s,
        "shoal_publish_s": shoal_s,
        "openssl_median_s": round(o, 3),
        "shoal_publish_median_s": round(s, 3),
        "ratio": round(s / o, 3),
        "shoal_in_process_s": round(inproc_s, 3),
        "ratio_in_process": round(inproc_s / o, 3),
        "bytes_read_per_model_byte": round(read_per_byte, 4),
        "goal_ratio": 2.2,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "openssl": subprocess.run(
                ["openssl", "version"], capture_output=True, text=True
            ).stdout.strip(),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
