"""The support desk's out-of-domain gate (``FewShotConfig.in_domain``): how near a message must
be to an intent's centroid to have an intent at all, chosen on valid, measured on test.

    python bench/support_gate.py                     # zh and en, the make-run NLU models
    python bench/support_gate.py --lang zh --threads 1

The desk's intent head has no "none of these", so a hotel review read by the Chinese head
gets HassLightSet often enough to start its form. The gate compares the message's vector
(``runs/e5-zh``, the knowledge base's encoder, as the desk embeds it) with every centroid the
desk keeps: the domain file's few-shot intents and the head's own intents (a few training
utterances each, from ``task.json``), as ``SupportService._few_shot`` builds them. Per
language and split:

- the cosine to the nearest centroid of the intents' utterances (in the domain), of the
  sentiment reviews and of the FAQ questions (out of it; up to 600 of each, seeded);
- ``bench/support_nlu.py``'s scripted form dialogues (the demo domain's forms from the
  intents' utterances, whole and with the required slot cut out) with the head's intent
  dropped below each threshold of a grid.

Valid chooses the largest threshold at which no scripted form dialogue is lost (``--tolerance``
points below no gate, default 0); test reports every threshold. Results go to docs/BENCHMARKS.md
("Messages outside the desk's domain").
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine
from support_nlu import Reader, form_scripts, jsonl

import llmos
from llmos.apps.support.dialogue import PolicyConfig
from llmos.apps.support.domain import demo_domain
from llmos.apps.support.local import PipelineEmbedder, PipelineNlu
from llmos.apps.support.service import SupportService
from llmos.paths import data_dir
from llmos.store.db import Store

GRID = {
    "zh": (0.88, 0.89, 0.9, 0.905, 0.91, 0.915, 0.92),
    "en": (0.83, 0.84, 0.85, 0.86, 0.865, 0.87, 0.875, 0.88),
}
SAMPLE = 600


def groups(lang: str, split: str) -> dict[str, list[str]]:
    base = data_dir() / "tasks"
    rng = random.Random(0)
    intents = [r["text"] for r in jsonl(base / f"intent-{lang}" / f"{split}.jsonl")]
    lines = (base / f"sentiment-{lang}" / f"{split}.tsv").read_text(encoding="utf-8")
    reviews = [line.split("\t")[0] for line in lines.splitlines()[1:]]
    questions = [r["question"] for r in jsonl(base / f"qa-{lang}" / f"{split}.jsonl")]
    out = {"intent utterances": intents, "reviews": reviews, "FAQ questions": questions}
    return {g: rng.sample(v, min(SAMPLE, len(v))) for g, v in out.items()}


def run_lang(lang: str, nlu: str, encoder: str, tolerance: float) -> None:
    work = Path(tempfile.mkdtemp(prefix="llmos-bench-gate-"))
    store = Store(f"sqlite:///{work / 'store.db'}")
    embed = PipelineEmbedder(encoder)
    svc = SupportService(
        store, embed, work / "indexes", nlu=PipelineNlu({lang: nlu}), domain=demo_domain()
    )
    few = svc._few_shot(lang)
    assert few is not None, "the demo domain has few-shot intents"
    read = Reader(llmos.load(nlu))
    near: dict[str, float] = {}

    def nearest(texts: list[str]) -> np.ndarray:
        todo = [t for t in dict.fromkeys(texts) if t not in near]
        for i in range(0, len(todo), 64):
            chunk = todo[i : i + 64]
            for t, v in zip(chunk, embed(chunk, "query"), strict=True):
                near[t] = few.nearest(v)
        return np.array([near[t] for t in texts])

    def success(split: str, gate: float | None) -> tuple[float, float, float, int, int]:
        rows = jsonl(data_dir() / "tasks" / f"intent-{lang}" / f"{split}.jsonl")

        def gated(text: str) -> dict[str, Any]:
            res = read(text)
            if gate is not None and nearest([text])[0] < gate:
                return {**res, "intent": None}
            return res

        a, b = form_scripts(gated, rows, PolicyConfig(), lang)
        return (
            float(np.mean(a)),
            float(np.mean(b)),
            (sum(a) + sum(b)) / (len(a) + len(b)),
            len(a),
            len(b),
        )

    results: dict[str, Any] = {}
    for split in ("valid", "test"):
        cos = {g: nearest(texts) for g, texts in groups(lang, split).items()}
        forms = {gate: success(split, gate) for gate in (None, *GRID[lang])}
        results[split] = (cos, forms)
    base = results["valid"][1][None][2]
    ok = [g for g in GRID[lang] if results["valid"][1][g][2] >= base - tolerance / 100]
    chosen = max(ok) if ok else None
    print(f"\n### {lang} (NLU {nlu}, vectors {encoder}; chosen on valid: {chosen})\n")
    for split, (cos, forms) in results.items():
        sizes = {g: len(v) for g, v in cos.items()}
        a, b = forms[None][3], forms[None][4]
        print(f"{split}: {sizes}; form dialogues: {a} whole, {b} with a slot cut out")
        print(
            "| gate | utterances kept | reviews gated | FAQ questions gated "
            "| forms: whole | slot cut out | all |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        for gate in (None, *GRID[lang]):
            g = -1.0 if gate is None else gate
            kept = (cos["intent utterances"] >= g).mean()
            reviews, questions = (cos["reviews"] < g).mean(), (cos["FAQ questions"] < g).mean()
            w, c, al = forms[gate][:3]
            mark = " (chosen)" if gate == chosen else ""
            print(
                f"| {'none' if gate is None else gate}{mark} | {100 * kept:.1f} % | "
                f"{100 * reviews:.1f} % | {100 * questions:.1f} % | {100 * w:.2f} % | "
                f"{100 * c:.2f} % | {100 * al:.2f} % |"
            )
        pct = {g: np.percentile(v, [1, 5, 50, 95, 99]).round(3).tolist() for g, v in cos.items()}
        print(f"nearest-centroid cosine, percentiles 1/5/50/95/99: {json.dumps(pct)}\n")
    store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lang", choices=["zh", "en", "both"], default="both")
    ap.add_argument("--encoder", default="runs/e5-zh")
    ap.add_argument("--nlu-zh", default="runs/support-zh/checkpoint")
    ap.add_argument("--nlu-en", default="runs/support-en/checkpoint")
    ap.add_argument("--tolerance", type=float, default=0.0, help="points of form success")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU: {machine()}, {args.threads} torch threads")
    nlu = {"zh": args.nlu_zh, "en": args.nlu_en}
    for lang in ("zh", "en") if args.lang == "both" else (args.lang,):
        run_lang(lang, nlu[lang], args.encoder, args.tolerance)


if __name__ == "__main__":
    main()
