"""``llmos write adapter`` and ``llmos write continue``: continuation in a writer's own style.

    llmos write adapter --base runs/gpt-zh/checkpoint --out runs/my-style chapter*.txt
    llmos write adapter ... --resume                  # a cut-off run picks up where it stopped
    llmos write continue --adapter runs/my-style/checkpoint "却说曹操"
    llmos write continue "却说曹操"                     # the base model alone

An adapter is a LoRA adapter (:mod:`llmos.models.lora`, PEFT's file format) of a GPT
checkpoint, trained on the given text files (one document each) through the shared training
loop; only the adapter is written (a few hundred kB), next to a record of its base.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from llmos.errors import LlmosError


def add_style(sp: Any) -> None:
    """The two subcommands, under ``llmos write``."""
    p = sp.add_parser(
        "adapter", help="train a LoRA adapter of a GPT on your own text files (your style)"
    )
    p.add_argument("files", nargs="+", type=Path, help="UTF-8 text files, one document each")
    p.add_argument("--base", default="runs/gpt-zh/checkpoint", help="the GPT checkpoint")
    p.add_argument("--out", type=Path, required=True, help="the adapter's run directory")
    p.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    p.add_argument("--rank", type=int, default=8, help="LoRA rank (default 8; alpha = 2 x rank)")
    p.add_argument("--lr", type=float, default=4e-3, help="peak learning rate (default 4e-3)")
    p.add_argument("--mlp", action="store_true", help="adapt the MLP too (default: attention only)")
    p.add_argument("--resume", action="store_true", help="continue a cut-off run in --out")
    p.set_defaults(func=_adapter)

    p = sp.add_parser("continue", help="continue a text with a GPT (and your adapter)")
    p.add_argument("text", help="the text to continue")
    p.add_argument("--model", default="runs/gpt-zh/checkpoint", help="the GPT checkpoint")
    p.add_argument("--adapter", type=Path, help="an adapter directory (llmos write adapter)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--sample", action="store_true", help="top-p sampling instead of greedy")
    p.add_argument("--seed", type=int, help="the sampling seed")
    p.set_defaults(func=_continue)


def _adapter(args: argparse.Namespace) -> int:
    from llmos.models.lora import GPT_ALL_TARGETS, GPT_TARGETS, LoraConfig
    from llmos.train.adapter import AdapterRun, train_adapter

    texts = []
    for path in args.files:
        try:
            texts.append(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            raise LlmosError(f"{path}: cannot read it as UTF-8 text ({e})") from None
    targets = GPT_ALL_TARGETS if args.mlp else GPT_TARGETS
    run = AdapterRun(
        lora=LoraConfig(rank=args.rank, alpha=2.0 * args.rank, targets=targets),
        max_steps=args.steps,
        lr=args.lr,
    )
    result = train_adapter(args.base, texts, args.out, run, resume=args.resume)
    summary = result.summary()
    print(f"adapter: {result.adapter}")
    print(
        f"parameters: {summary['parameters']:,} ({100 * summary['size_ratio']:.2f} % of the "
        f"base's {summary['base_parameters']:,})"
    )
    print(
        f"held-out perplexity: base {summary['base_perplexity']:.1f} -> adapter "
        f"{summary['perplexity']:.1f}"
    )
    print(f"loss plot: {args.out / 'loss.png'}")
    return 0


def _continue(args: argparse.Namespace) -> int:
    from llmos.inference.generator import GeneratorPipeline
    from llmos.inference.load import load_pipeline

    pipe = load_pipeline(args.model)
    if not isinstance(pipe, GeneratorPipeline):
        raise LlmosError(f"{args.model}: continuation needs a GPT checkpoint")
    adapter = None
    if args.adapter is not None:
        pipe.add_adapter("user", args.adapter)
        adapter = "user"
    options: dict[str, Any] = {"max_new_tokens": args.max_new_tokens}
    if args.sample:
        options |= {"strategy": "sample", "top_p": 0.9, "temperature": 0.8, "seed": args.seed}
    print(args.text + pipe.generate(args.text, raw=True, adapter=adapter, **options))
    return 0
