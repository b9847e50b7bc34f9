"""Tokenizers on the Hugging Face `tokenizers` library.

Two kinds, each saved as one ``tokenizer.json`` that Hugging Face Transformers also loads:

- WordPiece for BERT-style encoders: NFKC, then BERT's normalizer (lowercase, accents stripped,
  every CJK ideograph its own word), ``[CLS] A [SEP] B [SEP]`` templates.
- Byte-level BPE for GPT-style decoders, as GPT-2 (no unknown tokens: any text round-trips).

Training streams the files in bounded pieces, so neither a multi-GB corpus nor a 10 MB line is
read into memory at once.

Splitting CJK characters for character-level tagging is :mod:`llmos.text.cjk`.

One module past ~400 lines on purpose: training, loading, special ids and decoding share the
normalizers, the byte alphabet and the streaming reader.
"""

from __future__ import annotations

import codecs
import json
import logging
import os
import unicodedata
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers import trainers as hf_trainers

from llmos.errors import CheckpointError, ConfigError, DataError
from llmos.files import atomic_path
from llmos.text.cjk import is_cjk

logger = logging.getLogger(__name__)

SPECIAL_TOKENS_WORDPIECE = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SPECIAL_TOKENS_BPE = ["<|endoftext|>", "<|pad|>"]
TOKENIZER_FILE = "tokenizer.json"
WORDPIECE_ALPHABET_LIMIT = 8000
_BYTE_ALPHABET_SIZE = 256

_READ_BYTES = 1 << 20  # bytes read from a file at a time
_PIECE_CHARS = 1 << 20  # characters handed to the trainer at a time

# Names a role may have, in order of preference: ours first, then those of converted Hugging Face
# tokenizers (RoBERTa uses <s> </s> <pad> <unk> <mask>).
_ROLE_TOKENS: dict[str, tuple[str, ...]] = {
    "pad": ("[PAD]", "<|pad|>", "<pad>"),
    "unk": ("[UNK]", "<unk>"),
    "cls": ("[CLS]", "<cls>", "<s>"),  # XLNet vocabularies have <s> too
    "sep": ("[SEP]", "<sep>", "</s>"),
    "mask": ("[MASK]", "<mask>"),
    "eos": ("<|endoftext|>", "</s>"),
}

_OPENERS = frozenset("([{“‘（「『《【〈〔〖〘〚")
_CLOSERS = frozenset(")]}%;:”’。、，；：？！）」』》】〉〕〗〙〛")
_CONTEXT_CHARS = 32  # how far decode looks past punctuation for the script around a space


def train_wordpiece(
    files: list[Path],
    vocab_size: int,
    *,
    lowercase: bool = True,
    min_frequency: int = 2,
    limit_alphabet: int = WORDPIECE_ALPHABET_LIMIT,
) -> Tokenizer:
    """Train a BERT-style WordPiece tokenizer.

    Every character seen at least once gets into the vocabulary (up to the ``limit_alphabet``
    most frequent ones), whatever ``min_frequency`` says: the trainer's alphabet is not
    filtered by frequency, only the merges are.

    Reproducible: the same files give the same ``tokenizer.json``. The library's trainer alone
    is not (huggingface/tokenizers#1794): it numbers each continuation piece (``##a``) as it
    first meets it while walking a hash map of the words, and breaks ties between equally
    frequent merges by those numbers, so two runs can merge differently (on the prepared
    Chinese corpus, 21,128 tokens: two runs, two vocabularies). Here a first pass without
    merges finds which continuation pieces the files have; the second pass is given them,
    sorted, as tokens to number up front, so every id and every tie is decided the same way;
    they are then ordinary vocabulary again, numbered after the characters as the library
    numbers them (the characters keep the library's ids). Reading and counting the
    words twice costs time: 9.2-9.8 s against 5.1-5.8 s on that corpus (one thread, AMD EPYC).
    BPE training does not have this problem.

    Args:
        files: UTF-8 text files.
        vocab_size: Target size including the special tokens and the alphabet.
        lowercase: Lowercase and strip accents (an uncased model).
        min_frequency: Least count of a merged subword.
        limit_alphabet: Most single characters kept (the most frequent ones).

    Returns:
        The tokenizer; ``[PAD]`` ``[UNK]`` ``[CLS]`` ``[SEP]`` ``[MASK]`` have ids 0-4.

    Raises:
        DataError: A file is missing, empty or not UTF-8.
        ConfigError: ``vocab_size`` cannot hold the special tokens and the alphabet.
    """

    def trainer(vocab: int, pieces: list[str]) -> hf_trainers.Trainer:
        return hf_trainers.WordPieceTrainer(
            vocab_size=vocab,
            min_frequency=min_frequency,
            special_tokens=SPECIAL_TOKENS_WORDPIECE + pieces,
            limit_alphabet=limit_alphabet,
            continuing_subword_prefix="##",
            show_progress=False,
        )

    _check_vocab_size(vocab_size, len(SPECIAL_TOKENS_WORDPIECE) + 1, "wordpiece")
    first = _wordpiece(lowercase)
    first.train_from_iterator(_read_files(_checked(files, "wordpiece")), trainer=trainer(1, []))
    pieces = sorted(t for t in first.get_vocab() if t.startswith("##") and len(t) == 3)
    tok = _wordpiece(lowercase)
    _train(tok, trainer(vocab_size, pieces), files, vocab_size, "wordpiece")
    if pieces:  # passed as special tokens to be numbered up front: make them plain again
        tok = _plain_pieces(tok, pieces)
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS_WORDPIECE] == [0, 1, 2, 3, 4]
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    return tok


def _plain_pieces(tok: Tokenizer, pieces: list[str]) -> Tokenizer:
    """``tok`` with the continuation ``pieces`` (trained as special tokens, numbered after the
    five specials) as ordinary vocabulary, numbered where the library puts them: after the
    single characters, before the merged pieces. WordPiece matches strings, not ids, so the
    renumbering changes no split; it keeps each character's id what the library gives it."""
    spec = json.loads(tok.to_str())
    plain = set(pieces)
    spec["added_tokens"] = [a for a in spec["added_tokens"] if a["content"] not in plain]
    by_id = sorted(spec["model"]["vocab"], key=spec["model"]["vocab"].__getitem__)
    n = len(SPECIAL_TOKENS_WORDPIECE)
    assert by_id[n : n + len(pieces)] == pieces
    rest = by_id[n + len(pieces) :]
    chars = [t for t in rest if len(t) == 1]  # the alphabet, all before the first merge
    assert rest[: len(chars)] == chars
    order = [*by_id[:n], *chars, *pieces, *rest[len(chars) :]]
    spec["model"]["vocab"] = {t: i for i, t in enumerate(order)}
    return Tokenizer.from_str(json.dumps(spec, ensure_ascii=False))


def _wordpiece(lowercase: bool) -> Tokenizer:
    """An untrained BERT-style WordPiece pipeline: NFKC, BERT's normalizer and pre-tokenizer."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##"))
    tok.normalizer = normalizers.Sequence(
        [
            # NFKC first folds full-width ASCII ("ＡＢＣ１２３" -> "ABC123"), which BERT's
            # normalizer alone leaves as is.
            normalizers.NFKC(),
            normalizers.BertNormalizer(
                clean_text=True,
                handle_chinese_chars=True,
                strip_accents=lowercase,
                lowercase=lowercase,
            ),
        ]
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def train_bpe(files: list[Path], vocab_size: int, *, min_frequency: int = 2) -> Tokenizer:
    """Train a GPT-2-style byte-level BPE tokenizer.

    Any text encodes without unknown tokens and decodes back to its NFKC form exactly.
    No tokens are added around a sequence; callers append ``<|endoftext|>`` themselves.

    Args:
        files: UTF-8 text files.
        vocab_size: Target size including the 256 byte tokens and the 2 special tokens.
        min_frequency: Least count of a merged pair.

    Returns:
        The tokenizer; ``<|endoftext|>`` has id 0 and ``<|pad|>`` id 1.

    Raises:
        DataError: A file is missing, empty or not UTF-8.
        ConfigError: ``vocab_size`` is below 258.
    """
    _check_vocab_size(vocab_size, _BYTE_ALPHABET_SIZE + len(SPECIAL_TOKENS_BPE), "bpe")
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = hf_trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS_BPE,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    _train(tok, trainer, files, vocab_size, "bpe")
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS_BPE] == [0, 1]
    return tok


_TRAINERS = {"wordpiece": train_wordpiece, "bpe": train_bpe}


def train_tokenizer(
    kind: str, files: list[Path], vocab_size: int, out_dir: Path, **kwargs: object
) -> Path:
    """Train a tokenizer and save it as ``out_dir/tokenizer.json``.

    Args:
        kind: ``"wordpiece"`` (encoders) or ``"bpe"`` (decoders).
        files: UTF-8 text files.
        vocab_size: Target vocabulary size.
        out_dir: Directory to write to; created if missing.
        **kwargs: Passed to :func:`train_wordpiece` or :func:`train_bpe`.

    Returns:
        The path of the written ``tokenizer.json`` (written atomically).

    Raises:
        ConfigError: Unknown ``kind`` or too small ``vocab_size``.
        DataError: A file is missing, empty or not UTF-8.
    """
    if kind not in _TRAINERS:
        raise ConfigError(
            f"unknown tokenizer kind {kind!r}; expected one of: {', '.join(sorted(_TRAINERS))}"
        )
    tok = _TRAINERS[kind](files, vocab_size, **kwargs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / TOKENIZER_FILE
    with atomic_path(path) as tmp:
        tok.save(str(tmp))
    logger.info("wrote %s (%s, %d tokens)", path, kind, tok.get_vocab_size())
    return path


def xlnet_layout(tok: Tokenizer) -> Tokenizer:
    """A copy of ``tok`` that lays texts out as XLNet reads them: ``A <sep> <cls>`` and ``A
    <sep> B <sep> <cls>``, segment ids 0, 1 and 2 for the ``<cls>`` (HF's XLNetTokenizer).
    The classifier's summary is the last token, so ``<cls>`` goes at the end. The separator
    and cls tokens are the tokenizer's own (``[SEP]``/``[CLS]`` or ``<sep>``/``<cls>``)."""
    ids = special_ids(tok)
    if ids["sep"] is None or ids["cls"] is None:
        raise ConfigError("an XLNet tokenizer needs a separator and a cls token ([SEP], [CLS])")
    sep, cls = tok.id_to_token(ids["sep"]), tok.id_to_token(ids["cls"])
    out = Tokenizer.from_str(tok.to_str())
    out.post_processor = processors.TemplateProcessing(
        single=f"$A {sep} {cls}:2",
        pair=f"$A {sep} $B:1 {sep}:1 {cls}:2",
        special_tokens=[(sep, ids["sep"]), (cls, ids["cls"])],
    )
    return out


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a ``tokenizer.json``, given its path or the directory holding it.

    Raises:
        CheckpointError: The file is missing or not a valid tokenizer.
    """
    path = Path(path)
    if path.is_dir():
        path = path / TOKENIZER_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: tokenizer file not found")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # the library raises a bare Exception for every parse error
        raise CheckpointError(f"{path}: not a valid tokenizer.json ({e})") from e


def special_ids(tok: Tokenizer) -> dict[str, int | None]:
    """Ids of the special tokens by role.

    Returns:
        A dict with keys ``pad``, ``unk``, ``cls``, ``sep``, ``mask``, ``eos``; a value is None
        where the tokenizer has no such token. Our WordPiece has no ``eos``; our BPE has only
        ``eos`` and ``pad``. RoBERTa-style names (``<s>``, ``</s>``, ...) are recognised too.
    """
    ids: dict[str, int | None] = {}
    for role, names in _ROLE_TOKENS.items():
        found = (tok.token_to_id(name) for name in names)
        ids[role] = next((i for i in found if i is not None), None)
    return ids


def decode(tok: Tokenizer, ids: list[int], *, skip_special_tokens: bool = True) -> str:
    """Turn ids back into text.

    Byte-level BPE decodes exactly (to the NFKC form of the input). WordPiece joins ``##``
    pieces through its decoder (which also drops the space before ``.,!?``) and then removes
    the other spaces BERT's word splitting put in:

    - between CJK characters and punctuation inside CJK text: "今 天 , 好 。" -> "今天,好。"
      (punctuation belongs to the script of the nearest non-punctuation characters);
    - before closing punctuation (``)]}%;:”’`` and CJK closers such as ``。」》``) and after
      opening brackets and quotes: "( a )" -> "(a)";
    - inside numbers: "3. 14" -> "3.14", "10: 30" -> "10:30".

    Spaces between words of other scripts and between a CJK character and a Latin word or
    digit are kept ("我 用 python" -> "我用 python"), since WordPiece does not record them.

    Args:
        tok: The tokenizer.
        ids: Token ids.
        skip_special_tokens: Leave out special tokens (``[CLS]``, ``[UNK]``, ``<|pad|>``...).

    Returns:
        The text.
    """
    text = tok.decode(ids, skip_special_tokens=skip_special_tokens)
    if isinstance(tok.model, models.WordPiece):
        text = _tidy_spaces(text)
    return text


def _gpt2_byte_alphabet() -> dict[str, int]:
    """GPT-2's byte-level alphabet, inverted: the printable character standing for each byte
    -> the byte (printable ASCII and Latin-1 stand for themselves, the rest shift to 256+)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    chars = {b: b for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = 256 + extra
            extra += 1
    return {chr(c): b for b, c in chars.items()}


_BYTE_OF_CHAR = _gpt2_byte_alphabet()


def token_bytes(tok: Tokenizer) -> list[bytes] | None:
    """For a byte-level BPE tokenizer, the bytes of every token id (``b""`` for special
    tokens); None for other tokenizers. Generated text is decoded from these bytes
    incrementally, so a character split over tokens is shown only once complete."""
    if type(tok.decoder).__name__ != "ByteLevel":
        return None
    special = {t.content for t in tok.get_added_tokens_decoder().values() if t.special}
    table = []
    for i in range(tok.get_vocab_size()):
        piece = tok.id_to_token(i) or ""
        if piece in special:
            table.append(b"")
            continue
        table.append(bytes(_BYTE_OF_CHAR[c] for c in piece if c in _BYTE_OF_CHAR))
    return table


def _tidy_spaces(text: str) -> str:
    """Drop the spaces that WordPiece decoding inserts around CJK text and punctuation."""
    if " " not in text:
        return text
    kept = [
        ch
        for i, ch in enumerate(text)
        if not (ch == " " and 0 < i < len(text) - 1 and _space_is_spurious(text, i))
    ]
    return "".join(kept)


def _space_is_spurious(text: str, i: int) -> bool:
    """Whether the space at ``text[i]`` was put in by WordPiece decoding rather than written."""
    left, right = text[i - 1], text[i + 1]
    if right in _CLOSERS or left in _OPENERS:
        return True
    if left in ".:" and right.isdigit() and text[max(i - 3, 0) : i - 1].rstrip(" ")[-1:].isdigit():
        return True  # "3. 14" -> "3.14", "10 : 30" -> "10:30"
    if not (is_cjk(left) or _is_punct(left) or is_cjk(right) or _is_punct(right)):
        return False
    # Punctuation takes the script of its surroundings: "说 : “ 你" is Chinese text throughout,
    # while in "天气, hello" the space after the comma separates Chinese from English.
    return _context_is_cjk(text, i - 1, -1) and _context_is_cjk(text, i + 1, 1)


def _context_is_cjk(text: str, j: int, step: int) -> bool:
    """Whether the first character from ``j`` on (in direction ``step``) that is neither
    punctuation nor a space is CJK; True at the text's edge, False after a long run."""
    for _ in range(_CONTEXT_CHARS):
        if not 0 <= j < len(text):
            return True
        ch = text[j]
        if is_cjk(ch):
            return True
        if ch != " " and not _is_punct(ch):
            return False
        j += step
    return False


def _is_punct(ch: str) -> bool:
    return unicodedata.category(ch).startswith("P")


def _check_vocab_size(vocab_size: int, minimum: int, kind: str) -> None:
    if vocab_size < minimum:
        raise ConfigError(
            f"vocab_size={vocab_size} is too small for a {kind} tokenizer: "
            f"it needs at least {minimum} for its special tokens and alphabet"
        )


def _train(
    tok: Tokenizer, trainer: hf_trainers.Trainer, files: list[Path], vocab_size: int, kind: str
) -> None:
    """Train ``tok`` on the streamed files; check that the result fits ``vocab_size``."""
    tok.train_from_iterator(_read_files(_checked(files, kind)), trainer=trainer)
    if tok.get_vocab_size() > vocab_size:
        raise ConfigError(
            f"vocab_size={vocab_size} is too small for a {kind} tokenizer on these files: "
            f"the special tokens and the characters seen already take "
            f"{tok.get_vocab_size()} entries; use a larger vocab_size"
        )
    logger.info("trained %s tokenizer: %d tokens", kind, tok.get_vocab_size())


def _checked(files: list[Path], kind: str) -> list[Path]:
    """The training files as paths, each checked (one path alone is taken as a list)."""
    if isinstance(files, str | os.PathLike):
        files = [files]  # one path given instead of a list
    paths = [Path(f) for f in files]
    if not paths:
        raise DataError(f"no training files given for the {kind} tokenizer")
    for path in paths:
        _check_file(path)
    return paths


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: training file not found")
    if not path.is_file():
        raise DataError(f"{path}: expected a text file, found a directory or special file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: training file is empty")


def _read_files(paths: Iterable[Path]) -> Iterator[str]:
    for path in paths:
        yield from _read_text(path)


def _read_text(path: Path) -> Iterator[str]:
    """Yield a UTF-8 file's text in pieces of about ``_PIECE_CHARS`` characters.

    Pieces end at a line end where there is one, else before a space, so that words stay
    whole. Memory stays bounded however long a line is.

    Raises:
        DataError: The file is not valid UTF-8 or holds only whitespace.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = newlines = 0  # file offset of the current block; line ends before it
    pending, has_text, at_start = "", False, True
    with path.open("rb") as f:
        while True:
            block = f.read(_READ_BYTES)
            buffered = len(decoder.getstate()[0])  # bytes of a character split across blocks
            try:
                text = decoder.decode(block, final=not block)
            except UnicodeDecodeError as e:
                line = newlines + e.object[: e.start].count(b"\n") + 1
                raise DataError(
                    f"{path}: not valid UTF-8 at line {line}, byte offset "
                    f"{offset - buffered + e.start} ({e.reason}); convert the file to UTF-8 "
                    "(e.g. iconv -f GB18030 -t UTF-8)"
                ) from None
            if at_start and text:
                text, at_start = text.removeprefix("\ufeff"), False  # byte-order mark
            offset += len(block)
            newlines += block.count(b"\n")
            has_text = has_text or (bool(text) and not text.isspace())
            pending += text
            if not block:
                break
            if len(pending) >= _PIECE_CHARS:
                cut = _cut_point(pending)
                yield pending[:cut]
                pending = pending[cut:]
    if not has_text:
        raise DataError(f"{path}: training file is empty (only whitespace)")
    yield pending


def _cut_point(text: str) -> int:
    """Where to split ``text``: after its last line end, else before its last space."""
    newline = text.rfind("\n")
    if newline >= 0:
        return newline + 1
    space = max(text.rfind(" "), text.rfind("\t"))
    return space if space > 0 else len(text)
