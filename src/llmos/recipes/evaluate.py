"""Recipe: ``llmos evaluate`` — score a checkpoint on a labelled file.

Classifiers and taggers are scored as they predict (``llmos.train.tasks.classify`` and
``.tag``); a GPT gets perplexity on text or, on instruction JSONL, the response-token loss and
the quality of its greedy answers (``llmos.train.tasks.clm`` and ``.instruct``). Each writes
``report.json`` (and a plot, or ``generations.jsonl``) to the output directory. The file jobs
that only predict (``predict``, ``generate --input``, ``embed``) are ``recipes/predict.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmos.checkpoint.task import Tagging
from llmos.data.clm import block_batch, encode_instructions, pack_blocks
from llmos.data.corpus import load_tokenized
from llmos.data.readers import read_instructions
from llmos.data.textfiles import write_lines
from llmos.files import atomic_write_json
from llmos.inference.generator import GeneratorPipeline
from llmos.inference.load import load_pipeline
from llmos.train.metrics import plot_confusion, plot_span_scores
from llmos.train.tasks.classify import score_classifier
from llmos.train.tasks.clm import eos_id_of, lm_metrics
from llmos.train.tasks.instruct import answer_quality, pair_batches
from llmos.train.tasks.tag import score_tagger


class EvaluationReport(dict[str, Any]):
    """The report of an evaluation (also written to ``report_path``): a dict, as the JSON file
    reads, with the text ``llmos evaluate`` prints."""

    def format_report(self) -> str:
        """The headline scores, per class or type, and where the report and plot are."""
        report = self
        if report.get("kind") == "text":  # a decoder on text
            return (
                f"perplexity {report['perplexity']:.2f}  loss {report['loss']:.4f}  "
                f"next-token accuracy {report['accuracy']:.4f}  ({report['targets']:.0f} tokens)"
                f"\nreport: {report['report_path']}"
            )
        if report.get("kind") == "instructions":  # an instruction-following decoder
            r = report["response"]
            lines = [f"response-token loss {r['loss']:.4f}  perplexity {r['perplexity']:.2f}"]
            for source, q in report["quality"].items():
                lines.append(
                    f"  {source:<12} exact match {q['exact_match']:.3f}  answer F1 "
                    f"{q['answer_f1']:.3f}  n={q['examples']}"
                )
            lines.append(f"report: {report['report_path']}")
            return "\n".join(lines)
        if "per_type" in report:  # a tagger
            p, r, f, acc = report["precision"], report["recall"], report["f1"], report["accuracy"]
            lines = [f"span P {p:.4f}  R {r:.4f}  F1 {f:.4f}  token accuracy {acc:.4f}"]
            for label, m in report["per_type"].items():
                p, r, f, n = m["precision"], m["recall"], m["f1"], m["support"]
                lines.append(f"  {label or '(word)':<24} P {p:.3f}  R {r:.3f}  F1 {f:.3f}  n={n}")
            lines.append(f"report: {report['report_path']}\nscores plot: {report['scores_png']}")
            return "\n".join(lines)
        acc, f1, n = report["accuracy"], report["macro_f1"], report["examples"]
        lines = [f"accuracy {acc:.4f}  macro-F1 {f1:.4f}  ({n} examples)"]
        for label, m in report["per_class"].items():
            p, r, f, n = m["precision"], m["recall"], m["f1"], m["support"]
            lines.append(f"  {label:<24} P {p:.3f}  R {r:.3f}  F1 {f:.3f}  n={n}")
        lines.append(
            f"report: {report['report_path']}\nconfusion matrix: {report['confusion_png']}"
        )
        return "\n".join(lines)


def evaluate_file(
    checkpoint: str | Path,
    data: str | Path,
    *,
    label_key: str = "label",
    spans_key: str | None = None,
    out_dir: str | Path | None = None,
    skip_bad_rows: bool = False,
) -> EvaluationReport:
    """Score a fine-tuned model on a labelled file; write ``report.json`` and a PNG.

    Classifiers: accuracy, macro-F1, per-class P/R/F1 and ``confusion.png``; rows whose label the
    model was not trained on are reported (``unseen_labels``) and left out of the metrics, since
    no prediction could match them. Taggers: span P/R/F1 per type and ``span_scores.png`` (see
    :func:`~llmos.train.tasks.tag.score_tagger`). GPTs: see :func:`evaluate_decoder_file`.
    """
    pipe = load_pipeline(checkpoint)
    out = Path(out_dir) if out_dir else Path(checkpoint).parent / f"eval-{Path(data).stem}"
    if isinstance(pipe, GeneratorPipeline):
        return evaluate_decoder_file(pipe, data, out, skip_bad_rows=skip_bad_rows)
    if isinstance(pipe.spec, Tagging):
        report = score_tagger(pipe, data, spans_key=spans_key, skip_bad_rows=skip_bad_rows)
        out.mkdir(parents=True, exist_ok=True)
        report |= {"data": str(data), "checkpoint": str(pipe.path)}
        png = plot_span_scores(report["per_type"], out / "span_scores.png", Path(data).name)
        report["scores_png"] = str(png)
    else:
        report = score_classifier(pipe, data, label_key=label_key, skip_bad_rows=skip_bad_rows)
        out.mkdir(parents=True, exist_ok=True)
        report |= {"data": str(data), "checkpoint": str(checkpoint)}
        labels = pipe.require_task("classification")
        png = plot_confusion(report["confusion"], labels, out / "confusion.png", Path(data).name)
        report["confusion_png"] = str(png)
    report["report_path"] = str(out / "report.json")
    atomic_write_json(out / "report.json", report)
    return EvaluationReport(report)


def evaluate_decoder_file(
    pipe: GeneratorPipeline, data: str | Path, out: Path, *, skip_bad_rows: bool = False
) -> EvaluationReport:
    """A GPT on a file: text (one sentence a line, a blank line between documents) gets
    perplexity over blocks of the context window; JSONL instructions ``{instruction, input,
    output}`` get the response-token loss and greedy answers scored by exact match and answer
    F1 (written, with the references, to ``generations.jsonl``)."""
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
        write_lines(
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
    atomic_write_json(out / "report.json", report)
    return EvaluationReport(report)
