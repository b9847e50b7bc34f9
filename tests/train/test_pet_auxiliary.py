"""PET's auxiliary masked-LM loss (``PetConfig.mlm_weight``) on a random-init masked LM: one
step's loss against a hand computation of (1 - a) x the cloze cross-entropy + a x the mean
masked-LM cross-entropy, the masks BERT's over the pool texts put into the pattern (the
pattern's [MASK] never a target), weight 0 as the plain step, a weight changing the models,
its metrics, exact resume of a model cut off mid-training, bad values and the CLI flag."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from inference.test_zeroshot import tiny_e5

from llmos.checkpoint.io import read_checkpoint, read_weights
from llmos.cli import main
from llmos.config.pet import PetConfig
from llmos.errors import ConfigError
from llmos.inference import cloze
from llmos.models.bert import BertForPreTraining
from llmos.train import pet as pet_module
from llmos.train.pet import train_pet
from llmos.train.tasks.mlm import special_ids_for_mlm
from llmos.train.tasks.pet import AuxiliaryMLM, ClozeBatches

EXAMPLES = {
    "study": ["今天我们学习经济", "现在学生研究历史", "老师学习"],
    "city": ["去年老师参观城市", "the city is big", "公司一直发展技术"],
}
POOL = [
    "昨天工人保护环境",
    "我们喜欢音乐",
    "students read books",
    "城市很大",
    "学习历史",
    "老师研究经济和技术",
    "公司参观城市",
    "the big city grows",
]
PATTERN = "{text}，总之很[MASK]。"
VERBALIZERS = {"study": ["学"], "city": ["市", "城"]}
FAST = PetConfig(steps=8, batch_size=4, lr=1e-2, distill_steps=2, distill_batch=4, progress=False)


@pytest.fixture(scope="module")
def e5(tiny_tokenizer: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_e5(tiny_tokenizer, tmp_path_factory.mktemp("pet-aux"))["e5"]


def encode(ckpt: Path, texts: list[str]) -> tuple[list[np.ndarray], list[int]]:
    c = read_checkpoint(ckpt)
    mask = c.tokenizer.token_to_id("[MASK]")
    filled = [cloze.fill(PATTERN, t, "[MASK]") for t in texts]
    inputs, positions, _ = cloze.encode_cloze(c.tokenizer, filled, mask, 64)
    return inputs, positions


def run(e5: Path, tmp: Path, cfg: PetConfig, name: str) -> tuple[Path, Path]:
    """Train PET with one pattern; (classifier, the pattern model's run directory)."""
    run_dir = tmp / f"{name}-run"
    out = train_pet(e5, EXAMPLES, POOL, [PATTERN], VERBALIZERS, tmp / name, cfg, run_dir=run_dir)
    return out.checkpoint, run_dir / "g0-p0-r0"


def metrics(model_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (model_dir / "metrics.jsonl").read_text().splitlines()]


def test_step_loss_is_the_weighted_cloze_and_masked_lm_cross_entropies(e5: Path) -> None:
    c = read_checkpoint(e5)
    torch.manual_seed(0)
    model = BertForPreTraining(c.config)
    model.load_state_dict(c.weights())
    model.eval()
    texts = [t for ts in EXAMPLES.values() for t in ts]
    y = np.array([0, 0, 0, 1, 1, 1])
    inputs, positions = encode(e5, texts)
    pool, pool_at = encode(e5, POOL)
    sp = special_ids_for_mlm(c.tokenizer)
    piece = {w: c.tokenizer.encode(w, add_special_tokens=False).ids[0] for w in "学市城"}
    pieces, owner = [piece["学"], piece["市"], piece["城"]], [0, 1, 1]
    a = 0.3  # large enough that both parts show in the sum
    aux = AuxiliaryMLM(pool, sp, a, 0.3, 6, seed=5)
    task = ClozeBatches(inputs, positions, y, pieces, owner, 6, 5, sp.pad, aux)
    batches = task.batches(0)
    totals = [sum(col) for col in zip(*(task.counts(b) for b in batches), strict=True)]
    got = [task.loss(model, b, totals) for b in batches]
    loss = sum(float(x.detach()) for x, _ in got)

    # By hand: each labelled text alone, its label scores at the mask; each pool row alone
    # (its real tokens, no padding), the log-softmax over the vocabulary at its targets.
    cloze_ce = []
    for i in range(6):
        with torch.no_grad():
            out = model(
                torch.from_numpy(inputs[i])[None], mlm_positions=torch.tensor([positions[i]])
            )
        logp = out.mlm_logits[0].double().log_softmax(-1)
        city = torch.logsumexp(logp[[piece["市"], piece["城"]]], 0) - np.log(2)
        scores = torch.stack([logp[piece["学"]], city])
        cloze_ce.append(float(-(scores - torch.logsumexp(scores, 0))[y[i]]))
    mlm = [b for b in batches if "mlm_labels" in b]
    assert mlm and len([b for b in batches if "labels" in b]) == 2
    rows = [int(r) for b in mlm for r in b["rows"]]
    assert len(set(rows)) == len(rows) == 6  # a batch of the labelled batch's size
    targets = []
    for b in mlm:
        T, seen = b["input_ids"].size(1), 0
        flat = b["mlm_positions"].tolist()
        for r, row in enumerate(b["rows"].tolist()):
            original = pool[row]
            ids = b["input_ids"][r, : len(original)]
            at = [p - r * T for p in flat if r * T <= p < (r + 1) * T]
            labels = b["mlm_labels"][seen : seen + len(at)]
            seen += len(at)
            assert labels.tolist() == original[at].tolist()  # the tokens hidden
            assert pool_at[row] not in at and int(ids[pool_at[row]]) == sp.mask  # kept, no target
            assert not {0, len(original) - 1} & set(at)  # [CLS], [SEP]
            untouched = np.setdiff1d(np.arange(len(original)), at)
            assert ids[untouched].tolist() == original[untouched].tolist()
            with torch.no_grad():
                out = model(ids[None])
            logp = out.mlm_logits[0].double().log_softmax(-1)
            targets += [float(-logp[p, int(t)]) for p, t in zip(at, labels, strict=True)]
    assert totals == [6.0, float(len(targets))] and targets
    want_cloze, want_mlm = np.mean(cloze_ce), np.mean(targets)
    assert loss == pytest.approx((1 - a) * want_cloze + a * want_mlm, rel=1e-5)
    logs = {k: sum(x.get(k, 0.0) for _, x in got) for k in ("loss", "cloze_loss", "mlm_loss")}
    assert logs["cloze_loss"] == pytest.approx(want_cloze, rel=1e-5)
    assert logs["mlm_loss"] == pytest.approx(want_mlm, rel=1e-5)
    assert logs["loss"] == pytest.approx(loss, rel=1e-6)
    # The same step again: the same rows and masks (a function of the seed and the step).
    again = task.batches(0)
    for x, z in zip(batches, again, strict=True):
        assert x.keys() == z.keys()
        assert all(torch.equal(v, z[k]) if v is not None else z[k] is None for k, v in x.items())
    assert not torch.equal(aux.batches(1)[0]["input_ids"], mlm[0]["input_ids"])


def test_weight_zero_is_the_plain_step_and_a_weight_changes_the_models(
    e5: Path, tmp_path: Path
) -> None:
    plain, plain_dir = run(e5, tmp_path, FAST, "plain")
    zero, zero_dir = run(e5, tmp_path, PetConfig(**{**FAST.__dict__, "mlm_weight": 0.0}), "zero")
    a, b = read_weights(plain), read_weights(zero)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert np.array_equal(np.load(plain_dir / "pool.npy"), np.load(zero_dir / "pool.npy"))
    assert all("mlm_loss" not in row for row in metrics(zero_dir))
    assert json.loads((zero / "task.json").read_text())["pet"]["mlm_weight"] == 0.0

    cfg = PetConfig(**{**FAST.__dict__, "mlm_weight": 0.5})
    aux, aux_dir = run(e5, tmp_path, cfg, "aux")
    assert not np.array_equal(np.load(plain_dir / "pool.npy"), np.load(aux_dir / "pool.npy"))
    c = read_weights(aux)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert json.loads((aux / "task.json").read_text())["pet"]["mlm_weight"] == 0.5
    rows = metrics(aux_dir)
    assert rows
    for row in rows:  # each logged step: both parts, and the loss their weighted sum
        assert math.isfinite(row["mlm_loss"]) and row["mlm_loss"] > 0
        assert row["cloze_loss"] > 0
        want = 0.5 * row["cloze_loss"] + 0.5 * row["mlm_loss"]
        assert row["loss"] == pytest.approx(want, rel=1e-6)


def test_resume_mid_model_with_the_auxiliary_loss(
    e5: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = PetConfig(**{**FAST.__dict__, "mlm_weight": 0.2})
    whole, whole_dir = run(e5, tmp_path, cfg, "whole")

    fit = pet_module.fit

    class Cut(Exception):
        pass

    def cut_at_step_3(*args, **kwargs):  # the pattern model stops after step 3 (saved at 2)
        def on_step(step: int, total: int) -> None:
            if step == 3:
                raise Cut

        return fit(*args, **kwargs, on_step=on_step)

    monkeypatch.setattr(pet_module, "fit", cut_at_step_3)
    run_dir = tmp_path / "cut-run"
    with pytest.raises(Cut):
        train_pet(
            e5, EXAMPLES, POOL, [PATTERN], VERBALIZERS, tmp_path / "cut", cfg, run_dir=run_dir
        )
    saved = sorted(p.name for p in (run_dir / "g0-p0-r0" / "checkpoints").iterdir())
    assert saved == ["step-0000002"] and not (run_dir / "g0-p0-r0" / "pool.npy").exists()
    monkeypatch.setattr(pet_module, "fit", fit)
    resumed = train_pet(
        e5,
        EXAMPLES,
        POOL,
        [PATTERN],
        VERBALIZERS,
        tmp_path / "cut",
        cfg,
        run_dir=run_dir,
        resume=True,
    )
    got = np.load(run_dir / "g0-p0-r0" / "pool.npy")
    assert np.array_equal(np.load(whole_dir / "pool.npy"), got)
    a, b = read_weights(whole), read_weights(resumed.checkpoint)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["mlm_loss"] for r in metrics(run_dir / "g0-p0-r0")] == [
        r["mlm_loss"] for r in metrics(whole_dir)
    ]


def test_bad_weights_are_refused() -> None:
    for bad in (-0.1, 1.0, 1.5, float("nan")):
        with pytest.raises(ConfigError, match="mlm_weight"):
            PetConfig(mlm_weight=bad)
    for bad in (0.0, 1.0):
        with pytest.raises(ConfigError, match="mlm_probability"):
            PetConfig(mlm_probability=bad)
    assert PetConfig().mlm_weight == 0.0 and PetConfig(mlm_weight=1e-4).mlm_weight == 1e-4


def test_cli_flag_reaches_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    examples = tmp_path / "few.jsonl"
    rows = [{"text": t, "label": lab} for lab, ts in EXAMPLES.items() for t in ts]
    examples.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), "utf-8")
    pool = tmp_path / "pool.txt"
    pool.write_text("\n".join(POOL) + "\n", "utf-8")
    seen: list[PetConfig] = []

    def fake(*args, **kwargs):
        seen.append(args[6])
        raise ConfigError("stop here")

    monkeypatch.setattr(pet_module, "train_pet", fake)
    args = ["pet", "mlm", "--examples", str(examples), "--unlabelled", str(pool)]
    args += ["--pattern", PATTERN, "--verbalizer", "study=学", "--out", str(tmp_path / "o")]
    assert main(args) == 2 and main([*args, "--mlm-weight", "1e-4"]) == 2
    assert [c.mlm_weight for c in seen] == [0.0, 1e-4]
    assert main([*args, "--mlm-weight", "1"]) == 2 and len(seen) == 2  # refused before training
