"""Knowledge distillation: the losses against hand computations, padding, the layer map, student
initialisation, and end-to-end runs through the CLI (classification, MLM, exact resume)."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import pytest
import torch
import yaml

import llmos
from llmos.checkpoint.io import TASK_FILE, read_checkpoint, read_config, read_weights
from llmos.checkpoint.task import Classification
from llmos.cli import main
from llmos.compress.distill import (
    attention_probs,
    capture_hidden,
    check_layer_list,
    default_layer_map,
    init_from_teacher,
    layer_losses,
    soft_kl,
)
from llmos.config import DistillConfig, FinetuneConfig, load_config
from llmos.config.model import BertConfig
from llmos.errors import ConfigError
from llmos.inference.classify import batched_logits, encode_texts
from llmos.models.bert import BertForSequenceClassification, BertModel
from llmos.recipes.finetune import finetune

# Three classes told apart by the verb (all words occur in the tiny tokenizer's corpus).
VERBS = {
    "a": ["喜欢", "支持", "保护"],
    "b": ["研究", "建设", "发展"],
    "c": ["参观", "讨论", "介绍"],
}
SUBJECTS = ["我们", "老师", "学生", "公司", "记者"]
OBJECTS = ["经济", "文化", "城市", "技术", "教育"]
TINY = BertConfig(
    vocab_size=50,
    hidden_size=16,
    num_layers=4,
    num_heads=2,
    intermediate_size=32,
    max_position=32,
    dropout=0.0,
    attention_dropout=0.0,
)


def write_split(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    rows = ["text\tlabel"]
    for _ in range(n):
        label = rng.choice(sorted(VERBS))
        text = rng.choice(SUBJECTS) + rng.choice(VERBS[label]) + rng.choice(OBJECTS)
        rows.append(f"{text}{'。' * rng.randint(0, 3)}\t{label}")  # varied lengths: padding
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("three-way")
    write_split(d / "train.tsv", 320, 0)
    write_split(d / "valid.tsv", 48, 1)
    write_split(d / "test.tsv", 64, 2)
    return d


@pytest.fixture(scope="module")
def teacher(tiny_encoder: Path, dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer classifier fine-tuned on the three-way data."""
    out = tmp_path_factory.mktemp("teacher")
    over = [f"init={tiny_encoder}", f"data.dataset={dataset}", f"out_dir={out}", "name=teacher"]
    over += ["train.max_steps=150", "train.batch_size=16", "train.eval_every=50"]
    over += ["train.save_every=150", "train.progress=false", "train.precision=fp32"]
    over += ["optim.lr=1e-3", "optim.warmup_steps=5"]
    return finetune(load_config(FinetuneConfig, None, over)).checkpoint


def student_yaml(path: Path, out: Path, **values: object) -> Path:
    base: dict = {
        "name": "student",
        "out_dir": str(out),
        "student": {"num_layers": 1},
        "temperature": 2.0,
        "alpha": 0.8,
        "optim": {"lr": 5e-3, "warmup_steps": 4},
        "train": {
            "max_steps": 60,
            "batch_size": 16,
            "eval_every": 30,
            "save_every": 30,
            "progress": False,
            "precision": "fp32",
        },
        "patience": None,
    }
    base.update(values)
    path.write_text(yaml.safe_dump(base, allow_unicode=True), encoding="utf-8")
    return path


# -- losses -------------------------------------------------------------------------------------


def test_soft_kl_equals_the_hand_computed_value() -> None:
    s = [[1.0, 2.0, 0.5], [0.0, 0.0, 0.0]]
    t = [[3.0, 1.0, -1.0], [1.0, -2.0, 0.0]]
    T = 2.0

    def softmax(z: list[float]) -> list[float]:
        e = [math.exp(v / T) for v in z]
        return [v / sum(e) for v in e]

    expected = 0.0
    for zs, zt in zip(s, t, strict=True):
        ps, pt = softmax(zs), softmax(zt)
        expected += sum(b * math.log(b / a) for a, b in zip(ps, pt, strict=True)) * T * T
    got = soft_kl(torch.tensor(s), torch.tensor(t), T)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert expected > 0.1  # the numbers are not trivially equal
    assert soft_kl(torch.tensor(t), torch.tensor(t), T).item() == pytest.approx(0.0, abs=1e-6)


def padded(lengths: list[int], seed: int, pad_with: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.full((len(lengths), T), pad_with, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(5, TINY.vocab_size, (n,), generator=g)
        mask[i, :n] = 1
    return ids, mask


def states_and_losses(
    student: BertModel, teacher: BertModel, ids: torch.Tensor, mask: torch.Tensor | None
) -> dict[str, torch.Tensor]:
    with capture_hidden(student) as s_states:
        student(ids, None, mask)
    with torch.no_grad(), capture_hidden(teacher) as t_states:  # the padding-free path
        teacher(ids, None, mask)
    return layer_losses(student, s_states, teacher, t_states, [1, 3], mask, True, True)


def trained_like(model: BertModel) -> BertModel:
    """Random LayerNorm gains and shifts (a fresh model's are 1 and 0, which makes every
    normalised state's mean square exactly 1, padded or not)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
    return model.eval()


def test_layer_losses_ignore_padded_positions() -> None:
    torch.manual_seed(0)
    teacher = trained_like(BertModel(TINY))
    student = trained_like(BertModel(BertConfig(**{**TINY.__dict__, "num_layers": 2})))
    ids, mask = padded([9, 4, 6], seed=1)
    base = states_and_losses(student, teacher, ids, mask)
    other = ids.clone()
    other[mask == 0] = torch.randint(5, TINY.vocab_size, (int((mask == 0).sum()),))
    changed = states_and_losses(student, teacher, other, mask)
    for key in ("hidden", "attention"):
        assert base[key].item() > 0
        assert changed[key].item() == pytest.approx(base[key].item(), rel=1e-5), key
    # ... while a real token changes both, and the same tokens read without the mask differ.
    real = ids.clone()
    real[0, 2] = (real[0, 2] + 1 - 5) % (TINY.vocab_size - 5) + 5
    moved = states_and_losses(student, teacher, real, mask)
    unmasked = states_and_losses(student, teacher, other, None)
    for key in ("hidden", "attention"):
        assert moved[key].item() != pytest.approx(base[key].item(), rel=1e-5), key
        assert unmasked[key].item() != pytest.approx(base[key].item(), rel=1e-3), key


def test_captured_states_match_with_and_without_packing() -> None:
    """The teacher runs without grad (padding-free, (N, C) inside layers); the captured states
    equal those of the padded forward at every real token, and attention_probs reproduces what
    the attention module computes."""
    torch.manual_seed(0)
    model = BertModel(TINY).eval()
    ids, mask = padded([7, 3, 5], seed=2)
    with capture_hidden(model) as plain:
        model(ids, None, mask)
    with torch.no_grad(), capture_hidden(model) as packed:
        model(ids, None, mask)
    assert len(plain) == len(packed) == TINY.num_layers + 1
    real = mask.bool()
    for a, b in zip(plain, packed, strict=True):
        torch.testing.assert_close(a[real], b[real], atol=1e-5, rtol=1e-5)
        assert torch.count_nonzero(b[~real]) == 0
    with torch.no_grad():
        for i, layer in enumerate(model.layers):
            x = plain[i]
            probs = attention_probs(layer.attn, x, mask)  # (B, nh, T, T)
            B, T, C = x.shape
            v = layer.attn.qkv(x)[..., 2 * C :].view(B, T, TINY.num_heads, -1).transpose(1, 2)
            y = (probs @ v).transpose(1, 2).reshape(B, T, C)
            torch.testing.assert_close(
                layer.attn.proj(y), layer.attn(x, mask[:, None, None, :].bool())
            )
            torch.testing.assert_close(probs.sum(-1), torch.ones(B, TINY.num_heads, T))
            assert torch.count_nonzero(probs[1, :, :, 3:]) == 0  # padded keys of row 1


# -- layer map and config validation ------------------------------------------------------------


def test_default_layer_map() -> None:
    assert default_layer_map(2, 4) == [1, 3]
    assert default_layer_map(3, 12) == [3, 7, 11]
    assert default_layer_map(4, 4) == [0, 1, 2, 3]
    assert default_layer_map(1, 4) == [3]
    assert default_layer_map(4, 2) == [0, 0, 0, 1]  # deeper than the teacher: never below 0
    assert check_layer_list("layer_map", None, 2, 4) == [1, 3]
    assert check_layer_list("layer_map", [0, 0], 2, 4) == [0, 0]
    with pytest.raises(ConfigError, match=r"layer_map\[1\] = 4 is not a teacher layer"):
        check_layer_list("layer_map", [0, 4], 2, 4)
    with pytest.raises(ConfigError, match="layer_map has 3 entries; it needs one per student"):
        check_layer_list("layer_map", [0, 1, 2], 2, 4)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("temperature=0", "temperature must be > 0"),
        ("alpha=1.5", "alpha (weight of the soft KL"),
        ("hidden_mse=-1", "hidden_mse (a loss weight) must be >= 0"),
        ("layer_map=[0,-1]", "layer_map[1] must be a teacher layer index >= 0"),
        ("layer_map=[0,1,2]", "layer_map has 3 entries; it needs one per student layer"),
        ("student_init.init_layers=[1]", "student_init.init_layers has 1 entries"),
        ("student.hidden_size=0", "student.hidden_size must be positive"),
        ("task=tagging", "task: expected one of ['classification', 'mlm']"),
    ],
)
def test_bad_values_name_the_field(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(DistillConfig, None, ["teacher=t", "student.num_layers=2", override])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_no_teacher_is_an_error() -> None:
    with pytest.raises(ConfigError, match="pass --teacher CHECKPOINT"):
        load_config(DistillConfig, None, [])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("layer_map=[2]", "layer_map[0] = 2 is not a teacher layer: the teacher has 2 layers"),
        ("student_init.init_layers=[7]", "student_init.init_layers[0] = 7 is not a teacher"),
        ("student.vocab_size=12", "student.vocab_size (12) must equal the teacher's"),
        ("student.num_heads=3", "student.hidden_size (32) must be divisible by student.num_heads"),
    ],
)
def test_errors_against_the_teacher_are_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], teacher: Path, tmp_path: Path, override: str, message: str
) -> None:
    config = student_yaml(tmp_path / "s.yaml", tmp_path)
    code = main(
        ["compress", "distill", "--teacher", str(teacher), "--student", str(config), override]
    )
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_sizes_the_losses_need(
    capsys: pytest.CaptureFixture[str], teacher: Path, tmp_path: Path
) -> None:
    config = student_yaml(tmp_path / "s.yaml", tmp_path)
    argv = ["compress", "distill", "--teacher", str(teacher), "--student", str(config)]
    assert main([*argv, "student.hidden_size=16", "hidden_mse=1"]) == 2
    assert "hidden_mse compares hidden states" in capsys.readouterr().err
    assert main([*argv, "student.num_heads=4", "attention_mse=1"]) == 2
    assert "attention_mse compares attention heads" in capsys.readouterr().err
    assert main([*argv, "student.hidden_size=16", "student_init.init_layers=[1]"]) == 2
    err = capsys.readouterr().err
    assert "student_init.init_layers: the student's bert.embeddings" in err
    assert main([*argv, "task=mlm"]) == 2
    assert "task mlm needs a pretrained encoder" in capsys.readouterr().err


# -- student initialisation ---------------------------------------------------------------------


def test_student_init_copies_the_named_teacher_layers() -> None:
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(TINY, 3)
    student = BertForSequenceClassification(BertConfig(**{**TINY.__dict__, "num_layers": 2}), 3)
    weights = teacher.state_dict()
    assert init_from_teacher(student, weights, [0, 2]) == []
    for i, j in ((0, 0), (1, 2)):
        s, t = student.bert.layers[i].state_dict(), teacher.bert.layers[j].state_dict()
        assert s.keys() == t.keys() and all(torch.equal(s[k], t[k]) for k in s)
    for name in ("bert.embeddings", "bert.pooler", "classifier"):
        s, t = student.get_submodule(name), teacher.get_submodule(name)
        assert all(
            torch.equal(a, b) for a, b in zip(s.parameters(), t.parameters(), strict=True)
        ), name
    other = student.bert.layers[1].attn.qkv.weight
    assert not torch.equal(other, teacher.bert.layers[1].attn.qkv.weight)  # not layer 1's


# -- end to end ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_run(teacher: Path, dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    """A 1-layer student from random weights, every loss on, through the CLI."""
    out = tmp_path_factory.mktemp("distill")
    config = student_yaml(out / "s.yaml", out, hidden_mse=1.0, attention_mse=1.0)
    argv = ["compress", "distill", "--teacher", str(teacher), "--student", str(config)]
    assert main(argv) == 0
    return out / "student", config


def test_cli_run_gives_a_checkpoint_that_follows_the_teacher(
    cli_run, teacher: Path, dataset: Path, tiny_encoder: Path
) -> None:
    run_dir, _ = cli_run
    ckpt = run_dir / "checkpoint"
    spec = read_checkpoint(ckpt).task
    assert isinstance(spec, Classification) and spec.labels == ("a", "b", "c")
    assert spec.extra["distilled_from"] == str(teacher)
    assert read_config(ckpt).num_layers == 1
    rows = [r.split("\t") for r in (dataset / "test.tsv").read_text().splitlines()[1:]]
    texts = [r[0] for r in rows]
    t_labels = [p["label"] for p in llmos.load(teacher).classify(texts)]
    s_labels = [p["label"] for p in llmos.load(ckpt).classify(texts)]
    agreement = sum(a == b for a, b in zip(s_labels, t_labels, strict=True)) / len(texts)
    # The same student architecture from random weights, before any training:
    pipe = llmos.load(ckpt)
    torch.manual_seed(0)
    fresh = BertForSequenceClassification(read_config(ckpt), 3).eval()
    ids, types, _ = encode_texts(pipe.tokenizer, texts, None, 32)
    fresh_labels = [spec.labels[i] for i in batched_logits(fresh, ids, types, 0).argmax(-1)]
    fresh_agreement = sum(a == b for a, b in zip(fresh_labels, t_labels, strict=True)) / len(texts)
    # 0.85: a text or two of the 64 moves with dropout's random stream (0.89 and 0.92 seen).
    assert agreement >= 0.85 and agreement > fresh_agreement + 0.3, (agreement, fresh_agreement)

    report = json.loads((run_dir / "report.json").read_text())
    assert report["student"]["agreement"] == pytest.approx(agreement)
    assert report["student"]["agreement"] > report["student_before"]["agreement"]
    assert report["student"]["parameters"] < report["teacher"]["parameters"]
    assert report["teacher"]["agreement"] == 1.0 and report["layer_map"] == [1]
    assert report["accuracy_ratio"] == pytest.approx(
        report["student"]["accuracy"] / report["teacher"]["accuracy"]
    )
    speed = report["speed"]
    assert speed["threads"] >= 1 and speed["examples"] == len(texts)
    assert speed["teacher_seconds"] > 0 and speed["student_seconds"] > 0
    train = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in train if r["split"] == "train"]
    assert {"kl", "ce", "hidden_mse", "attention_mse"} <= set(train[0])
    assert train[-1]["hidden_mse"] < train[0]["hidden_mse"]
    assert train[-1]["attention_mse"] < train[0]["attention_mse"]
    assert (run_dir / "loss.png").is_file() and (run_dir / "confusion_test.png").is_file()


def test_cli_prints_the_comparison(
    cli_run, teacher: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, config = cli_run
    argv = ["compress", "distill", "--teacher", str(teacher), "--student", str(config)]
    assert main([*argv, "name=again", "train.max_steps=2", "hidden_mse=0"]) == 0
    out = capsys.readouterr().out
    assert "checkpoint: " in out and "report: " in out and "confusion_test.png" in out
    assert "teacher:    test accuracy" in out and "of the accuracy" in out and "threads)" in out


def test_resume_gives_identical_weights(cli_run, teacher: Path) -> None:
    run_dir, _ = cli_run
    killed = run_dir.parent / "killed"  # as if killed right after the step-30 checkpoint
    shutil.copytree(run_dir, killed)
    shutil.rmtree(killed / "checkpoints" / "step-0000060")
    shutil.rmtree(killed / "checkpoint")
    argv = ["compress", "distill", "--student", str(run_dir / "config.yaml"), "name=killed"]
    assert main([*argv, "--resume"]) == 0
    a = read_weights(run_dir / "checkpoints" / "step-0000060")
    b = read_weights(killed / "checkpoints" / "step-0000060")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_init_layers_start_close_to_the_teacher(
    teacher: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """DistilBERT-style: a student started from teacher layer 1 (plus embeddings, pooler and
    classifier) agrees with the teacher more, before training, than a random one."""
    config = student_yaml(tmp_path / "s.yaml", tmp_path, student_init={"init_layers": [1]})
    argv = ["compress", "distill", "--teacher", str(teacher), "--student", str(config)]
    assert main([*argv, "train.max_steps=1", "name=init"]) == 0
    capsys.readouterr()
    assert main([*argv, "train.max_steps=1", "name=random", "student_init.init_layers=null"]) == 0
    capsys.readouterr()
    init = json.loads((tmp_path / "init" / "report.json").read_text())["student_before"]
    rand = json.loads((tmp_path / "random" / "report.json").read_text())["student_before"]
    assert init["agreement"] > rand["agreement"] and init["kl"] < rand["kl"]


def test_mlm_distillation_lowers_the_kl(
    tiny_encoder: Path, tiny_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = student_yaml(
        tmp_path / "mlm.yaml",
        tmp_path,
        name="mlm",
        task="mlm",
        data={"corpus": str(tiny_corpus), "max_length": 32, "max_valid_examples": 64},
        hidden_mse=1.0,
        attention_mse=1.0,
        alpha=1.0,
        train={
            "max_steps": 30,
            "batch_size": 8,
            "eval_every": 15,
            "save_every": 15,
            "eval_batches": 4,
            "progress": False,
            "precision": "fp32",
        },
    )
    argv = ["compress", "distill", "--teacher", str(tiny_encoder), "--student", str(config)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "valid mlm_accuracy" in out
    report = json.loads((tmp_path / "mlm" / "report.json").read_text())
    assert report["objective"] == "mlm+nsp"  # the teacher's heads
    before, after = report["student_before"], report["student"]
    assert after["kl"] < 0.8 * before["kl"], (before, after)
    assert report["teacher"]["kl"] == pytest.approx(0.0, abs=1e-5)
    assert not (tmp_path / "mlm" / "checkpoint" / TASK_FILE).exists()  # a pretrained encoder
    preds = llmos.load(tmp_path / "mlm" / "checkpoint").fill_mask("今天我们[MASK]经济。", top_k=2)
    assert len(preds) == 2


def test_a_prefixed_teachers_data_is_prefixed_for_the_student(
    teacher: Path, dataset: Path, tmp_path: Path
) -> None:
    """A teacher fine-tuned with ``data.text_prefix`` read every text after it: the student is
    trained on the same prefixed texts (and its task.json, copied from the teacher's, keeps
    the prefix for inference)."""
    from llmos.train.tasks.distill import classification_data, load_teacher

    prefixed = tmp_path / "teacher"
    shutil.copytree(teacher, prefixed)
    task = json.loads((prefixed / TASK_FILE).read_text())
    (prefixed / TASK_FILE).write_text(json.dumps({**task, "text_prefix": "评论："}))
    config = student_yaml(tmp_path / "s.yaml", tmp_path)
    cfg = load_config(DistillConfig, config, [f"teacher={prefixed}"])
    t = load_teacher(cfg)
    assert isinstance(t.task, Classification) and t.task.text_prefix == "评论："
    _, enc, max_length, _ = classification_data(cfg, t, t.config)
    rows = [r.split("\t") for r in (dataset / "train.tsv").read_text().splitlines()[1:]]
    want, _, _ = encode_texts(t.tokenizer, [text for text, _ in rows], None, max_length, "评论：")
    bare, _, _ = encode_texts(t.tokenizer, [text for text, _ in rows], None, max_length)
    got = enc["train"].ids
    assert [a.tolist() for a in got] == [b.tolist() for b in want]
    assert [a.tolist() for a in got] != [b.tolist() for b in bare]
