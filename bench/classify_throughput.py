"""Classification throughput: llmos against Hugging Face ``BertForSequenceClassification``, the
same fine-tuned weights, the same batches of real variable-length text.

    python bench/classify_throughput.py --checkpoint runs/sentiment-zh/checkpoint \
        --dataset sentiment-zh

The test split's texts are tokenized once (truncated to the checkpoint's max_length) and cut into
batches of --batch-size either in dataset order (as requests arrive: much padding) or sorted by
length. Both sides run every batch with its padding mask, fp32, in inference mode, --threads
threads, timed in turns (a warm-up pass, then the median of --repeats rounds:
``llmos.compress.timing.compare_speed``). llmos runs its projections and feed-forward layers on the
real tokens only; HF computes every padded position. Reported: real tokens per second (padding
excluded), the ratio, the padding share of each ordering, whether the predicted labels are
identical, and each side's useful FLOP/s (the FLOPs of the real tokens only: the layers' matrix
products plus attention over each text's own length) as a share of this machine's fp32
matrix-product peak, measured in the same run (``torch.mm`` of 2048 x 2048 matrices, best of 10).

A classifier with a mean-pooling head (``pooling: mean``, e.g. the multilingual-e5 fine-tunes)
has no ``BertForSequenceClassification`` counterpart; its HF side is ``BertModel`` (no pooler)
with the same weights, the mean of the last layer over the mask, and the same linear head.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
import torch

from llmos.checkpoint.hf import bert_to_hf, hf_bert_config
from llmos.compress.timing import compare_speed
from llmos.data.batching import length_sorted_batches, pad_batch
from llmos.data.datasets import dataset_files
from llmos.data.readers import read_classification
from llmos.inference.classify import encode_texts
from llmos.inference.load import load_pipeline


def matmul_peak(n: int = 2048, repeats: int = 10) -> float:
    """The machine's measured fp32 matrix-product rate in FLOP/s (best of ``repeats``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * n**3 / best


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def useful_flops(cfg, lengths: np.ndarray, num_labels: int) -> float:
    """Forward FLOPs of the real tokens: per layer the qkv, output and feed-forward products
    (2 * params per token) plus attention scores and weighted sum (4 * L^2 * C per text)."""
    C, inter = cfg.hidden_size, cfg.intermediate_size
    per_token = cfg.num_layers * 2 * (4 * C * C + 2 * C * inter)
    attention = cfg.num_layers * 4 * C * float((lengths.astype(np.float64) ** 2).sum())
    pooler = len(lengths) * 2 * (C * C + C * num_labels)
    return per_token * float(lengths.sum()) + attention + pooler


class MeanPooledHF(torch.nn.Module):
    """HF ``BertModel`` + mean over the mask + the checkpoint's linear head."""

    def __init__(self, encoder: torch.nn.Module, head: torch.nn.Linear) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, input_ids, token_type_ids, attention_mask):
        h = self.encoder(
            input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask
        ).last_hidden_state
        m = attention_mask[..., None].to(h.dtype)
        return SimpleNamespace(logits=self.head((h * m).sum(1) / m.sum(1)))


def hf_classifier(pipe, num_labels: int) -> torch.nn.Module:
    """The same weights in transformers: ``BertForSequenceClassification`` for a [CLS] head,
    :class:`MeanPooledHF` for a mean-pooling one."""
    from transformers import BertForSequenceClassification, BertModel

    hf_cfg = hf_bert_config(pipe.config)
    state = bert_to_hf(pipe.model.state_dict())
    if pipe.model.pooling == "cls":
        hf_cfg.num_labels = num_labels
        hf = BertForSequenceClassification(hf_cfg).eval()
        hf.load_state_dict(state)
        return hf
    encoder = BertModel(hf_cfg, add_pooling_layer=False).eval()
    encoder.load_state_dict(
        {k.removeprefix("bert."): v for k, v in state.items() if k.startswith("bert.")}
    )
    head = torch.nn.Linear(pipe.config.hidden_size, num_labels)
    head.load_state_dict({"weight": state["classifier.weight"], "bias": state["classifier.bias"]})
    return MeanPooledHF(encoder, head.eval()).eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--limit", type=int, help="the first N test texts only (quicker runs)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pipe = load_pipeline(args.checkpoint)
    labels = pipe.require_task("classification")
    cfg = pipe.config
    hf = hf_classifier(pipe, len(labels))
    rows = read_classification(dataset_files(args.dataset)["test"]).rows[: args.limit]
    ids, types, _ = encode_texts(
        pipe.tokenizer, [r.text for r in rows], None, pipe.checkpoint.max_length
    )
    pad = pipe._ids["pad"] or 0
    lengths = np.array([len(x) for x in ids])
    print(
        f"{args.dataset} test: {len(ids)} texts, {lengths.sum():,} tokens "
        f"(mean {lengths.mean():.0f}, max {lengths.max()}), batch {args.batch_size}, "
        f"{args.threads} threads"
    )
    peak = matmul_peak()
    flops = useful_flops(cfg, lengths, len(labels))
    print(
        f"measured fp32 matmul peak {peak / 1e9:.1f} GFLOP/s; useful work {flops / 1e9:.1f} GFLOP"
    )
    header = ("order", "padding", "hf tok/s", "llmos tok/s", "x hf", "same labels", "hf MFU")
    print("{:<10} {:>8} {:>10} {:>12} {:>6} {:>12} {:>7} {:>9}".format(*header, "llmos MFU"))
    outs: dict[str, list[int]] = {}  # each side's predicted labels, from its last pass

    def keep(name: str, fn: Callable[[], list[int]]) -> Callable[[], None]:
        return lambda: outs.__setitem__(name, fn())

    size = args.batch_size
    for order_name, index_batches in (
        ("dataset", [np.arange(s, min(s + size, len(ids))) for s in range(0, len(ids), size)]),
        ("sorted", length_sorted_batches(lengths, size)),
    ):
        batches = [
            pad_batch([ids[i] for i in idx], [types[i] for i in idx], pad) for idx in index_batches
        ]
        padded = sum(b["input_ids"].numel() for b in batches)

        def run_ours(batches: list = batches) -> list[int]:
            out = []
            with torch.inference_mode():
                for b in batches:
                    logits = pipe.model(b["input_ids"], b["token_type_ids"], b["attention_mask"])
                    out += logits.argmax(-1).tolist()
            return out

        def run_hf(batches: list = batches) -> list[int]:
            out = []
            with torch.inference_mode():
                for b in batches:
                    mask = b["attention_mask"]
                    mask = torch.ones_like(b["input_ids"]) if mask is None else mask
                    logits = hf(
                        input_ids=b["input_ids"],
                        token_type_ids=b["token_type_ids"],
                        attention_mask=mask,
                    ).logits
                    out += logits.argmax(-1).tolist()
            return out

        # Warm-up, then hf and llmos in turns; the medians.
        sec = compare_speed(
            {"hf": keep("hf", run_hf), "llmos": keep("llmos", run_ours)}, rounds=args.repeats
        ).seconds
        t_hf, t_ours = sec["hf"], sec["llmos"]
        real = lengths.sum()
        share = 1 - real / padded
        print(
            f"{order_name:<10} {share:>8.1%} {real / t_hf:>10,.0f} {real / t_ours:>12,.0f} "
            f"{t_hf / t_ours:>6.2f} {outs['hf'] == outs['llmos']!s:>12} "
            f"{flops / t_hf / peak:>7.1%} {flops / t_ours / peak:>9.1%}"
        )


if __name__ == "__main__":
    main()
