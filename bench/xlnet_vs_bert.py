"""XLNet against BERT at equal compute: both pretrained on the Chinese corpus for the same
training time, then fine-tuned on sentiment-zh and ner-zh with the same recipes.

    python bench/xlnet_vs_bert.py [--minutes 15] [--out runs/equal-compute]

1. Calibration: ``configs/pretrain/bert-zh.yaml`` (MLM + NSP) and ``xlnet-zh.yaml``
   (permutation LM with a 64-token memory) share the sizes (hidden 256, 4 layers, 4 heads),
   the tokenizer (``wordpiece-zh``), the corpus and the batch (32 x 64 tokens). Each runs
   ``--cal-short`` and ``--cal-long`` steps, interleaved, and the difference gives its seconds
   per step without the fixed costs (setup, saving). So "the same time" is measured once, on
   the same machine in the same minutes, and does not depend on what else later shares the
   CPU.
2. Pretraining: each for ``minutes * 60 / (seconds per step)`` steps, the configs as shipped
   otherwise (learning rate, warmup, schedule).
3. Fine-tuning: ``configs/finetune/sentiment-zh.yaml`` and ``ner-zh.yaml`` from each
   checkpoint, unchanged (same steps, learning rates, selection), one seed.
4. The test-split scores, side by side; everything also goes to ``OUT/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine

from llmos.config import FinetuneConfig, PretrainConfig, load_config
from llmos.recipes.finetune import finetune
from llmos.recipes.pretrain import pretrain

ROOT = Path(__file__).resolve().parents[1]
PRETRAIN = {"bert": "configs/pretrain/bert-zh.yaml", "xlnet": "configs/pretrain/xlnet-zh.yaml"}
FINETUNE = {
    "sentiment": "configs/finetune/sentiment-zh.yaml",
    "ner": "configs/finetune/ner-zh.yaml",
}


def pretrain_run(kind: str, out: Path, name: str, steps: int, quiet: bool) -> tuple[float, dict]:
    """Seconds and the report of one pretraining run of ``steps`` steps."""
    over = [f"out_dir={out}", f"name={name}", f"train.max_steps={steps}"]
    if quiet:  # calibration: no validation, one save at the end
        over += ["train.eval_every=0", f"train.save_every={steps}", "train.progress=false"]
    else:
        every = max(steps // 5, 1)
        over += [f"train.eval_every={every}", f"train.save_every={every}"]
    cfg = load_config(PretrainConfig, ROOT / PRETRAIN[kind], over)
    t = time.perf_counter()
    result = pretrain(cfg)
    return time.perf_counter() - t, result.report


def calibrate(out: Path, short: int, long: int) -> dict[str, float]:
    """Seconds per pretraining step of each model, interleaved runs of ``short`` and ``long``
    steps (the fixed costs cancel in the difference)."""
    times: dict[str, dict[int, float]] = {k: {} for k in PRETRAIN}
    for kind in PRETRAIN:  # warm-up: corpora tokenized and cached, libraries loaded
        pretrain_run(kind, out / "cal", f"{kind}-warmup", 2, True)
    for steps in (short, long):
        for kind in PRETRAIN:
            times[kind][steps] = pretrain_run(kind, out / "cal", f"{kind}-{steps}", steps, True)[0]
            logging.info("calibration: %s %d steps in %.1f s", kind, steps, times[kind][steps])
    return {k: (t[long] - t[short]) / (long - short) for k, t in times.items()}


def finetune_run(task: str, init: Path, out: Path, name: str) -> dict:
    cfg = load_config(
        FinetuneConfig,
        ROOT / FINETUNE[task],
        [f"init={init}", f"out_dir={out}", f"name={name}"],
    )
    result = finetune(cfg)
    return json.loads((result.run_dir / "report.json").read_text())["test"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=15.0)
    p.add_argument("--out", default="runs/equal-compute")
    p.add_argument("--cal-short", type=int, default=10)
    p.add_argument("--cal-long", type=int, default=40)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    per_step = calibrate(out, args.cal_short, args.cal_long)
    steps = {k: int(args.minutes * 60 / s) for k, s in per_step.items()}
    logging.info("seconds per step %s -> steps %s", per_step, steps)
    summary: dict = {
        "machine": machine(),
        "threads": args.threads,
        "minutes": args.minutes,
        "seconds_per_step": per_step,
        "steps": steps,
    }
    for kind in PRETRAIN:
        seconds, report = pretrain_run(kind, out, f"{kind}-zh", steps[kind], False)
        summary[kind] = {"pretrain_seconds": seconds, "pretrain_valid": report["valid"]}
        init = out / f"{kind}-zh" / "checkpoint"
        for task in FINETUNE:
            summary[kind][task] = finetune_run(task, init, out, f"{kind}-{task}")
        (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    print(f"machine: {summary['machine']}, {args.threads} threads, fp32")
    print(f"budget: {args.minutes:g} min of pretraining each (calibrated steps: {steps})")
    # BERT's hidden-target perplexity ([MASK] inputs only) is what XLNet's compares with:
    # every XLNet target is hidden, where BERT is shown a tenth of its targets
    head = "model | s/step | steps | valid ppl (hidden targets) | sentiment-zh acc | macro-F1"
    print(f"| {head} | ner-zh F1 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind in PRETRAIN:
        s, n = summary[kind]["sentiment"], summary[kind]["ner"]
        v = summary[kind]["pretrain_valid"]
        ppl = f"{v['perplexity']:.1f} ({v.get('masked_perplexity', v['perplexity']):.1f})"
        print(
            f"| {kind} | {per_step[kind]:.3f} | {steps[kind]} | {ppl} | {s['accuracy']:.4f} | "
            f"{s['macro_f1']:.4f} | {n['f1']:.4f} |"
        )
    b, x = summary["bert"], summary["xlnet"]
    acc = x["sentiment"]["accuracy"] - b["sentiment"]["accuracy"]
    f1 = x["ner"]["f1"] - b["ner"]["f1"]
    print(f"xlnet - bert: sentiment accuracy {acc:+.4f}, ner F1 {f1:+.4f}")


if __name__ == "__main__":
    main()
