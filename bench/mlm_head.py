"""Fill-mask accuracy of an encoder's masked-LM head on held-out corpus text (issue 20, item 2):
how well the head trained by configs/pretrain/e5-zh-mlm.yaml reads a masked piece, against a
fresh (random) head on the same frozen encoder.

    python bench/mlm_head.py runs/e5-zh runs/e5-zh-mlm/checkpoint

Protocol: ``--sentences`` sentences of each language's corpus *valid* split (the head trains
on the train split), drawn with a fixed seed; in each, 15 % of the pieces (at least one; not
the special tokens) are replaced by the mask token, all of them at once (no 80/10/10: what
``fill_mask`` and cloze prompts show the model), with a fixed seed; top-1 / top-5 accuracy of
the head's prediction at the masked positions. A checkpoint without an MLM head (runs/e5-zh)
gets a fresh one (seed 0): the "before" row.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from llmos.checkpoint.io import read_checkpoint
from llmos.data.batching import length_sorted_batches, pad_batch
from llmos.data.corpus import read_documents
from llmos.data.datasets import resolve_corpus
from llmos.models.bert import BertForPreTraining
from llmos.text.tokenizer import special_ids
from llmos.train.tasks.mlm import load_pretraining_weights

sys.path.insert(0, str(Path(__file__).parent))
from machine import machine

MASK_PROB = 0.15


def load_with_head(path: str) -> tuple[BertForPreTraining, object, bool]:
    """The checkpoint as a BertForPreTraining with an MLM head (a fresh one, seed 0, when it
    has none), its tokenizer, and whether the head was fresh."""
    ckpt = read_checkpoint(path)
    fresh = ckpt.config.heads == "none"
    torch.manual_seed(0)
    model = BertForPreTraining(replace(ckpt.config, heads="mlm") if fresh else ckpt.config)
    load_pretraining_weights(model, ckpt.weights(), Path(path))
    return model.eval(), ckpt.tokenizer, fresh


def masked_sentences(
    lang: str, tokenizer, n: int, max_length: int = 128
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """n held-out sentences of ``lang``'s corpus: masked ids, masked positions, their pieces."""
    docs = read_documents(resolve_corpus(lang) / "valid.txt")
    sentences = [s for d in docs for s in d]
    rng = random.Random(0)
    chosen = rng.sample(sentences, min(n, len(sentences)))
    ids_sp = special_ids(tokenizer)
    mask, specials = ids_sp["mask"], {v for v in ids_sp.values() if v is not None}
    inputs, positions, targets = [], [], []
    for enc in tokenizer.encode_batch(chosen):
        ids = np.array(enc.ids[: max_length - 1] + enc.ids[-1:], dtype=np.int64)
        candidates = [i for i, t in enumerate(ids) if int(t) not in specials]
        if not candidates:
            continue
        k = max(1, round(MASK_PROB * len(candidates)))
        where = np.array(sorted(rng.sample(candidates, k)))
        targets.append(ids[where].copy())
        ids[where] = mask
        inputs.append(ids)
        positions.append(where)
    return inputs, positions, targets


@torch.inference_mode()
def accuracy(model, inputs, positions, targets, pad: int) -> tuple[float, float, int]:
    """Top-1 and top-5 accuracy over every masked position, and their number."""
    top1 = top5 = total = 0
    for idx in length_sorted_batches([len(x) for x in inputs], 32):
        b = pad_batch([inputs[j] for j in idx], None, pad)
        T = b["input_ids"].size(1)
        flat = torch.tensor(np.concatenate([r * T + positions[j] for r, j in enumerate(idx)]))
        gold = torch.tensor(np.concatenate([targets[j] for j in idx]))
        logits = model(b["input_ids"], None, b["attention_mask"], mlm_positions=flat).mlm_logits
        best = logits.topk(5, dim=-1).indices
        top1 += int((best[:, 0] == gold).sum())
        top5 += int((best == gold[:, None]).any(-1).sum())
        total += len(gold)
    return top1 / total, top5 / total, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="+", help="encoder checkpoints (e5-zh: a fresh head)")
    ap.add_argument("--sentences", type=int, default=500, help="per language")
    ap.add_argument("--langs", nargs="+", default=["zh", "en"])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {machine()}, {torch.get_num_threads()} torch threads\n")
    print("| checkpoint | head | " + " | ".join(f"{x} top-1 / top-5" for x in args.langs) + " |")
    print("|---|---|" + "---|" * len(args.langs))
    for path in args.checkpoints:
        t0 = time.perf_counter()
        model, tok, fresh = load_with_head(path)
        cells, n = [], []
        for lang in args.langs:
            data = masked_sentences(lang, tok, args.sentences)
            a1, a5, total = accuracy(model, *data, special_ids(tok)["pad"] or 0)
            cells.append(f"{100 * a1:.1f} / {100 * a5:.1f}")
            n.append(total)
        head = "fresh (random, seed 0)" if fresh else "trained"
        print(f"| {path} | {head} | " + " | ".join(cells) + " |")
        print(f"  ({', '.join(map(str, n))} masked pieces; {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
