"""The one real pretrained encoder: all-MiniLM-L6-v2 from its registry package, imported with
`llmos convert`, against the same weights run through transformers with mean pooling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import llmos
from llmos.checkpoint.io import read_checkpoint
from llmos.checkpoint.task import Embedding
from llmos.cli import main
from llmos.data.datasets import packaged_model_dir
from llmos.recipes.convert import import_hf

T = pytest.importorskip("transformers")

TEXTS = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A woman is holding her child.",
    "A man is riding a horse.",
    "Someone rides a horse along the beach.",
    "How do I reset my password?",
    "I forgot my password and cannot log in.",
]


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return import_hf("all-MiniLM-L6-v2", tmp_path_factory.mktemp("m") / "minilm")


def test_embeddings_equal_transformers_mean_pooling(minilm: Path) -> None:
    assert read_checkpoint(minilm).task == Embedding(pooling="mean", normalize=True, max_length=256)
    ours = llmos.load(minilm).embed(TEXTS)
    src = packaged_model_dir("all-MiniLM-L6-v2")
    tok = T.AutoTokenizer.from_pretrained(str(src))
    model = T.AutoModel.from_pretrained(str(src)).eval()
    enc = tok(TEXTS, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        h = model(**enc).last_hidden_state
    m = enc["attention_mask"][..., None].float()
    theirs = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1).numpy()
    assert ours.shape == (len(TEXTS), 384)
    cosine = (ours * theirs).sum(1)
    assert cosine.min() >= 0.9999, cosine


def test_paraphrases_rank_above_unrelated_sentences(minilm: Path) -> None:
    v = llmos.load(minilm).embed(TEXTS)
    sim = v @ v.T
    for i in range(0, len(TEXTS), 2):  # pairs (0, 1), (2, 3), ...: paraphrases
        others = [j for j in range(len(TEXTS)) if j not in (i, i + 1)]
        assert sim[i, i + 1] > sim[i, others].max(), TEXTS[i]


def test_embed_cli_writes_npy(minilm: Path, tmp_path: Path) -> None:
    texts = tmp_path / "t.txt"
    texts.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "v.npy"
    assert main(["embed", str(minilm), "--input", str(texts), "--output", str(out)]) == 0
    v = np.load(out)
    assert v.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(v, llmos.load(minilm).embed(TEXTS), atol=1e-6)
    cls = llmos.load(minilm).embed(TEXTS[:2], pooling="cls", normalize=False)
    assert not np.allclose(np.linalg.norm(cls, axis=1), 1.0)
