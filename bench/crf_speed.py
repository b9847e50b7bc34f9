"""The CRF's training cost against pytorch-crf: the same scores, the same batch, fp32.

    python bench/crf_speed.py                      # K = 4 (segmentation) and 176 (seg + POS)
    python bench/crf_speed.py --labels 176 --batch 16 --length 185 --threads 2

One training step of a tagger with a CRF spends, besides the encoder, the loss (log Z by the
forward algorithm, minus the gold path's score) and its backward pass. Timed in turns
(``llmos.compress.timing.compare_speed``, medians) on random emissions of the shape of a
People's Daily batch (16 windows of 128 pieces are ~185 characters):

- ``pytorch-crf``: ``torchcrf.CRF`` (0.7.2), the log-sum-exp over a (B, K, K) broadcast;
- ``llmos, log-sum-exp``: llmos's CRF before the exp-space recursion, run as it ran then: the
  log-sum-exp recursion twice, for log Z and for the gold path (``exact=True``);
- ``llmos``: :meth:`llmos.models.crf.CRF.nll` now.

All three get the same transitions, start and end scores (no constraints: pytorch-crf has
none) and must agree on the loss; the script prints the largest difference. Viterbi decoding
is timed the same way against ``torchcrf.CRF.decode``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torchcrf

from llmos.compress.timing import compare_speed
from llmos.models.crf import CRF

sys.path.insert(0, str(Path(__file__).parent))
from machine import machine


def one_case(K: int, B: int, T: int) -> None:
    torch.manual_seed(0)
    ours = CRF(K)
    ref = torchcrf.CRF(K, batch_first=True)
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_()
        ref.transitions.copy_(ours.transitions)
        ref.start_transitions.copy_(ours.start)
        ref.end_transitions.copy_(ours.end)
    em = (torch.randn(B, T, K) * 3).requires_grad_()
    lengths = torch.randint(T // 2, T + 1, (B,))
    lengths[0] = T
    mask = torch.arange(T)[None, :] < lengths[:, None]
    gold = torch.randint(0, K, (B, T))
    ignored = gold.masked_fill(~mask, -100)

    def before() -> torch.Tensor:
        other = torch.arange(K) != gold[..., None]
        only = em.masked_fill(mask[..., None] & other, -1e4)
        return ours.log_partition(em, mask, exact=True) - ours.log_partition(only, mask, exact=True)

    losses = {
        "pytorch-crf": lambda: -ref(em, gold, mask, reduction="none"),
        "llmos, log-sum-exp": before,
        "llmos": lambda: ours.nll(em, ignored, mask),
    }
    values = {name: fn().detach() for name, fn in losses.items()}
    diff = max(float((v - values["pytorch-crf"]).abs().max()) for v in values.values())

    def step(fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            fn().sum().backward()
            em.grad = None
            for p in (*ours.parameters(), *ref.parameters()):
                p.grad = None

        return run

    train = compare_speed({name: step(fn) for name, fn in losses.items()})
    with torch.inference_mode():
        decode = compare_speed(
            {"pytorch-crf": lambda: ref.decode(em, mask), "llmos": lambda: ours.decode(em, mask)}
        )
        same = all(
            row[m].tolist() == best
            for row, m, best in zip(ours.decode(em, mask), mask, ref.decode(em, mask), strict=True)
        )
    print(f"\nK = {K} labels, {B} rows of up to {T} tokens ({int(lengths.sum()):,} in all)")
    print(f"loss agrees with pytorch-crf to {diff:.2e} (largest per-row difference)")
    print("| work | implementation | ms (median) | pytorch-crf / it |")
    print("|---|---|---:|---:|")
    for name, s in train.seconds.items():
        ratio = train.ratio("pytorch-crf", name)
        print(f"| loss + backward | {name} | {s * 1e3:,.1f} | {ratio:.2f}x |")
    for name, s in decode.seconds.items():
        ratio = decode.ratio("pytorch-crf", name)
        print(f"| Viterbi decode | {name} | {s * 1e3:,.1f} | {ratio:.2f}x |")
    print(f"same best paths: {same}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--labels", type=int, nargs="+", default=[4, 176])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--length", type=int, default=185)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{machine()}, {args.threads} threads, torch {torch.__version__}, fp32")
    for K in args.labels:
        one_case(K, args.batch, args.length)


if __name__ == "__main__":
    main()
