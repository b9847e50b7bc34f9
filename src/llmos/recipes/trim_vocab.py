"""Recipe: ``llmos compress trim-vocab`` — an encoder with only the vocabulary some texts use.

setup (the checkpoint, the corpora's and datasets' texts) -> count the pieces the tokenizer
produces on the counted splits -> choose (every used piece or the N most frequent, plus the
special tokens) -> trim tokenizer.json and the token-indexed weights -> save an ordinary
checkpoint (task.json kept, the trim recorded in it; ``trim_vocab.json`` beside the weights)
-> report: sizes, and how every split tokenizes after trimming (new ``<unk>`` tokens, texts
segmented differently), counted splits and held-out ones alike.

The texts are read into memory once (the packaged zh and en corpora are ~12 M characters).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer
from tqdm import tqdm

from llmos.checkpoint.io import (
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    Checkpoint,
    load_state_dict_strict,
    read_checkpoint,
    require_unquantized,
    save_checkpoint,
)
from llmos.checkpoint.task import Classification, task_json
from llmos.compress import trim_vocab as T
from llmos.config.model import BertConfig
from llmos.config.trim_vocab import REPORT_FILE, SPLITS, TrimVocabConfig, names
from llmos.data.datasets import dataset_files, resolve_corpus
from llmos.data.readers import join_tokens, read_conll, read_pku
from llmos.data.textfiles import read_inputs
from llmos.errors import CheckpointError, DataError
from llmos.files import atomic_write_json
from llmos.inference.load import build_model
from llmos.text.cjk import split_cjk_characters, splits_cjk_by_default

log = logging.getLogger("llmos.recipes")

BATCH = 1000  # texts per tokenizer call (the library encodes a batch in parallel)


@dataclass
class Source:
    """One file of texts: a corpus or dataset split, counted or only checked."""

    name: str  # the corpus's or dataset's directory name
    kind: str  # "corpus" | "data"
    split: str
    path: Path
    counted: bool
    texts: list[str]

    @property
    def label(self) -> str:
        return f"{self.name}/{self.split}"


class TrimVocabReport(dict[str, Any]):
    """The report of a trim (also written to ``trim_vocab.json`` in the checkpoint): a dict,
    as the JSON file reads, with the text ``llmos compress trim-vocab`` prints."""

    def format_report(self) -> str:
        """Pieces kept, parameters and bytes before/after, and per split the tokens that
        became ``<unk>`` and the texts segmented differently."""
        r = self
        v, p, b = r["vocab"], r["params"], r["file_bytes"]
        top = f", the {v['keep_top']:,} most frequent" if v["keep_top"] else ""
        lines = [
            f"vocabulary  {v['original']:,} -> {v['kept']:,} pieces ({v['used']:,} used by the "
            f"counted text{top}; {v['reserved']:,} special or reserved)",
            f"parameters  {p['original']:,} -> {p['trimmed']:,} (embeddings "
            f"{p['embeddings_original']:,} -> {p['embeddings_trimmed']:,})",
            f"size        {b['original_checkpoint'] / 1e6:.1f} MB -> "
            f"{b['trimmed_checkpoint'] / 1e6:.1f} MB on disk",
            "coverage    (tokens that became <unk>, texts tokenized differently)",
        ]
        width = max(len(s["source"]) for s in r["coverage"])
        for s in r["coverage"]:
            tokens = max(s["tokens"], 1)
            lines.append(
                f"  {s['source']:<{width}}  {'counted ' if s['counted'] else 'held out'}  "
                f"<unk> {s['unk_tokens']:,} of {s['tokens']:,} tokens "
                f"({100 * s['unk_tokens'] / tokens:.2f} %) in {s['texts_with_unk']:,} texts; "
                f"changed {s['texts_changed']:,} of {s['texts']:,} texts"
            )
        lines += [f"checkpoint  {r['trimmed']}", f"report      {Path(r['trimmed']) / REPORT_FILE}"]
        return "\n".join(lines)


def trim_vocab(cfg: TrimVocabConfig) -> TrimVocabReport:
    """Trim ``cfg.checkpoint``'s vocabulary into ``cfg.out_dir``; returns the report.

    Raises:
        CheckpointError: not an fp32 BERT checkpoint, or a tokenizer that is not Unigram or
            WordPiece.
        DataError: an unknown corpus or dataset, or unreadable texts.
    """
    path, out = Path(cfg.checkpoint).expanduser(), Path(cfg.out_dir).expanduser()
    ckpt = _trimmable(path, out)
    config = ckpt.config
    assert isinstance(config, BertConfig)
    tok = ckpt.tokenizer
    framing = T.take_framing(tok)
    kind = T.model_type(tok)
    size = max(config.vocab_size, tok.get_vocab_size())
    counted_splits = names(cfg.splits)
    sources = _sources(cfg, counted_splits)

    counted = [s for s in sources if s.counted]
    if not any(s.texts for s in counted):
        raise DataError(f"no text in the counted splits ({', '.join(counted_splits)})")
    # Taggers fine-tuned from a Unigram checkpoint split CJK characters: keep their pieces too.
    also = [split_cjk_characters(tok)] if cfg.cjk_characters and splits_cjk_by_default(tok) else []
    with _bar(counted, "counting pieces", cfg.progress) as bar:
        counts = T.count_pieces(tok, _batches(counted, bar), size, also)
    pads = {config.pad_token_id} | ({framing[0]["pad_id"]} if framing[0] else set())
    # A classifier reads every text after its text_prefix (task.json): keep the prefix's pieces
    # whatever the counted texts (which come without it) use.
    prefix = ckpt.task.text_prefix if isinstance(ckpt.task, Classification) else None
    own = tok.encode(prefix, add_special_tokens=False).ids if prefix else []
    reserved = sorted({*T.reserved_ids(tok), *pads, *own})
    keep = T.choose(counts, reserved, cfg.keep_top)
    remap = T.Remap.of(keep, size)
    trimmed_tok = T.trim_tokenizer(tok, remap)
    log.info("keeping %d of %d pieces", len(keep), tok.get_vocab_size())
    coverage = _coverage(tok, trimmed_tok, remap, sources, cfg.progress)

    new_config = dataclasses.replace(
        config, vocab_size=len(keep), pad_token_id=remap[config.pad_token_id]
    )
    weights = ckpt.weights()
    original_params = _params(weights)
    trimmed = T.trim_weights(weights, remap, config.vocab_size)
    del weights  # the full embeddings: most of a multilingual model
    model = build_model(new_config, ckpt.task, path)
    load_state_dict_strict(model, trimmed)
    record = {
        "from": config.vocab_size,
        "kept": len(keep),
        "corpus": names(cfg.corpus),
        "data": list(cfg.data),
        "splits": counted_splits,
        "keep_top": cfg.keep_top,
    }
    # task.json as it was (a pretrained encoder's {"task": "mlm"} holds the record), the trim
    # last.
    meta = (task_json(ckpt.task) or ckpt.task.to_json()) | {
        "trimmed_from": str(path),
        "trimmed_vocab": record,
    }
    report = TrimVocabReport(
        checkpoint=str(path),
        trimmed=str(out),
        tokenizer=kind,
        vocab={
            "original": tok.get_vocab_size(),
            "kept": len(keep),
            "used": int((counts > 0).sum()),
            "reserved": len(reserved),
            "keep_top": cfg.keep_top,
            "counted_tokens": int(counts.sum()),
        },
        params={
            "original": original_params,
            "trimmed": _params(trimmed),
            "embeddings_original": config.vocab_size * _width(config),
            "embeddings_trimmed": len(keep) * _width(config),
        },
        coverage=coverage,
    )

    def write_report(tmp: Path) -> None:
        report["file_bytes"] = {
            "original_weights": (path / WEIGHTS_FILE).stat().st_size,
            "trimmed_weights": (tmp / WEIGHTS_FILE).stat().st_size,
            "original_tokenizer": (path / TOKENIZER_FILE).stat().st_size,
            "trimmed_tokenizer": (tmp / TOKENIZER_FILE).stat().st_size,
            "original_checkpoint": _bytes(path),
            "trimmed_checkpoint": _bytes(tmp),
        }
        atomic_write_json(tmp / REPORT_FILE, dict(report))

    T.put_framing(trimmed_tok, framing, remap)  # pad and truncate as the original did
    save_checkpoint(out, model, new_config, trimmed_tok, meta, extra=write_report)
    return report


def _trimmable(path: Path, out: Path) -> Checkpoint:
    """The checkpoint at ``path``, if trim-vocab can trim it into ``out``."""
    ckpt = read_checkpoint(path)
    if not isinstance(ckpt.config, BertConfig):
        raise CheckpointError(
            f"{path}: trim-vocab trims encoder (BERT) checkpoints; this is a "
            f"{ckpt.config.model_type} checkpoint"
        )
    if ckpt.onnx is not None:
        raise CheckpointError(f"{path}: an ONNX export; trim the checkpoint it came from")
    require_unquantized(path, ckpt.config, "trimming the vocabulary")
    if out.resolve() == path.resolve():
        raise CheckpointError(f"{out}: --out must be a new directory, not the checkpoint itself")
    return ckpt


def _coverage(
    tok: Tokenizer,
    trimmed: Tokenizer,
    remap: T.Remap,
    sources: Sequence[Source],
    progress: bool,
) -> list[dict[str, Any]]:
    """Per source, how its texts tokenize after trimming (see :func:`T.compare`)."""
    coverage = []
    unk = (T.unk_id(tok), T.unk_id(trimmed))
    with _bar(sources, "checking coverage", progress) as bar:
        for s in sources:
            cov = T.compare(tok, trimmed, remap, _batches([s], bar), unk)
            coverage.append({"source": s.label, "counted": s.counted, **asdict(cov)})
    return coverage


def _width(config: BertConfig) -> int:
    return config.embedding_size if config.factorized else config.hidden_size


def _params(state: dict[str, Any]) -> int:
    return sum(t.numel() for t in state.values())


def _bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def _bar(sources: Sequence[Source], what: str, progress: bool) -> tqdm:
    """A progress bar over the sources' texts."""
    total = sum(len(s.texts) for s in sources)
    return tqdm(total=total, desc=what, unit="line", disable=not progress)


def _batches(sources: Sequence[Source], bar: tqdm) -> Iterator[list[str]]:
    """The sources' texts in batches of :data:`BATCH`, counted on ``bar``."""
    for s in sources:
        for i in range(0, len(s.texts), BATCH):
            batch = s.texts[i : i + BATCH]
            yield batch
            bar.update(len(batch))


def _sources(cfg: TrimVocabConfig, counted: list[str]) -> list[Source]:
    """Every split file of the corpora and datasets, with its texts."""
    out = []
    for name in names(cfg.corpus):
        root = resolve_corpus(name)
        files = {s: root / f"{s}.txt" for s in SPLITS if (root / f"{s}.txt").is_file()}
        if "train" not in files:
            raise DataError(
                f"unknown corpus {name!r}: no {root / 'train.txt'} (`llmos data prepare` makes "
                "zh and en; or give a directory with train.txt)"
            )
        for split, f in files.items():
            texts = _corpus_texts(f)
            out.append(Source(root.name, "corpus", split, f, split in counted, texts))
    for name in cfg.data:
        for split, f in dataset_files(name).items():
            texts = _dataset_texts(f)
            out.append(Source(f.parent.name, "data", split, f, split in counted, texts))
    return out


def _corpus_texts(path: Path) -> list[str]:
    """The non-blank lines of a corpus file (a sentence a line, documents between blanks)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 (byte {e.start})") from None
    return [line for line in text.splitlines() if line.strip()]


def _dataset_texts(path: Path) -> list[str]:
    """The text fields of a task file: ``text`` (and ``text_b``) of classification and span
    files (.tsv .csv .jsonl), the joined words of People's Daily (.txt) and CoNLL files."""
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return ["".join(s.tokens) for s in read_pku(path).rows]
    if suffix in (".conll", ".bio"):
        return [join_tokens(s.tokens)[0] for s in read_conll(path).rows]
    texts, texts_b = read_inputs(str(path))
    return texts + [b for b in texts_b or [] if b]
