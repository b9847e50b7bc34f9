"""XLNet permutation-LM training throughput: llmos against Hugging Face's ``XLNetLMHeadModel``,
same weights, same batches, same optimizer, fp32 (``--bf16``: both under bf16 autocast).

    python bench/xlnet_pretrain.py [--steps 10] [--rounds 3] [--batch 32] [--length 64]
                                   [--memory 64] [--threads 2]

The batches are the ones ``llmos pretrain --config configs/pretrain/xlnet-zh.yaml`` trains on:
rows of the packed Chinese corpus (``wordpiece-zh``), 1/6 of each segment predicted in spans,
a sampled factorisation order (``perm_mask``), the predicted positions (``target_mapping``,
(B, M, T)) and a memory of the previous segment. Each step on both sides: the memory pass
without gradient (HF: ``transformer(..., use_mems=True)``; llmos: ``transformer.memory``),
then forward, loss, backward and an AdamW step. Before timing, one batch in eval mode must give
the same loss on both sides (same weights, same batch, same math).

The sides alternate by rounds of ``--steps`` steps, so that a machine whose speed drifts
affects both alike. Throughput counts the tokens of the predicted segments (B x T a step);
the memory tokens are read too, by both, and not counted.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine

from llmos.checkpoint.hf import hf_xlnet_config
from llmos.checkpoint.hf_xlnet import xlnet_to_hf
from llmos.config.model import XLNetConfig
from llmos.data.corpus import load_tokenized
from llmos.data.datasets import resolve_corpus, resolve_tokenizer
from llmos.data.plm import pack_segments, plm_collate
from llmos.models.xlnet import XLNetLMHeadModel
from llmos.paths import llmos_home
from llmos.text.tokenizer import load_tokenizer, special_ids, xlnet_layout
from llmos.train.tasks.plm import plm_loss_sum


def batches(n: int, batch: int, length: int, memory: int) -> tuple[list[dict], int]:
    """``n`` training batches of the zh corpus and the vocabulary size."""
    tok = xlnet_layout(load_tokenizer(resolve_tokenizer("wordpiece-zh")))
    ids = special_ids(tok)
    corpus = load_tokenized(
        resolve_corpus("zh") / "train.txt",
        tok,
        llmos_home() / "cache" / "tokenized",
        whole_documents=True,
    )
    rows = pack_segments(corpus, ids["sep"], length, memory)
    specials = [i for i in ids.values() if i is not None]
    out = []
    for k in range(n):
        idx = torch.arange(k * batch, (k + 1) * batch).numpy()
        out.append(plm_collate(rows[idx], idx, specials, 0, 0, memory, sep_id=ids["sep"]))
    return out, tok.get_vocab_size()


def hf_loss(model: torch.nn.Module, b: dict) -> torch.Tensor:
    mems = None
    if "mem_ids" in b:
        with torch.no_grad():
            mems = model.transformer(b["mem_ids"], use_mems=True).mems
    logits = model(
        b["input_ids"],
        mems=mems,
        perm_mask=b["perm_mask"],
        target_mapping=b["target_mapping"],
        token_type_ids=b["token_type_ids"],
    ).logits
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), b["labels"].reshape(-1))


def ours_loss(model: torch.nn.Module, b: dict) -> torch.Tensor:
    return plm_loss_sum(model, b)[0] / (b["labels"] != -100).sum()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--length", type=int, default=64)
    p.add_argument("--memory", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--bf16", action="store_true", help="both sides under bf16 autocast (AMX / AVX512-BF16)"
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data, vocab = batches(args.steps * args.rounds + 1, args.batch, args.length, args.memory)
    cfg = XLNetConfig(
        vocab_size=vocab,
        hidden_size=256,
        num_layers=4,
        num_heads=4,
        intermediate_size=1024,
        mem_len=args.memory,
    )
    torch.manual_seed(0)
    ours = XLNetLMHeadModel(cfg)
    import transformers

    hf = transformers.XLNetLMHeadModel(hf_xlnet_config(cfg))
    hf.load_state_dict(xlnet_to_hf(ours.state_dict()))
    ours.eval(), hf.eval()
    with torch.no_grad():
        a, b = ours_loss(ours, data[0]).item(), hf_loss(hf, data[0]).item()
    assert abs(a - b) < 1e-4, (a, b)
    precision = "bf16 autocast" if args.bf16 else "fp32"
    print(f"machine: {machine()}, {args.threads} threads, torch {torch.__version__}, {precision}")
    print(
        f"model: hidden 256, 4 layers, vocab {vocab}; batch {args.batch} x ({args.memory} "
        f"memory + {args.length} tokens); same eval loss {a:.5f} / {b:.5f}"
    )
    sides = {"llmos": (ours, ours_loss), "hf": (hf, hf_loss)}
    optims = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, (m, _) in sides.items()}
    seconds = dict.fromkeys(sides, 0.0)
    for m, _ in sides.values():
        m.train()
    for name, (model, loss_fn) in sides.items():  # warm-up step, not timed
        loss_fn(model, data[0]).backward()
        optims[name].zero_grad(set_to_none=True)
    cast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16)
    for r in range(args.rounds):
        for name, (model, loss_fn) in sides.items():
            t = time.perf_counter()
            for s in range(args.steps):
                with cast:
                    loss = loss_fn(model, data[1 + r * args.steps + s])
                loss.backward()
                optims[name].step()
                optims[name].zero_grad(set_to_none=True)
            seconds[name] += time.perf_counter() - t
    tokens = args.batch * args.length * args.steps * args.rounds
    rate = {k: tokens / v for k, v in seconds.items()}
    print("| side | tokens/s | s/step |")
    print("|---|---:|---:|")
    for k in sides:
        print(f"| {k} | {rate[k]:,.0f} | {seconds[k] / (args.steps * args.rounds):.3f} |")
    print(f"llmos / hf throughput: {rate['llmos'] / rate['hf']:.2f}x")


if __name__ == "__main__":
    main()
