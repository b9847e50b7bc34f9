"""CJK characters: what counts as one (:func:`is_cjk`), and tokenizers that give every CJK
character a token of its own (:func:`split_cjk_characters`), which character-level tagging
(segmentation, POS, NER over characters) needs from a tokenizer that merges Chinese into words
(SentencePiece Unigram, as XLM-R's and multilingual-e5's).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

from tokenizers import Tokenizer, models

# BERT's CJK ideograph blocks (as `handle_chinese_chars` uses them) plus CJK punctuation and
# full-width forms. https://github.com/google-research/bert/blob/master/tokenization.py
CJK_RANGES = (
    (0x3000, 0x303F),  # CJK symbols and punctuation
    (0x3400, 0x4DBF),  # extension A
    (0x4E00, 0x9FFF),  # unified ideographs
    (0xF900, 0xFAFF),  # compatibility ideographs
    (0xFF00, 0xFFEF),  # half-width and full-width forms
    (0x20000, 0x2A6DF),  # extension B
    (0x2A700, 0x2CEAF),  # extensions C, D, E
    (0x2F800, 0x2FA1F),  # compatibility ideographs supplement
)
# One regex character class over the same ranges: what split_cjk_characters isolates.
_CJK_CLASS = "[" + "".join(f"{chr(lo)}-{chr(hi)}" for lo, hi in CJK_RANGES) + "]"
# Punctuation and symbols (Unicode categories P* and S*, in Oniguruma syntax).
_PUNCT_CLASS = r"[\p{P}\p{S}]"


def is_cjk(ch: str) -> bool:
    """Whether ``ch`` is a CJK ideograph, CJK punctuation or a full-width form.

    Args:
        ch: One character; any other string gives False.

    Returns:
        True for CJK Unified Ideographs (with extensions A-E), compatibility ideographs,
        U+3000-U+303F and U+FF00-U+FFEF.
    """
    if len(ch) != 1:
        return False
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in CJK_RANGES)


def is_hanzi(ch: str) -> bool:
    """A Chinese character: a CJK ideograph of :func:`is_cjk`'s ranges, not CJK punctuation or
    a full-width form (what spelling correction may replace)."""
    return is_cjk(ch) and ch.isalpha()


def split_cjk_characters(tok: Tokenizer) -> Tokenizer:
    """A copy of ``tok`` that makes every CJK character a pre-token of its own.

    Character-level tagging (BMES word segmentation, BIO NER over Chinese) needs a token
    boundary wherever a word may end. SentencePiece vocabularies such as XLM-R's (the
    multilingual-e5 tokenizer) merge Chinese into words (``▁我们 今天 去 北京 大学``), so a
    boundary inside a piece cannot be tagged; isolating each character before the model runs
    makes it its own piece (``我 们 今 天``) wherever the vocabulary has that character, and
    ``<unk>`` (with that character's offsets) where it does not.

    What is isolated: the ranges of :func:`is_cjk` (CJK Unified Ideographs with extensions
    A-E, compatibility ideographs, CJK symbols and punctuation U+3000-U+303F, half-width and
    full-width forms U+FF00-U+FFEF), as seen after the tokenizer's normalizer: XLM-R's and
    llmos's WordPiece normalizers fold full-width letters, digits and punctuation to ASCII
    first, so those keep tokenizing as their ASCII forms do. Since XLM-R's vocabulary also has
    merged punctuation pieces (``”,`` ``:“`` ``!”``), any punctuation mark or symbol in a run
    of up to three that touches a CJK character is isolated too. Kana and Hangul are left
    alone. On People's Daily this leaves 0.01 % of the segmentation's words unrepresentable
    (8 % with the tokenizer as shipped; docs/guide.md has the measurements).

    Where the split runs:

    - After a ``Metaspace`` pre-tokenizer (SentencePiece: XLM-R, T5...), with the ``▁`` that
      Metaspace puts before a character at the start of the text or after a space kept on
      that character (``▁我`` where the vocabulary has it, else ``▁`` + ``我``), exactly as the
      original tokenizer would; a character inside a run gets no ``▁`` and maps to the bare
      piece ``我``. Text without CJK characters tokenizes exactly as before.
    - Before any other pre-tokenizer (a byte-level one would hide the characters in its byte
      alphabet). For a BERT WordPiece tokenizer this changes nothing: its normalizer already
      puts spaces around every ideograph.

    Offsets stay character offsets into the original text. The result serializes into
    ``tokenizer.json`` (a ``Split`` pre-tokenizer) and loads in Hugging Face ``tokenizers`` and
    Transformers alike. Applying it to an already split tokenizer returns an unchanged copy.

    Args:
        tok: The tokenizer; it is not modified.

    Returns:
        The new tokenizer.
    """
    spec = json.loads(tok.to_str())
    pre = spec.get("pre_tokenizer")
    if _splits_cjk(pre):
        return Tokenizer.from_str(tok.to_str())
    metaspace = _find_pre_tokenizer(pre, "Metaspace")
    # An optional ▁ first: a character after a space keeps its word-start marker.
    pattern = _cjk_split_pattern(re.escape(metaspace["replacement"]) + "?" if metaspace else "")
    split = {
        "type": "Split",
        "pattern": {"Regex": pattern},
        "behavior": "Isolated",
        "invert": False,
    }
    if pre is None:
        spec["pre_tokenizer"] = split
    else:
        steps = [pre, split] if metaspace is not None else [split, pre]
        spec["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": steps}
    return Tokenizer.from_str(json.dumps(spec, ensure_ascii=False))


def _cjk_split_pattern(marker: str) -> str:
    """The regex whose every match becomes a pre-token: one CJK character, or one punctuation
    mark or symbol in a run of at most three that touches a CJK character (``marker``: what may
    precede a match at the start of a word, the escaped Metaspace replacement and ``?``)."""
    c, p = _CJK_CLASS, _PUNCT_CLASS
    return (
        f"{marker}{c}"  # 中
        f"|{marker}{p}(?={p}{{0,2}}{c})"  # “ in ：“你 (one to three marks before)
        f"|(?<={c}|{c}{p}|{c}{p}{p}){p}"  # ” and ， in 市”，  (one to three marks after)
    )


def splits_cjk_by_default(tok: Tokenizer) -> bool:
    """Whether fine-tuning a tagger splits CJK characters (:func:`split_cjk_characters`) when
    the config leaves ``data.split_cjk`` unset: yes for SentencePiece Unigram tokenizers, whose
    pieces merge Chinese characters into words; no for WordPiece (BERT's normalizer already
    isolates ideographs) and BPE (left as they were)."""
    return isinstance(tok.model, models.Unigram)


def _splits_cjk(pre: dict | None) -> bool:
    """Whether a serialized pre-tokenizer holds the split of :func:`split_cjk_characters`."""
    return any(
        step["type"] == "Split" and _CJK_CLASS in step["pattern"].get("Regex", "")
        for step in _pre_tokenizer_steps(pre)
    )


def _find_pre_tokenizer(pre: dict | None, kind: str) -> dict | None:
    """The first pre-tokenizer of type ``kind`` in a serialized one, looking into Sequences."""
    return next((step for step in _pre_tokenizer_steps(pre) if step["type"] == kind), None)


def _pre_tokenizer_steps(pre: dict | None) -> Iterator[dict]:
    """The pre-tokenizers a serialized one runs, in order, with Sequences flattened."""
    if pre is None:
        return
    if pre.get("type") == "Sequence":
        for step in pre.get("pretokenizers", []):
            yield from _pre_tokenizer_steps(step)
    else:
        yield pre
