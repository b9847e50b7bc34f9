"""XLNet end to end on a tiny corpus: permutation-LM pretraining through the shared loop (its
config, report, checkpoint, exact resume, DDP), then classification and tagging fine-tunes
that load, predict and serve like any encoder's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import llmos
from llmos.checkpoint.io import read_checkpoint, read_weights
from llmos.checkpoint.task import Classification, MaskedLM
from llmos.config import FinetuneConfig, PretrainConfig, load_config
from llmos.config.model import XLNetConfig
from llmos.data.readers import read_spans
from llmos.errors import ConfigError
from llmos.inference.tag import frame, token_scores, tokenize_for_tagging
from llmos.models.xlnet import XLNetLMHeadModel
from llmos.recipes.finetune import finetune
from llmos.recipes.pretrain import pretrain
from llmos.text.tokenizer import special_ids
from llmos.train.tasks.tag import encode_tagging, training_windows


def xlnet_overrides(corpus: Path, tok: Path, out: Path, steps: int = 300) -> list[str]:
    return [
        "name=xlnet",
        f"out_dir={out}",
        "model.model_type=xlnet",
        "model.hidden_size=64",
        "model.num_layers=2",
        "model.num_heads=2",
        "model.intermediate_size=128",
        "model.mem_len=16",
        f"data.corpus={corpus}",
        f"data.tokenizer={tok}",
        "data.max_length=24",
        "data.plm_memory=16",
        f"train.max_steps={steps}",
        "train.batch_size=8",
        "train.eval_every=150",
        "train.save_every=150",
        "train.eval_batches=4",
        "train.progress=false",
        "train.precision=fp32",
        "optim.lr=0.003",
        "optim.warmup_steps=5",
    ]


@pytest.fixture(scope="module")
def xlnet(tiny_corpus: Path, tiny_tokenizer: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("xlnet")
    cfg = load_config(PretrainConfig, None, xlnet_overrides(tiny_corpus, tiny_tokenizer, out))
    return pretrain(cfg)


def test_config_picks_permutation_lm(tiny_corpus: Path, tiny_tokenizer: Path) -> None:
    cfg = load_config(
        PretrainConfig, None, xlnet_overrides(tiny_corpus, tiny_tokenizer, Path("/tmp"))
    )
    assert isinstance(cfg.model, XLNetConfig) and cfg.data.objective == "plm"
    with pytest.raises(ConfigError, match=r"data\.objective 'mlm' does not fit .*xlnet: plm"):
        load_config(PretrainConfig, None, ["model.model_type=xlnet", "data.objective=mlm"])
    with pytest.raises(ConfigError, match=r"data\.objective 'plm' does not fit"):
        load_config(PretrainConfig, None, ["data.objective=plm"])
    with pytest.raises(ConfigError, match=r"data\.plm_ratio"):
        load_config(PretrainConfig, None, ["model.model_type=xlnet", "data.plm_ratio=1.5"])
    with pytest.raises(ConfigError, match="init continues a BERT"):
        load_config(PretrainConfig, None, ["model.model_type=xlnet", "init=/x"])


def test_shipped_config_parses() -> None:
    root = Path(__file__).resolve().parents[2]
    cfg = load_config(PretrainConfig, root / "configs/pretrain/xlnet-zh.yaml", [])
    assert isinstance(cfg.model, XLNetConfig)
    assert cfg.data.plm_memory == cfg.model.mem_len == 64


def test_pretraining_learns_and_saves_a_loadable_checkpoint(xlnet) -> None:
    report = json.loads((xlnet.run_dir / "report.json").read_text())
    # Predicting 1/6 of the tokens of a synthetic corpus from their context: below the unigram
    # baseline. (Permutation LM sits at the unigram for its first ~150 steps at this size,
    # where MLM leaves it within 40: 0.53x the baseline at step 300 with this seed.)
    assert report["valid"]["perplexity"] < 0.85 * report["unigram_perplexity"], report
    rows = [json.loads(x) for x in (xlnet.run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r["loss"] for r in rows if r["split"] == "train"]
    assert sum(train[-2:]) < sum(train[:2])
    ckpt = read_checkpoint(xlnet.checkpoint)
    assert isinstance(ckpt.config, XLNetConfig) and isinstance(ckpt.task, MaskedLM)
    weights = read_weights(xlnet.checkpoint)
    assert "lm_loss.bias" in weights and "lm_loss.weight" not in weights  # tied: stored once
    # The saved tokenizer lays text out as XLNet reads it: <cls> (here [CLS]) last.
    enc = ckpt.tokenizer.encode("我们", "学生")
    assert enc.tokens[-1] == "[CLS]" and enc.type_ids[-1] == 2
    assert (xlnet.run_dir / "loss.png").stat().st_size > 1000


def test_pretraining_resumes_exactly(xlnet, tmp_path: Path) -> None:
    killed = tmp_path / "xlnet"
    shutil.copytree(xlnet.run_dir, killed)  # as if killed right after the step-150 checkpoint
    shutil.rmtree(killed / "checkpoints" / "step-0000300")
    shutil.rmtree(killed / "checkpoint")
    cfg = load_config(PretrainConfig, xlnet.run_dir / "config.yaml", [f"out_dir={tmp_path}"])
    resumed = pretrain(cfg, resume=True)
    a, b = read_weights(xlnet.checkpoint), read_weights(resumed.checkpoint)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_memory_pass_equals_the_full_forward(xlnet) -> None:
    """``transformer.memory`` (the pretraining step's memory, without the last layer) is what
    ``forward(use_mems=True)`` returns."""
    model = llmos.load(xlnet.checkpoint).model
    assert isinstance(model, XLNetLMHeadModel)
    ids = torch.randint(5, 100, (3, 20))
    with torch.no_grad():
        _, full = model.transformer(ids, use_mems=True)
        fast = model.transformer.memory(ids)
    assert len(full) == len(fast) == 2
    for a, b in zip(full, fast, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.slow
def test_ddp_two_processes_match_one(tiny_corpus: Path, tiny_tokenizer: Path, tmp_path) -> None:
    """`torchrun --nproc-per-node 2 -m llmos pretrain` (gloo) ends with the weights of one
    process training on the same global batches (the memory pass runs outside DDP)."""
    over = xlnet_overrides(tiny_corpus, tiny_tokenizer, tmp_path, steps=6)
    over += ["model.dropout=0.0", "train.eval_every=6"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    cmd += ["--master-port", "29537", "-m", "llmos", "pretrain", *over, "name=ddp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = pretrain(load_config(PretrainConfig, None, [*over, "name=single"]))
    a, b = read_weights(tmp_path / "ddp" / "checkpoint"), read_weights(single.checkpoint)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=2e-5, rtol=1e-4, msg=key)


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from recipes.test_finetune import write_split

    d = tmp_path_factory.mktemp("sentiment")
    write_split(d / "train.tsv", 400, 0)
    write_split(d / "valid.tsv", 60, 1)
    write_split(d / "test.tsv", 80, 2)
    return d


@pytest.fixture(scope="module")
def classifier(xlnet, sentiment: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("xlnet-ft")
    over = [
        f"init={xlnet.checkpoint}",
        f"data.dataset={sentiment}",
        f"out_dir={out}",
        "name=xlnet-cls",
        "train.max_steps=60",
        "train.batch_size=16",
        "train.eval_every=20",
        "train.save_every=20",
        "train.progress=false",
        "train.precision=fp32",
        "optim.lr=2e-3",
        "optim.warmup_steps=5",
    ]
    return finetune(load_config(FinetuneConfig, None, over))


def test_classifier_learns_and_predicts_after_reload(classifier, xlnet, sentiment: Path) -> None:
    report = json.loads((classifier.run_dir / "report.json").read_text())
    assert report["test"]["accuracy"] > 0.9, report["test"]
    ckpt = read_checkpoint(classifier.checkpoint)
    assert isinstance(ckpt.task, Classification) and isinstance(ckpt.config, XLNetConfig)
    # The encoder started from the pretrained XLNet: the fine-tune moved it, from there.
    pre, ft = read_weights(xlnet.checkpoint), read_weights(classifier.checkpoint)
    assert {k for k in ft if k.startswith("transformer.")} == {
        k for k in pre if k.startswith("transformer.")
    }
    assert "logits_proj.weight" in ft and "sequence_summary.summary.weight" in ft
    m = llmos.load(classifier.checkpoint)
    rows = [x.split("\t") for x in (sentiment / "test.tsv").read_text().splitlines()[1:]]
    got = m.classify([t for t, _ in rows], batch_size=7)  # batches of mixed lengths, padded
    one = [m.classify([t])[0] for t, _ in rows[:10]]  # one at a time: no padding
    assert [g["label"] for g in got[:10]] == [o["label"] for o in one]
    for g, o in zip(got[:10], one, strict=True):
        assert abs(g["score"] - o["score"]) < 1e-5
    assert sum(g["label"] == y for g, (_, y) in zip(got, rows, strict=True)) / len(rows) > 0.9


def test_pooling_mean_is_refused_for_xlnet(xlnet, sentiment: Path, tmp_path: Path) -> None:
    over = [f"init={xlnet.checkpoint}", f"data.dataset={sentiment}", f"out_dir={tmp_path}"]
    cfg = load_config(FinetuneConfig, None, [*over, "pooling=mean", "train.max_steps=1"])
    with pytest.raises(ConfigError, match="pooling 'mean': an XLNet classifier"):
        finetune(cfg)


def test_tagger_fine_tunes_from_xlnet(xlnet, tmp_path: Path) -> None:
    from recipes.test_finetune_tagging import write_pku

    d = tmp_path / "pku"
    d.mkdir()
    for split, n, seed in (("train", 200, 0), ("valid", 30, 1), ("test", 30, 2)):
        write_pku(d / f"{split}.txt", n, seed)
    over = [
        f"init={xlnet.checkpoint}",
        "task=tagging",
        f"data.dataset={d}",
        "data.view=ner",
        f"out_dir={tmp_path}",
        "name=xlnet-ner",
        "train.max_steps=30",
        "train.batch_size=16",
        "train.eval_every=30",
        "train.save_every=30",
        "train.progress=false",
        "train.precision=fp32",
        "optim.lr=3e-3",
        "optim.warmup_steps=5",
    ]
    run = finetune(load_config(FinetuneConfig, None, over))
    report = json.loads((run.run_dir / "report.json").read_text())
    assert report["test"]["f1"] > 0.5, report["test"]
    # XLNet's layout, in training and in inference: the window, then <sep> <cls>.
    pipe = llmos.load(run.checkpoint)
    special = special_ids(pipe.tokenizer)
    text = "江泽民在北京会见了客人。"
    tokens = tokenize_for_tagging(pipe.tokenizer, [text], False)
    ids = frame(tokens[0].ids, special["cls"], special["sep"], cls_last=True)
    assert ids[-2:].tolist() == [special["sep"], special["cls"]]
    with torch.no_grad():
        logits = pipe.model(torch.tensor(ids)[None])[0]  # (T, K)
    expected = torch.log_softmax(logits, -1)[: len(ids) - 2].numpy()
    got = token_scores(pipe.model, tokens, special["cls"], special["sep"], 0, 64, cls_last=True)
    assert np.allclose(got[0], expected, atol=1e-5)
    spans = pipe.tag([text])[0]
    pred = [pipe.spec.labels[i] for i in expected.argmax(-1)]
    assert {s["label"] for s in spans} <= {p.split("-")[-1] for p in pred}
    windows, labels = training_windows(
        encode_tagging(
            pipe.tokenizer,
            read_spans(d / "test.txt", view="ner").rows,
            list(pipe.spec.labels),
            "bio",
            "test",
            False,
        ),
        64,
        special["cls"],
        special["sep"],
        cls_last=True,
    )
    assert all(
        w[-1] == special["cls"] and lab[-2:].tolist() == [-100, -100]
        for w, lab in zip(windows, labels, strict=True)
    )


def test_fill_mask_and_embed_on_the_pretrained_xlnet(xlnet) -> None:
    """fill_mask reads the query stream at the blanks (no token sees them); embed mean-pools
    the content stream."""
    m = llmos.load(xlnet.checkpoint)
    text = "我们[MASK]天参观城市。"
    got = m.fill_mask(text, top_k=3)
    ids = m.tokenizer.encode(text.replace("[MASK]", m.mask_token)).ids
    pos = ids.index(m.tokenizer.token_to_id(m.mask_token))
    with torch.no_grad():
        logits = m.model.predict_positions(torch.tensor([ids]), torch.tensor([pos]))[0, 0]
        # What the blank's own id is does not matter: nothing reads it.
        other = list(ids)
        other[pos] = 7
        again = m.model.predict_positions(torch.tensor([other]), torch.tensor([pos]))[0, 0]
    assert torch.allclose(logits, again)
    assert [g["token_id"] for g in got] == logits.topk(3).indices.tolist()
    vectors = m.embed(["我们今天参观城市。", "老师讨论经济。"], normalize=False)
    enc = m.tokenizer.encode("老师讨论经济。")
    ids, types = torch.tensor([enc.ids]), torch.tensor([enc.type_ids])  # <cls> is segment 2
    with torch.no_grad():
        h = m.model.transformer(ids, token_type_ids=types)[0][0].mean(0).numpy()
    assert np.allclose(vectors[1], h, atol=1e-5)


def test_served_like_any_encoder(xlnet, classifier, tmp_path: Path) -> None:
    """A models directory with a pretrained XLNet and an XLNet classifier: listed with their
    type, and /v1/classify, /v1/fill-mask, /v1/embed answer as the Python API does."""
    from serve.conftest import start

    models = tmp_path / "models"
    models.mkdir()
    shutil.copytree(xlnet.checkpoint, models / "xlnet")
    shutil.copytree(classifier.checkpoint, models / "xlnet-cls")
    texts = ["我们支持教育。", "学生讨厌经济。"]
    runner, live = start(models, f"sqlite:///{tmp_path / 'llmos.db'}", rate_limit=0)
    with runner, live.client(live.alice) as c:
        listed = {m["name"]: m for m in c.get("/v1/models").json()["models"]}
        assert listed["xlnet-cls"]["model_type"] == "xlnet"
        assert listed["xlnet-cls"]["labels"] == ["neg", "pos"]
        r = c.post("/v1/classify", json={"model": "xlnet-cls", "texts": texts})
        assert r.status_code == 200, r.text
        want = llmos.load(classifier.checkpoint).classify(texts)
        for g, w in zip(r.json()["results"], want, strict=True):
            assert g["label"] == w["label"]
            assert g["scores"] == pytest.approx(w["scores"], abs=1e-5)
        r = c.post("/v1/fill-mask", json={"model": "xlnet", "text": "我们[MASK]持教育。"})
        assert r.status_code == 200, r.text
        want = llmos.load(xlnet.checkpoint).fill_mask("我们[MASK]持教育。")
        assert [f["token_id"] for f in r.json()["results"][0]] == [w["token_id"] for w in want]
        r = c.post("/v1/embed", json={"model": "xlnet", "texts": texts})
        assert r.status_code == 200, r.text
        want = llmos.load(xlnet.checkpoint).embed(texts)
        np.testing.assert_allclose(np.array(r.json()["embeddings"]), want, atol=1e-5)
