"""int8 quantization: the int8 layers compute what their definition says, quantized checkpoints
save and load through ``llmos.load``, and the command measures them against the original."""

from __future__ import annotations

import copy
import json
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

import llmos
from llmos.checkpoint.io import read_checkpoint, read_weights, save_checkpoint
from llmos.cli import main
from llmos.compress import quantize as Q
from llmos.config.model import BertConfig
from llmos.errors import CheckpointError, DataError, LlmosError
from llmos.inference.onnx import OnnxModel
from llmos.models.bert import BertForPreTraining, BertForSequenceClassification
from llmos.recipes.quantize import quantize_checkpoint
from llmos.text.tokenizer import load_tokenizer
from llmos.train.runs import load_encoder

CFG = BertConfig(
    vocab_size=100,
    hidden_size=64,
    num_layers=2,
    num_heads=4,
    intermediate_size=128,
    max_position=64,
    dropout=0.0,
    attention_dropout=0.0,
)


def test_symmetric_int8_rounds_each_row_to_its_own_scale() -> None:
    w = torch.randn(6, 40) * torch.tensor([0.01, 0.1, 1.0, 10.0, 100.0, 1e-9])[:, None]
    q, scale = Q._symmetric_int8(w)
    assert q.dtype == torch.int8 and q.abs().max() <= Q.QMAX
    assert torch.allclose(scale[:5], w[:5].abs().amax(1) / Q.QMAX)
    # every element within half a step of its row's grid
    assert ((q.float() * scale[:, None] - w).abs() <= scale[:, None] / 2 + 1e-12).all()


def fake_quantized_activations(x: torch.Tensor) -> torch.Tensor:
    """The dynamic activation quantization fbgemm applies, in fp32: one asymmetric scale per
    call over [min(x, 0), max(x, 0)], 128 levels (7 bits: ``reduce_range``)."""
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = (hi - lo) / 127
    zero = round(-lo / scale)
    return (torch.round(x / scale) + zero).clamp(0, 127).sub(zero) * scale


@pytest.mark.parametrize("smoothed", [False, True])
def test_int8_linear_computes_its_definition(smoothed: bool) -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48)
    x = torch.randn(37, 64)
    x[:, 3] *= 30  # an outlier channel, as in real activations
    smooth = (x.abs().amax(0) ** 0.8 / linear.weight.abs().amax(0) ** 0.2) if smoothed else None
    q = Q.Int8Linear.from_linear(linear, smooth)
    # the weight it multiplies by is the original within half a quantization step per row
    step = q.weight_scale[:, None] / (smooth[None, :] if smoothed else 1)
    assert ((q.dequantized() - linear.weight).abs() <= step / 2 + 1e-6).all()
    xs = x / smooth if smoothed else x
    w = q.weight.float() * q.weight_scale[:, None]  # the int8 grid, smoothing included
    with torch.no_grad():
        definition = torch.nn.functional.linear(fake_quantized_activations(xs), w, q.bias)
        y = q(x)
    assert (y - definition).abs().max() <= 1e-3 * definition.abs().max()
    assert q(x.view(1, 37, 64)).shape == (1, 37, 48)


def test_smoothing_reduces_the_error_of_outlier_channels() -> None:
    torch.manual_seed(1)
    linear = torch.nn.Linear(64, 64)
    x = torch.randn(200, 64)
    x[:, :2] *= 60
    with torch.no_grad():
        reference = linear(x)
        plain = Q.Int8Linear.from_linear(linear)(x)
        ranges = x.abs().amax(0)
        s = ranges**0.8 / linear.weight.abs().amax(0) ** 0.2
        smoothed = Q.Int8Linear.from_linear(linear, s)(x)
    assert (smoothed - reference).norm() < 0.5 * (plain - reference).norm()


def test_int8_embedding_reads_dequantized_rows() -> None:
    emb = torch.nn.Embedding(30, 16, padding_idx=0)
    q = Q.Int8Embedding.from_embedding(emb)
    ids = torch.tensor([[1, 5, 29], [0, 2, 2]])
    expected = q.weight.float()[ids] * q.weight_scale[ids][..., None]
    assert torch.equal(q(ids), expected)
    assert (q(ids) - emb(ids)).abs().max() <= q.weight_scale.max() / 2 + 1e-7


def test_quantize_model_replaces_encoder_layers_and_keeps_heads() -> None:
    torch.manual_seed(2)
    model = BertForSequenceClassification(CFG, 3).eval()
    reference = copy.deepcopy(model)
    replaced = Q.quantize_model(model, keep=["bert.layers.1.ffn.down"])
    assert "bert.layers.1.ffn.down" not in replaced
    assert isinstance(model.bert.layers[1].ffn.down, torch.nn.Linear)
    assert isinstance(model.bert.layers[0].ffn.down, Q.Int8Linear)
    assert isinstance(model.bert.embeddings.tok, Q.Int8Embedding)
    assert isinstance(model.classifier, torch.nn.Linear)  # heads stay fp32
    assert len(replaced) == 2 * 4 - 1 + 1
    ids = torch.randint(5, CFG.vocab_size, (8, 20))
    mask = torch.ones_like(ids)
    mask[:4, 12:] = 0
    with torch.inference_mode():
        y, ref = model(ids, None, mask), reference(ids, None, mask)
    assert (y - ref).norm() / ref.norm() < 0.05


def test_mlm_checkpoints_keep_tied_embeddings_fp32(tiny_encoder: Path) -> None:
    pipe = llmos.load(tiny_encoder)
    replaced = Q.quantize_model(pipe.model)
    assert "bert.embeddings.tok" not in replaced
    assert isinstance(pipe.model.bert.embeddings.tok, torch.nn.Embedding)


# --- checkpoints and the command ---------------------------------------------------------


@pytest.fixture(scope="module")
def dataset(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    lines = [x for x in (tiny_corpus / "train.txt").read_text().splitlines() if x]
    rng = random.Random(0)
    d = tmp_path_factory.mktemp("qdata")
    for split, n in (("train", 40), ("valid", 60), ("test", 90)):
        rows = ["text\tlabel"] + [f"{rng.choice(lines)}\t{rng.choice('ab')}" for _ in range(n)]
        (d / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def classifier(tiny_encoder: Path, dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A classifier on the tiny encoder with a random head (quantization needs no training)."""
    torch.manual_seed(3)
    config = read_checkpoint(tiny_encoder).config
    model = BertForSequenceClassification(config, 2)
    load_encoder(model, read_weights(tiny_encoder), tiny_encoder)
    task = {"task": "classification", "labels": ["a", "b"], "max_length": 32}
    out = tmp_path_factory.mktemp("clf") / "checkpoint"
    tokenizer = load_tokenizer(tiny_encoder / "tokenizer.json")
    return save_checkpoint(out, model, config, tokenizer, task | {"dataset": str(dataset)})


def test_quantized_checkpoint_saves_int8_and_loads(classifier: Path, tmp_path: Path) -> None:
    out = tmp_path / "int8"
    report = quantize_checkpoint(classifier, out, smooth=0.8, keep_fp32=1, repeats=1)
    # int8 weights on disk, with their scales and smoothing factors; config says so
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        assert f.get_tensor("bert.layers.0.attn.qkv.weight").dtype == torch.int8
        assert f.get_tensor("bert.embeddings.tok.weight").dtype == torch.int8
    assert "bert.layers.0.attn.qkv.weight_scale" in keys
    assert "bert.layers.0.attn.qkv.smooth" in keys
    assert json.loads((out / "config.json").read_text())["quantization"] == "int8-dynamic"
    task = json.loads((out / "task.json").read_text())
    assert task["quantized_from"] == str(classifier) and task["labels"] == ["a", "b"]
    # the kept layer is the most sensitive one, and it stayed fp32
    worst = max(report["sensitivity"], key=report["sensitivity"].get)
    assert report["fp32_kept"] == [worst] and f"{worst}.weight" in keys
    assert f"{worst}.weight_scale" not in keys
    # llmos.load rebuilds the int8 modules: the same outputs as the recipe's model
    pipe = llmos.load(out)
    assert isinstance(pipe.model.bert.layers[0].attn.qkv, Q.Int8Linear)
    fp32 = llmos.load(classifier)
    texts = ["今天我们学习经济。", "老师介绍历史！", "the market grew"]
    q, f = pipe.classify(texts), fp32.classify(texts)
    assert [r["label"] for r in q] == [r["label"] for r in f]
    assert np.allclose([r["score"] for r in q], [r["score"] for r in f], atol=0.02)
    # the report measures both sides on the dataset's test split
    assert report["test_texts"] == 90 and report["calibration_texts"] == 60
    assert report["size_bytes"]["int8"] < report["size_bytes"]["fp32"]
    assert report["size_bytes"]["int8"] == (out / "model.safetensors").stat().st_size
    assert 0.9 <= report["agreement"]["same_predictions"] <= 1.0
    assert set(report["quality"]["int8"]) == {"accuracy", "macro_f1"}
    assert report == json.loads((out / "quantization.json").read_text())


def test_onnx_runtime_int8_checkpoint_loads_and_classifies(classifier: Path, tmp_path: Path):
    out = tmp_path / "ort"
    report = quantize_checkpoint(classifier, out, method="onnx-int8", repeats=1)
    assert (out / "model.onnx").is_file() and not (out / "model.safetensors").exists()
    pipe = llmos.load(out)
    assert isinstance(pipe.model, OnnxModel)
    assert report["agreement"]["same_predictions"] >= 0.9
    texts = ["今天我们学习经济。", "the market grew"]
    probs = [r["scores"] for r in pipe.classify(texts)]
    ref = [r["scores"] for r in llmos.load(classifier).classify(texts)]
    assert np.allclose([p["a"] for p in probs], [p["a"] for p in ref], atol=0.03)
    with pytest.raises(LlmosError, match="fill-mask"):
        pipe.fill_mask("[MASK]")


def test_embedding_model_from_a_text_file(tiny_encoder: Path, tmp_path: Path) -> None:
    config = read_checkpoint(tiny_encoder).config
    enc_cfg = replace(config, heads="none")
    model = BertForPreTraining(enc_cfg)
    weights = {k: v for k, v in read_weights(tiny_encoder).items() if k.startswith("bert.")}
    model.load_state_dict(weights)
    tok = load_tokenizer(tiny_encoder / "tokenizer.json")
    emb = save_checkpoint(tmp_path / "emb", model, enc_cfg, tok, {"task": "embedding"})
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(f"今天我们学习经济{i}。" for i in range(40)) + "\n")
    report = quantize_checkpoint(emb, tmp_path / "emb8", data=str(texts), repeats=1)
    assert report["kind"] == "embedding" and report["test_texts"] == 20
    assert report["agreement"]["cosine_min"] > 0.98
    v8 = llmos.load(tmp_path / "emb8").embed(["今天我们学习经济。"])
    v32 = llmos.load(emb).embed(["今天我们学习经济。"])
    assert float((v8 * v32).sum()) > 0.98


def test_cli_quantize_prints_the_measurements(classifier: Path, tmp_path: Path, capsys) -> None:
    assert main(["compress", "quantize", str(classifier), "--out", str(tmp_path / "q")]) == 0
    out = capsys.readouterr().out
    assert "smaller" in out and "texts/s" in out and "accuracy" in out


def test_bad_requests_are_clear_errors(classifier: Path, tiny_encoder: Path, tmp_path: Path):
    with pytest.raises(LlmosError, match="--smooth"):
        quantize_checkpoint(classifier, tmp_path / "x", smooth=1.5)
    with pytest.raises(LlmosError, match="new directory"):
        quantize_checkpoint(classifier, classifier)
    with pytest.raises(DataError, match="--data"):
        quantize_checkpoint(tiny_encoder, tmp_path / "y")  # no task.json dataset
    out = tmp_path / "q"
    quantize_checkpoint(classifier, out, repeats=1)
    with pytest.raises(CheckpointError, match="already quantized"):
        quantize_checkpoint(out, tmp_path / "z")
    from llmos.inference.onnx_export import export_onnx

    with pytest.raises(CheckpointError, match="inference only"):
        export_onnx(out, tmp_path / "onnx")
    assert main(["compress", "quantize", str(classifier), "--out", str(classifier)]) == 2
