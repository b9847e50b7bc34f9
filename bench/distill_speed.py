"""Inference speed of a distilled student against its teacher: the same test texts, the same
batches, fp32, inference mode, a fixed thread count, the two models timed in turns (the median
over interleaved rounds after a warm-up pass, ``llmos.compress.timing.compare_speed``).

    python bench/distill_speed.py --teacher runs/sentiment-zh/checkpoint \
        --student runs/distill-sentiment-zh/checkpoint --dataset sentiment-zh

Texts are tokenized once with the teacher's tokenizer (the student's is the same), truncated to
the teacher's max_length and cut into batches of --batch-size either in dataset order (as
requests arrive) or sorted by length (as ``classify()`` forms them). Reported per ordering:
seconds per pass over the split for each model, texts per second and the speedup, plus the test
accuracy of both and how often they agree.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import llmos
from llmos.checkpoint.task import Classification
from llmos.compress.timing import compare_speed
from llmos.data.batching import length_sorted_batches, pad_batch
from llmos.data.datasets import dataset_files
from llmos.data.readers import read_classification
from llmos.inference.classify import batched_logits, encode_texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--student", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--label-key", default="label")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10, help="timed rounds per model")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    teacher, student = llmos.load(args.teacher), llmos.load(args.student)
    assert isinstance(teacher.spec, Classification), "the teacher is not a classifier"
    assert isinstance(student.spec, Classification), "the student is not a classifier"
    labels = list(teacher.spec.labels)
    assert list(student.spec.labels) == labels, "teacher and student label sets differ"
    rows = read_classification(dataset_files(args.dataset)["test"], label_key=args.label_key).rows
    rows = [r for r in rows if r.label in labels]
    ids, types, _ = encode_texts(
        teacher.tokenizer, [r.text for r in rows], None, teacher.checkpoint.max_length
    )
    pad = teacher._ids["pad"] or 0
    gold = np.array([labels.index(r.label) for r in rows])
    t_pred = batched_logits(teacher.model, ids, types, pad).argmax(-1).numpy()
    s_pred = batched_logits(student.model, ids, types, pad).argmax(-1).numpy()
    n_layers = teacher.config.num_layers, student.config.num_layers
    print(
        f"{args.dataset} test: {len(ids)} texts, {sum(map(len, ids)):,} tokens, batch "
        f"{args.batch_size}, {args.threads} threads; layers {n_layers[0]} -> {n_layers[1]}"
    )
    print(
        f"accuracy teacher {np.mean(t_pred == gold):.4f}  student {np.mean(s_pred == gold):.4f}"
        f"  ratio {np.mean(s_pred == gold) / np.mean(t_pred == gold):.4f}  agreement "
        f"{np.mean(s_pred == t_pred):.4f}"
    )
    print(
        "{:<8} {:>10} {:>10} {:>12} {:>12} {:>8}".format(
            "order", "teacher s", "student s", "teacher t/s", "student t/s", "speedup"
        )
    )
    size = args.batch_size
    for name, index_batches in (
        ("dataset", [np.arange(s, min(s + size, len(ids))) for s in range(0, len(ids), size)]),
        ("sorted", length_sorted_batches([len(x) for x in ids], size)),
    ):
        batches = [
            pad_batch([ids[i] for i in idx], [types[i] for i in idx], pad) for idx in index_batches
        ]

        def run(model: torch.nn.Module, batches: list = batches) -> None:
            for b in batches:
                model(b["input_ids"], b["token_type_ids"], b["attention_mask"])

        with torch.inference_mode():
            sec = compare_speed(
                {"teacher": lambda: run(teacher.model), "student": lambda: run(student.model)},
                rounds=args.repeats,
            ).seconds
        print(
            f"{name:<8} {sec['teacher']:>10.3f} {sec['student']:>10.3f} "
            f"{len(ids) / sec['teacher']:>12.1f} {len(ids) / sec['student']:>12.1f} "
            f"{sec['teacher'] / sec['student']:>7.2f}x"
        )


if __name__ == "__main__":
    main()
