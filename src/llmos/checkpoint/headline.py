"""A built model's headline metric in one line, read from what its build left beside it (a
run's ``report.json``, a recommender's ``task.json``, a trimmed model's report, a material
index's ``meta.json``): ``llmos setup``'s summary table."""

from __future__ import annotations

import json
from pathlib import Path

from llmos.config.trim_vocab import REPORT_FILE as TRIM_REPORT
from llmos.paths import data_dir

# A material index's own marker (the writing assistant saves an index as a whole directory,
# this file inside it written last); it names the encoder that embedded it.
INDEX_MARKER = "meta.json"


def headline(kind: str, output: Path) -> str:
    """The headline metric of what a ``llmos setup`` step of ``kind`` built at ``output``:
    from its ``report.json``, ``task.json`` or trim report, or its size."""
    if kind == "tokenizer":
        if not output.is_file():
            return ""
        vocab = json.loads(output.read_text(encoding="utf-8")).get("model", {}).get("vocab", {})
        return f"{len(vocab):,} tokens"
    if kind == "import":
        return "imported"
    if kind == "recommend":
        try:
            task = json.loads((output / "task.json").read_text(encoding="utf-8"))
            m = task["evaluation"]
            return (
                f"{task['trained_on']['interactions']:,} interactions; RecBole protocol: "
                f"recall@10 {m['recall@10']:.4f}, NDCG@10 {m['ndcg@10']:.4f}"
            )
        except (OSError, ValueError, KeyError, TypeError):
            return "no evaluation in task.json"
    if kind == "materials":
        return _index_headline(output)
    if kind == "trim":
        try:
            trimmed = json.loads((output / TRIM_REPORT).read_text(encoding="utf-8"))
            vocab, params = trimmed["vocab"], trimmed["params"]
            kept, was = params["trimmed"] / 1e6, params["original"] / 1e6
            return (
                f"{vocab['kept']:,} of {vocab['original']:,} pieces kept, "
                f"{kept:.1f} M parameters (from {was:.1f} M)"
            )
        except (OSError, ValueError, KeyError, TypeError):
            return f"no {TRIM_REPORT}"
    report_path = output.parent / "report.json"
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return "no report.json"
    if kind == "pretrain":
        valid = report.get("valid", {})
        if "mlm_accuracy" in valid:
            return (
                f"valid MLM perplexity {valid['perplexity']:.1f} (unigram "
                f"{report.get('unigram_perplexity', float('nan')):.1f}), MLM accuracy "
                f"{valid['mlm_accuracy']:.1%}"
            )
        if "perplexity" in valid:
            return (
                f"valid perplexity {valid['perplexity']:.1f} (unigram "
                f"{report.get('unigram_perplexity', float('nan')):.1f})"
            )
        return "no validation in report.json"
    if "heads" in report:  # a multitask run: each head's test score
        parts = []
        for name, scores in report["heads"].items():
            if "per_type" in scores:
                parts.append(f"{name} span F1 {100 * scores['f1']:.2f}")
            else:
                parts.append(f"{name} accuracy {scores['accuracy']:.2%}")
        return "test " + ", ".join(parts) if parts else "no test split"
    test = report.get("test")
    if not test:
        return "no test split"
    if "per_type" in test:  # a tagger
        return f"test span F1 {100 * test['f1']:.2f}"
    return f"test accuracy {test['accuracy']:.2%}, macro-F1 {100 * test['macro_f1']:.2f}"


def _index_headline(output: Path) -> str:
    """A material index's size, and the shared corpus's when the index is a sample of it."""
    try:
        meta = json.loads((output / INDEX_MARKER).read_text(encoding="utf-8"))
        line = f"{meta['documents']:,} documents, {meta['rows']:,} passages"
    except (OSError, ValueError, KeyError, TypeError):
        return f"no {INDEX_MARKER}"
    from llmos.data.materials import MANIFEST_FILE, MATERIALS_DIR

    try:
        manifest = data_dir() / MATERIALS_DIR / MANIFEST_FILE
        corpus = json.loads(manifest.read_text(encoding="utf-8"))["documents"]
    except (OSError, ValueError, KeyError, TypeError):
        return line
    if isinstance(corpus, int) and meta["documents"] < corpus:
        line += f" (a sample of {corpus:,}; llmos write materials build indexes all)"
    return line
