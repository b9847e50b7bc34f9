"""Sentence-embedding throughput: llmos against sentence-transformers ``encode``, the same
all-MiniLM-L6-v2 weights, the same real sentences.

    python bench/embed_throughput.py --checkpoint runs/minilm

The sentences are the English sentiment set's train and test texts (real, variable length), in
dataset order. sentence-transformers loads the packaged model directory (no hub access) and sorts by
length itself; llmos sorts by length too and runs its padding-free encoder. Both batch 32, fp32,
normalized mean-pooled vectors, --threads threads, timed in turns (a warm-up pass, then the median
of --repeats rounds: ``llmos.compress.timing.compare_speed``). Reported: sentences and real tokens
per second, the ratio, and the cosine between the two sides' vectors (min and mean over all
sentences).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

import numpy as np
import torch

import llmos
from llmos.compress.timing import compare_speed
from llmos.data.datasets import dataset_files, packaged_model_dir
from llmos.data.readers import read_classification


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True, help="the imported MiniLM checkpoint")
    ap.add_argument("--max-texts", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bf16", action="store_true", help="also time llmos with bf16 weights")
    ap.add_argument(
        "--also",
        nargs="*",
        default=[],
        metavar="DIR",
        help="more llmos checkpoints of the same model to time (e.g. quantized ones)",
    )
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    from sentence_transformers import SentenceTransformer

    files = dataset_files("sentiment-en")
    texts = [r.text for s in ("train", "test") for r in read_classification(files[s]).rows]
    texts = texts[: args.max_texts]
    ours = llmos.load(args.checkpoint)
    st = SentenceTransformer(str(packaged_model_dir("all-MiniLM-L6-v2")), device="cpu")
    tokens = sum(len(e.ids) for e in ours.tokenizer.encode_batch(texts))

    def run_ours() -> np.ndarray:
        return ours.embed(texts, batch_size=32)

    def run_st() -> np.ndarray:
        return st.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)

    outs: dict[str, np.ndarray] = {}  # each side's vectors, from its last pass

    def keep(name: str, fn: Callable[[], np.ndarray]) -> Callable[[], None]:
        return lambda: outs.__setitem__(name, fn())

    # A warm-up pass each, then the two in turns; the medians.
    sec = compare_speed(
        {"st": keep("st", run_st), "llmos": keep("llmos", run_ours)}, rounds=args.repeats
    ).seconds
    t_st, t_ours = sec["st"], sec["llmos"]
    cos = (outs["st"] * outs["llmos"]).sum(1)
    print(
        f"{len(texts)} sentences, {tokens:,} tokens (with [CLS]/[SEP]), batch 32, "
        f"{args.threads} threads, torch {torch.__version__}"
    )
    print(f"{'side':<22} {'sentences/s':>12} {'tokens/s':>10}")
    for name, secs in (("sentence-transformers", t_st), ("llmos", t_ours)):
        print(f"{name:<22} {len(texts) / secs:>12,.1f} {tokens / secs:>10,.0f}")
    print(f"llmos / sentence-transformers: {t_st / t_ours:.2f}x")
    print(f"cosine llmos vs sentence-transformers: min {cos.min():.6f}, mean {cos.mean():.6f}")
    variants = [(d, llmos.load(d)) for d in args.also]
    if args.bf16:
        variants.append(("llmos bf16", llmos.load(args.checkpoint, precision="bf16")))
    for name, pipe in variants:
        # In turns with sentence-transformers again.
        sec = compare_speed(
            {"st": run_st, name: keep(name, lambda pipe=pipe: pipe.embed(texts, batch_size=32))},
            rounds=args.repeats,
        ).seconds
        mine, peer = sec[name], sec["st"]
        c = (outs[name] * outs["llmos"]).sum(1)
        print(
            f"{name}: {len(texts) / mine:,.1f} sentences/s, {peer / mine:.2f}x "
            f"sentence-transformers (same run), {t_ours / mine:.2f}x llmos fp32; cosine to llmos "
            f"fp32 min {c.min():.4f} mean {c.mean():.4f}"
        )


if __name__ == "__main__":
    main()
