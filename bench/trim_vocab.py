"""What vocabulary trimming saves: size on disk, load time and peak memory, before and after.

    python bench/trim_vocab.py [--checkpoint runs/e5] [--corpus zh,en] [--trimmed DIR]

Trims the checkpoint with ``llmos compress trim-vocab`` (timed, in its own process) unless
--trimmed names an already trimmed copy, then measures both checkpoints the same way, each in a
fresh Python process per repeat (so one side's allocations never count for the other):
``import llmos``, ``llmos.load`` (timed), embed a few Chinese and English sentences, and report
``ru_maxrss`` after loading and at the end. The median over --repeats processes is printed. The
embeddings of both sides are compared too: identical for every sentence whose pieces the
corpora use. The CPU model comes from /proc/cpuinfo.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEXTS = [
    "我们今天去北京大学参观。",
    "这家酒店干净，服务热情，推荐！",
    "人工智能正在改变世界经济。",
    "The students learn about the history of the city.",
    "Customer service answered within five minutes.",
]

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import torch
torch.set_num_threads(int(sys.argv[2]))
import llmos
t1 = time.perf_counter()
m = llmos.load(sys.argv[1])
t2 = time.perf_counter()
loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
vectors = m.embed(json.loads(sys.argv[3]))
t3 = time.perf_counter()
print(json.dumps({
    "import_s": t1 - t0, "load_s": t2 - t1, "embed_s": t3 - t2, "loaded_mib": loaded,
    "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "vectors": vectors.tolist(),
}))
"""


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} logical CPUs"
    except OSError:
        pass
    return f"unknown CPU, {os.cpu_count()} logical CPUs"


def sizes(path: Path) -> dict[str, int]:
    files = {f.name: f.stat().st_size for f in path.iterdir() if f.is_file()}
    return {
        "weights": files.get("model.safetensors", 0),
        "tokenizer": files.get("tokenizer.json", 0),
        "total": sum(files.values()),
    }


def measure(path: Path, threads: int, repeats: int) -> dict:
    runs = []
    for _ in range(repeats):
        args = [sys.executable, "-c", CHILD, str(path), str(threads), json.dumps(TEXTS)]
        out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "vectors"}
    return med | {"vectors": runs[0]["vectors"], "sizes": sizes(path)}


def trim(checkpoint: Path, corpus: str, out: Path) -> float:
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "llmos", "compress", "trim-vocab", str(checkpoint)]
    subprocess.run([*cmd, "--corpus", corpus, "--out", str(out), "--quiet"], check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default="runs/e5", help="encoder checkpoint (default runs/e5)")
    ap.add_argument("--corpus", default="zh,en", help="corpora to trim on (default zh,en)")
    ap.add_argument("--trimmed", help="an already trimmed copy (skips trimming)")
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes per side")
    ap.add_argument("--threads", type=int, default=2, help="torch threads in the children")
    args = ap.parse_args()
    ckpt = Path(args.checkpoint)
    if not (ckpt / "config.json").is_file():
        sys.exit(f"{ckpt}: not a checkpoint (import one with `llmos convert --from-hf ...`)")
    print(f"CPU: {cpu_model()}; torch threads {args.threads}; median of {args.repeats} processes")
    with tempfile.TemporaryDirectory(prefix="trim-bench-") as tmp:
        trimmed = Path(args.trimmed) if args.trimmed else Path(tmp) / "trimmed"
        if not args.trimmed:
            seconds = trim(ckpt, args.corpus, trimmed)
            print(f"llmos compress trim-vocab {ckpt} --corpus {args.corpus}: {seconds:.1f} s")
        report = json.loads((trimmed / "trim_vocab.json").read_text())
        before = measure(ckpt, args.threads, args.repeats)
        after = measure(trimmed, args.threads, args.repeats)
    v = report["vocab"]
    print(f"vocabulary: {v['original']:,} -> {v['kept']:,} pieces")
    rows = [
        ("model.safetensors MB", lambda r: r["sizes"]["weights"] / 1e6),
        ("tokenizer.json MB", lambda r: r["sizes"]["tokenizer"] / 1e6),
        ("checkpoint MB", lambda r: r["sizes"]["total"] / 1e6),
        ("import s", lambda r: r["import_s"]),
        ("llmos.load s", lambda r: r["load_s"]),
        (f"embed {len(TEXTS)} texts s", lambda r: r["embed_s"]),
        ("peak RSS after load MiB", lambda r: r["loaded_mib"]),
        ("peak RSS at the end MiB", lambda r: r["peak_mib"]),
    ]
    print(f"{'':<26} {'original':>10} {'trimmed':>10} {'ratio':>7}")
    for name, get in rows:
        a, b = get(before), get(after)
        print(f"{name:<26} {a:>10.2f} {b:>10.2f} {a / b if b else float('nan'):>6.2f}x")
    same = sum(a == b for a, b in zip(before["vectors"], after["vectors"], strict=True))
    print(
        f"embeddings identical for {same} of {len(TEXTS)} sentences (a sentence with a piece "
        "the corpora never use is tokenized differently after trimming)"
    )


if __name__ == "__main__":
    main()
