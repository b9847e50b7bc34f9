"""``llmos evaluate`` and ``llmos predict`` for fine-tuned classifiers and taggers."""

from __future__ import annotations

import csv
import json
import logging
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from tqdm import tqdm

from llmos.checkpoint.io import write_json_atomic
from llmos.data.readers import read_classification, read_spans
from llmos.data.tagging import parse_label
from llmos.errors import DataError
from llmos.inference.pipeline import Pipeline
from llmos.recipes.tagging import encode_tagging, evaluate_tagging
from llmos.text.tokenizer import special_ids
from llmos.train.metrics import classification_metrics, plot_confusion, plot_span_scores

log = logging.getLogger("llmos.recipes")


def evaluate_file(
    checkpoint: str | Path,
    data: str | Path,
    *,
    label_key: str = "label",
    spans_key: str | None = None,
    out_dir: str | Path | None = None,
    skip_bad_rows: bool = False,
) -> dict[str, Any]:
    """Score a fine-tuned model on a labelled file; write ``report.json`` and a PNG.

    Classifiers: accuracy, macro-F1, per-class P/R/F1 and ``confusion.png``; rows whose label the
    model was not trained on are reported (``unseen_labels``) and left out of the metrics, since
    no prediction could match them. Taggers: see :func:`evaluate_tagging_file`.
    """
    pipe = Pipeline.from_checkpoint(checkpoint)
    out = Path(out_dir) if out_dir else Path(checkpoint).parent / f"eval-{Path(data).stem}"
    if pipe.config.model_type == "gpt":
        return evaluate_decoder_file(pipe, data, out, skip_bad_rows=skip_bad_rows)
    if pipe.task and pipe.task.get("task") == "tagging":
        return evaluate_tagging_file(
            pipe, data, out, spans_key=spans_key, skip_bad_rows=skip_bad_rows
        )
    labels = pipe.require_task("classification")
    read = read_classification(data, label_key=label_key, skip_bad_rows=skip_bad_rows)
    rows = read.rows
    unseen = Counter(r.label for r in rows if r.label not in labels)
    if unseen:
        log.warning("%s: labels the model was not trained on (left out): %s", data, dict(unseen))
    rows = [r for r in rows if r.label in labels]
    if not rows:
        raise DataError(f"{data}: no rows with a label this model knows ({labels})")
    preds = pipe.classify(
        [r.text for r in rows], [r.text_b for r in rows] if rows[0].text_b else None
    )
    index = {label: i for i, label in enumerate(labels)}
    report = classification_metrics(
        [index[r.label] for r in rows], [index[p["label"]] for p in preds], labels
    )
    out.mkdir(parents=True, exist_ok=True)
    report |= {
        "examples": len(rows),
        "skipped_rows": read.skipped,
        "unseen_labels": dict(unseen),
        "data": str(data),
        "checkpoint": str(checkpoint),
    }
    report["confusion_png"] = str(
        plot_confusion(report["confusion"], labels, out / "confusion.png", Path(data).name)
    )
    report["report_path"] = str(out / "report.json")
    write_json_atomic(out / "report.json", report)
    return report


def evaluate_decoder_file(
    pipe: Pipeline, data: str | Path, out: Path, *, skip_bad_rows: bool = False
) -> dict[str, Any]:
    """A GPT on a file: text (one sentence a line, a blank line between documents) gets
    perplexity over blocks of the context window; JSONL instructions ``{instruction, input,
    output}`` get the response-token loss and greedy answers scored by exact match and answer
    F1 (written, with the references, to ``generations.jsonl``)."""
    from llmos.data.clm import block_batch, encode_instructions, pack_blocks
    from llmos.data.corpus import load_tokenized
    from llmos.data.readers import read_instructions
    from llmos.recipes.causal import eos_id_of, lm_metrics
    from llmos.recipes.instruct import answer_quality, pair_batches

    data = Path(data)
    eos = eos_id_of(pipe.tokenizer, f"{pipe.path}/tokenizer.json")
    window = pipe.config.max_position
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"checkpoint": str(pipe.path), "data": str(data)}
    if data.suffix.lower() == ".jsonl":
        read = read_instructions(data, skip_bad_rows=skip_bad_rows)
        ids, targets, dropped = encode_instructions(read.rows, pipe.tokenizer, eos, window)
        quality, answers = answer_quality(pipe, read.rows)
        report |= {
            "kind": "instructions",
            "response": lm_metrics(pipe.model, pair_batches(ids, targets, pipe._pad_id(), 16)),
            "quality": quality,
            "dropped_too_long": dropped,
            "skipped_rows": read.skipped,
        }
        _write_lines(
            [
                json.dumps(
                    {"instruction": e.instruction, "input": e.input, "reference": e.output}
                    | {"answer": a, "source": e.source},
                    ensure_ascii=False,
                )
                for e, a in zip(read.rows, answers, strict=True)
            ],
            str(out / "generations.jsonl"),
        )
    else:
        corpus = load_tokenized(data, pipe.tokenizer, whole_documents=True)
        block = min(window, corpus.num_tokens + corpus.num_documents - 1)
        blocks = pack_blocks(corpus, eos, block)
        batches = [block_batch(blocks[i : i + 16]) for i in range(0, len(blocks), 16)]
        report |= {"kind": "text", "block": block, **lm_metrics(pipe.model, batches)}
    report["report_path"] = str(out / "report.json")
    write_json_atomic(out / "report.json", report)
    return report


def evaluate_tagging_file(
    pipe: Pipeline,
    data: str | Path,
    out: Path,
    *,
    spans_key: str | None = None,
    skip_bad_rows: bool = False,
) -> dict[str, Any]:
    """Span P/R/F1 per type (exact character offsets, the CoNLL definition), token accuracy,
    ``report.json`` and ``span_scores.png``.

    The file is read as the model was trained (``view`` and ``spans_key`` from ``task.json``,
    ``spans_key`` overridable). Gold types the model was never trained on are reported
    (``unseen_labels``); they count as misses.
    """
    labels = pipe.require_task("tagging")
    task = pipe.task or {}
    key = spans_key or task.get("spans_key") or "spans"
    read = read_spans(data, view=task.get("view"), spans_key=key, skip_bad_rows=skip_bad_rows)
    rows = read.rows
    known = {parse_label(label, task["scheme"])[1] for label in labels}
    unseen = Counter(t for r in rows for t, _, _ in r.spans if t not in known)
    if unseen:
        log.warning("%s: span types the model was not trained on: %s", data, dict(unseen))
    enc = encode_tagging(pipe.tokenizer, rows, labels, task["scheme"], str(data))
    max_length = int(task.get("max_length", pipe.config.max_position))
    special = special_ids(pipe.tokenizer)
    report = evaluate_tagging(pipe.model, enc, pipe.decoder, special, max_length)[1]
    out.mkdir(parents=True, exist_ok=True)
    report |= {
        "examples": len(rows),
        "skipped_rows": read.skipped,
        "unseen_labels": dict(unseen),
        "data": str(data),
        "checkpoint": str(pipe.path),
    }
    report["scores_png"] = str(
        plot_span_scores(report["per_type"], out / "span_scores.png", Path(data).name)
    )
    report["report_path"] = str(out / "report.json")
    write_json_atomic(out / "report.json", report)
    return report


def _read_inputs(path: str, key: str = "text") -> tuple[list[str], list[str | None] | None]:
    """Texts (and second texts) from stdin / a text file (a text a line) / .tsv .csv .jsonl
    (the text under ``key``)."""
    if path == "-":
        lines = [ln.rstrip("\n") for ln in sys.stdin]
        return [ln for ln in lines if ln.strip()], None
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: input file not found")
    suffix = p.suffix.lower()
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: not valid UTF-8 (byte {e.start})") from None
    if suffix == ".jsonl":
        texts, texts_b = [], []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{p}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get(key), str):
                raise DataError(f'{p}:{lineno}: expected an object with a "{key}" string')
            texts.append(obj[key])
            texts_b.append(obj.get("text_b"))
        return texts, texts_b if any(b is not None for b in texts_b) else None
    if suffix in (".tsv", ".csv"):
        reader = csv.DictReader(text.splitlines(), delimiter="\t" if suffix == ".tsv" else ",")
        if not reader.fieldnames or "text" not in reader.fieldnames:
            raise DataError(f"{p}:1: expected a header with a 'text' column")
        rows = list(reader)
        has_b = "text_b" in reader.fieldnames
        return [r["text"] or "" for r in rows], [r["text_b"] for r in rows] if has_b else None
    return [ln for ln in text.splitlines() if ln.strip()], None


def predict_file(
    checkpoint: str | Path, input_path: str, output: str, *, batch_size: int = 32
) -> int:
    """Write one JSON line per input text.

    Classifiers: ``{"text", "label", "score", "scores"}``; taggers: ``{"text", "spans": [{"text",
    "label", "start", "end", "score"}, ...]}`` with character offsets into ``text``.
    """
    pipe = Pipeline.from_checkpoint(checkpoint)
    texts, texts_b = _read_inputs(input_path)
    if pipe.task and pipe.task.get("task") == "tagging":
        preds: list[dict[str, Any]] = [{"spans": s} for s in pipe.tag(texts, batch_size=batch_size)]
    else:
        preds = pipe.classify(texts, texts_b, batch_size=batch_size)
    lines = [
        json.dumps({"text": t, **p}, ensure_ascii=False) for t, p in zip(texts, preds, strict=True)
    ]
    return _write_lines(lines, output)


def generate_file(
    checkpoint: str | Path,
    input_path: str,
    output: str,
    *,
    batch_size: int = 8,
    raw: bool = False,
    **options: Any,
) -> int:
    """Generate for every prompt of a file (one a line, or JSONL ``{"prompt": ...}``); write
    ``{"prompt", "generation"}`` lines (``"generations"``, a list, with
    ``num_return_sequences`` > 1)."""
    pipe = Pipeline.from_checkpoint(checkpoint)
    prompts, _ = _read_inputs(input_path, key="prompt")
    if not prompts:
        raise DataError(f"{input_path}: no prompts")
    key = "generations" if options.get("num_return_sequences", 1) > 1 else "generation"
    lines = []
    for i in tqdm(range(0, len(prompts), batch_size), desc="generate", unit="batch"):
        chunk = prompts[i : i + batch_size]
        outs = pipe.generate(chunk, raw=raw, **options)
        lines += [
            json.dumps({"prompt": p, key: o}, ensure_ascii=False)
            for p, o in zip(chunk, outs, strict=True)
        ]
    return _write_lines(lines, output)


def embed_file(
    checkpoint: str | Path,
    input_path: str,
    output: str | Path,
    *,
    pooling: str | None = None,
    normalize: bool | None = None,
    batch_size: int = 32,
) -> tuple[int, int]:
    """Embed every text of a file (one a line, or .tsv/.csv/.jsonl ``text``) into a float32
    ``.npy`` matrix, row i for text i; returns its shape."""
    import numpy as np

    pipe = Pipeline.from_checkpoint(checkpoint)
    texts, _ = _read_inputs(input_path)
    if not texts:
        raise DataError(f"{input_path}: no texts")
    vectors = pipe.embed(texts, pooling=pooling, normalize=normalize, batch_size=batch_size)
    out = Path(output)
    tmp = out.with_name(f".{out.name}.tmp.npy")
    np.save(tmp, vectors)
    tmp.replace(out)
    return vectors.shape


def _write_lines(lines: list[str], output: str) -> int:
    """JSON lines to stdout (``-``) or atomically to a file; returns how many."""
    if output == "-":
        for line in lines:
            print(line)
    else:
        out = Path(output)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        tmp.replace(out)
    return len(lines)
