"""``llmos compress trim-vocab``: which checkpoint, which texts decide the vocabulary kept."""

from __future__ import annotations

from dataclasses import dataclass

from llmos.errors import ConfigError

SPLITS = ("train", "valid", "test")
REPORT_FILE = "trim_vocab.json"  # the report written beside the trimmed weights


def names(value: str | None) -> list[str]:
    """A comma-separated list (``zh,en``) as its non-empty items."""
    return [n.strip() for n in (value or "").split(",") if n.strip()]


@dataclass
class TrimVocabConfig:
    """Trim an encoder's vocabulary to the pieces some texts use, with their embedding rows.

    The fields are the ``llmos compress trim-vocab`` flags, in the order its help lists them.

    Attributes:
        checkpoint: encoder checkpoint (pretrained, embedding, classifier or tagger).
        out_dir: the trimmed checkpoint directory to write.
        corpus: corpora whose pieces are kept, comma-separated: names under
            $LLMOS_HOME/data/corpus (zh,en) or directories with train.txt/valid.txt.
        data: task datasets whose text fields count too (name or directory; repeatable).
        keep_top: keep only the N most frequent pieces (default: every piece used), plus the
            special tokens.
        splits: splits counted, comma-separated; the others are only checked for coverage
            (the report's held-out lines).
        cjk_characters: for a SentencePiece Unigram tokenizer, also count the texts with every
            CJK character split off (as taggers fine-tuned from the checkpoint tokenize them,
            see ``llmos.text.cjk.split_cjk_characters``), so that the single-character
            pieces they need are kept.
        progress: show a progress bar.
    """

    checkpoint: str
    out_dir: str
    corpus: str | None = None
    data: tuple[str, ...] = ()
    keep_top: int | None = None
    splits: str = "train,valid"
    cjk_characters: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if not names(self.corpus) and not self.data:
            raise ConfigError("nothing to count: give --corpus (e.g. zh,en) and/or --data DATASET")
        if self.keep_top is not None and self.keep_top < 1:
            raise ConfigError(
                f"--keep-top is the number of pieces kept besides the special tokens; it must be "
                f"positive, got {self.keep_top}"
            )
        splits = names(self.splits)
        bad = [s for s in splits if s not in SPLITS]
        if not splits or bad:
            raise ConfigError(
                f"--splits must name some of {', '.join(SPLITS)} (comma-separated), "
                f"got {self.splits!r}"
            )
