"""MLM pretraining throughput: llmos against Hugging Face, same model, text, batch, precision.

    python bench/pretrain_throughput.py [--corpus zh] [--tokenizer wordpiece-zh] [--steps 20]

Both sides start from the same random weights (ours copied into ``BertForMaskedLM``) and train
with AdamW on the same corpus lines for the same number of steps at the same batch size:

- hf:   one example per corpus line (truncated to --max-length), ``DataCollatorForLanguageModeling``
        (15 %, 80/10/10) with dynamic padding, ``BertForMaskedLM`` (MLM head on every position);
- ours: the same lines packed into whole-sentence sequences up to --max-length, length-bucketed
        batches, dynamic masking, the MLM head on masked positions only.

Each side runs in its own subprocess so that its peak resident memory (ru_maxrss) is its own.
Throughput counts real tokens (padding excluded). MFU divides the useful training FLOP/s by the
fp32 matmul peak measured here in the same run.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch

from llmos.checkpoint.hf import bert_to_hf, hf_bert_config
from llmos.config.model import BertConfig
from llmos.data.corpus import read_documents, tokenize_documents
from llmos.data.datasets import resolve_corpus, resolve_tokenizer
from llmos.data.mlm import MLMBatches, collate
from llmos.models.bert import BertForPreTraining
from llmos.text.tokenizer import load_tokenizer
from llmos.train.tasks.mlm import special_ids_for_mlm


def matmul_peak(threads: int, n: int = 2048, reps: int = 20) -> float:
    """Measured fp32 matmul FLOP/s at this thread count (best of a few timed runs)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t))
    return best


def train_flops_per_token(cfg: BertConfig, seq_len: float, head_fraction: float) -> float:
    """Forward+backward FLOPs per real token (3x forward): layers, attention, MLM head on the
    given fraction of positions. Embedding lookups and norms are not counted."""
    C, F, L, V = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers, cfg.vocab_size
    layer = 2 * (4 * C * C + 2 * C * F) + 4 * seq_len * C
    head = 2 * (C * C + C * V) * head_fraction
    return 3 * (L * layer + head)


def load_lines(args: argparse.Namespace, tokenizer) -> tuple[list[list[str]], list[str]]:
    docs = read_documents(resolve_corpus(args.corpus) / "train.txt", max_documents=args.documents)
    return docs, [s for d in docs for s in d]


def run_side(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    tokenizer = load_tokenizer(resolve_tokenizer(args.tokenizer))
    sp = special_ids_for_mlm(tokenizer)
    cfg = BertConfig(
        vocab_size=sp.vocab_size,
        hidden_size=args.hidden,
        num_layers=args.layers,
        num_heads=args.hidden // 64,
        intermediate_size=4 * args.hidden,
        max_position=512,
    )
    torch.manual_seed(0)
    ours = BertForPreTraining(cfg)
    docs, lines = load_lines(args, tokenizer)
    steps = args.warmup + args.steps
    if args.side == "ours":
        model = ours
        corpus = tokenize_documents(docs, tokenizer)
        stream = iter(
            MLMBatches(
                corpus,
                sp,
                objective="mlm",
                max_length=args.max_length,
                short_seq_prob=0.0,
                mask_prob=0.15,
                global_batch=args.batch_size,
                seed=0,
            )
        )

        def step_fn() -> tuple[int, int]:
            epoch, insts = next(stream)
            b = collate(insts, sp, 0.15, 0, epoch)
            out = model(b["input_ids"], None, b["attention_mask"], b["mlm_positions"])
            loss = torch.nn.functional.cross_entropy(out.mlm_logits, b["mlm_labels"])
            loss.backward()
            return int(b["num_tokens"]), b["input_ids"].numel()
    else:
        import transformers

        model = transformers.BertForMaskedLM(hf_bert_config(cfg))
        sd = {
            k: v
            for k, v in bert_to_hf(ours.state_dict()).items()
            # BertForMaskedLM has neither the NSP head nor the pooler
            if not k.startswith(("cls.seq_relationship", "bert.pooler"))
        }
        missing, unexpected = model.load_state_dict(sd, strict=False)
        assert not unexpected and all("position_ids" in k for k in missing), (missing, unexpected)
        hf_tok = transformers.PreTrainedTokenizerFast(
            tokenizer_object=tokenizer,
            pad_token="[PAD]",
            mask_token="[MASK]",
            cls_token="[CLS]",
            sep_token="[SEP]",
            unk_token="[UNK]",
        )
        collator = transformers.DataCollatorForLanguageModeling(hf_tok, mlm_probability=0.15)
        enc = tokenizer.encode_batch(lines)
        examples = [
            {
                "input_ids": e.ids[: args.max_length - 1] + e.ids[-1:]
                if len(e.ids) > args.max_length
                else e.ids
            }
            for e in enc
        ]
        order = np.random.default_rng(0).permutation(len(examples))  # HF Trainer's random sampler
        pos = [0]

        def step_fn() -> tuple[int, int]:
            idx = order[pos[0] : pos[0] + args.batch_size]
            pos[0] += args.batch_size
            b = collator([examples[i] for i in idx])
            out = model(
                input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]
            )
            out.loss.backward()
            return int(b["attention_mask"].sum()), b["input_ids"].numel()

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
    real = padded = 0
    t0 = 0.0
    for i in range(steps):
        if i == args.warmup:
            t0 = time.perf_counter()
            real = padded = 0
        r, p = step_fn()
        opt.step()
        opt.zero_grad(set_to_none=True)
        real, padded = real + r, padded + p
    elapsed = time.perf_counter() - t0
    seq_len = padded / (args.steps * args.batch_size)
    head_frac = 0.15 if args.side == "ours" else 1.0  # the FLOPs each side executes on real tokens
    flops = train_flops_per_token(cfg, seq_len, head_frac) * real
    return {
        "side": args.side,
        "tokens_per_s": real / elapsed,
        "padding": 1 - real / padded,
        "useful_flops_per_s": flops / elapsed,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "vocab_size": cfg.vocab_size,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", default="zh")
    p.add_argument("--tokenizer", default="wordpiece-zh")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--documents", type=int, default=3000, help="corpus documents to read")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--side", choices=["ours", "hf"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.side:
        print(json.dumps(run_side(args)))
        return
    argv = [a for a in sys.argv[1:]]
    res = {}
    for side in ("hf", "ours"):
        out = subprocess.run(
            [sys.executable, __file__, *argv, "--side", side],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode:
            sys.exit(f"{side} side failed:\n{out.stderr[-3000:]}")
        res[side] = json.loads(out.stdout.strip().splitlines()[-1])
    peak = matmul_peak(args.threads)
    print(
        f"model: {args.layers} layers, hidden {args.hidden}, vocab {res['ours']['vocab_size']}, "
        f"{res['ours']['params_m']:.1f}M params; batch {args.batch_size}, max length "
        f"{args.max_length}, "
        f"fp32, {args.threads} threads; fp32 matmul peak {peak / 1e9:.1f} GFLOP/s"
    )
    print(f"{'side':<6}{'real tok/s':>12}{'padding':>9}{'MFU':>7}{'peak RSS MB':>13}")
    for side in ("hf", "ours"):
        r = res[side]
        mfu = r["useful_flops_per_s"] / peak
        print(
            f"{side:<6}{r['tokens_per_s']:>12,.0f}{r['padding']:>9.1%}{mfu:>7.1%}"
            f"{r['peak_rss_mb']:>13,.0f}"
        )
    print(
        f"speedup ours/hf: {res['ours']['tokens_per_s'] / res['hf']['tokens_per_s']:.2f}x; "
        f"peak memory ours/hf: {res['ours']['peak_rss_mb'] / res['hf']['peak_rss_mb']:.2f}"
    )


if __name__ == "__main__":
    main()
