"""`llmos setup`: the plan, building a chain of real steps (tokenizer -> pretrain -> fine-tune)
on tiny configs, skipping what exists, resuming an interrupted step, the apps' steps (the
MovieLens recommender, the shared material index), and the demo user's key."""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file, save_file
from setup_fakes import fake_outputs, queued_jobs, write_materials

from llmos.checkpoint.digest import weights_digest
from llmos.cli import main
from llmos.config import FinetuneConfig, PretrainConfig, load_config
from llmos.config.trim_vocab import TrimVocabConfig
from llmos.errors import ConfigError, LlmosError
from llmos.recipes import defaults as S
from llmos.recipes.convert import export_hf, import_hf
from llmos.recipes.finetune import finetune
from llmos.recipes.pretrain import pretrain
from llmos.recipes.trim_vocab import trim_vocab
from llmos.store.db import Store

ROOT = Path(__file__).resolve().parents[2]

# A tokenizer, an encoder pretrained with it, and a classifier fine-tuned from that encoder.
TINY_STEPS = (
    S.Step("wordpiece-tiny", "tokenizer", 0.1, source="wordpiece:tiny:200"),
    S.Step("tiny-bert", "pretrain", 0.2, config="tiny-bert.yaml"),
    S.Step("tiny-cls", "finetune", 0.3, config="tiny-cls.yaml", init="tiny-bert"),
)

# The recipes `llmos setup` hands over (the CLI builds the same).
RUNNERS = S.Runners(
    import_hf=import_hf, pretrain=pretrain, finetune=finetune, trim_vocab=trim_vocab
)

TINY_BERT = {
    "name": "anything",  # setup names the run after its step
    "model": {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64},
    "data": {"corpus": "tiny", "tokenizer": "wordpiece-tiny", "max_length": 32},
    "train": {
        "max_steps": 4,
        "batch_size": 8,
        "eval_every": 2,
        "eval_batches": 1,
        "save_every": 2,
        "progress": False,
        "precision": "fp32",
    },
    "optim": {"warmup_steps": 1},
}
TINY_CLS = {
    "name": "anything",
    "init": "runs/tiny-bert/checkpoint",  # setup points it at the models directory
    "data": {"dataset": "tiny-sentiment", "max_length": 32},
    "train": {
        "max_steps": 6,
        "batch_size": 8,
        "eval_every": 2,
        "save_every": 2,
        "progress": False,
        "precision": "fp32",
    },
    "optim": {"lr": 2e-3, "warmup_steps": 1},
    "patience": None,
}


def write_sentiment(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    rows = ["text\tlabel"]
    for _ in range(n):
        label = rng.choice(["pos", "neg"])
        verb = rng.choice(["喜欢", "支持"] if label == "pos" else ["讨厌", "反对"])
        rows.append(
            f"{rng.choice(['我们', '老师', '学生'])}{verb}{rng.choice(['经济', '文化'])}。\t{label}"
        )
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def write_configs(configs: Path, **changes: dict) -> Path:
    configs.mkdir(parents=True, exist_ok=True)
    for name, values in (("tiny-bert.yaml", TINY_BERT), ("tiny-cls.yaml", TINY_CLS)):
        values = json.loads(json.dumps(values))
        for section, update in changes.get(name.removesuffix(".yaml"), {}).items():
            values[section].update(update)
        (configs / name).write_text(yaml.safe_dump(values, allow_unicode=True), encoding="utf-8")
    return configs


@pytest.fixture(scope="module")
def home(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An llmos home of its own: the tiny corpus as a prepared corpus, a tiny labelled set."""
    home = tmp_path_factory.mktemp("home")
    (home / "data" / "corpus" / "tiny").mkdir(parents=True)
    for split in ("train", "valid"):
        shutil.copy(tiny_corpus / f"{split}.txt", home / "data" / "corpus" / "tiny")
    tasks = home / "data" / "tasks" / "tiny-sentiment"
    tasks.mkdir(parents=True)
    for split, n, seed in (("train", 200, 0), ("valid", 40, 1), ("test", 40, 2)):
        write_sentiment(tasks / f"{split}.tsv", n, seed)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMOS_HOME", str(home))
        yield home


@pytest.fixture(scope="module")
def built(home: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list]:
    """The first run: every step built. Returns (models, configs, results)."""
    root = tmp_path_factory.mktemp("setup")
    configs = write_configs(root / "configs")
    models = root / "models"
    return models, configs, S.run_setup(models, configs, RUNNERS, TINY_STEPS)


@pytest.fixture()
def copy(built: tuple[Path, Path, list], tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the built models directory that a test may change, and the configs."""
    models, configs, _ = built
    shutil.copytree(models, tmp_path / "models")
    return tmp_path / "models", configs


def test_plan_lists_what_is_missing_with_its_minutes(home: Path, tmp_path: Path) -> None:
    configs = write_configs(tmp_path / "configs")
    planned = S.plan(tmp_path / "models", configs, TINY_STEPS)
    assert [p.done for p in planned] == [False, False, False]
    assert planned[0].output == home / "tokenizers" / "wordpiece-tiny" / "tokenizer.json"
    assert planned[1].output == tmp_path / "models" / "tiny-bert" / "checkpoint"
    line = S.format_plan(planned, "models")
    assert "\n" not in line
    assert "building wordpiece-tiny, tiny-bert, tiny-cls into models/" in line
    assert "(about 1 min on 2 CPU cores)" in line  # 0.1 + 0.2 + 0.3, rounded


def test_a_missing_config_fails_before_any_work(home: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"tiny-bert\.yaml: config file not found"):
        S.plan(tmp_path / "models", tmp_path / "nowhere", TINY_STEPS)
    bad = (S.Step("x", "finetune", 1.0, config="tiny-cls.yaml", init="missing"),)
    with pytest.raises(ConfigError, match="starts from 'missing', which is no step"):
        S.plan(tmp_path / "models", write_configs(tmp_path / "configs"), bad)


def test_first_run_builds_the_chain_in_order(home: Path, built: tuple[Path, Path, list]) -> None:
    models, _, results = built
    assert [(r.step.name, r.built) for r in results] == [
        ("wordpiece-tiny", True),
        ("tiny-bert", True),
        ("tiny-cls", True),
    ]
    assert (home / "tokenizers" / "wordpiece-tiny" / "tokenizer.json").is_file()
    bert = models / "tiny-bert"
    # The run is named after its step and trained with the tokenizer the first step made.
    assert load_config(PretrainConfig, bert / "config.yaml").name == "tiny-bert"
    assert (bert / "checkpoint" / "config.json").is_file()
    task = json.loads((models / "tiny-cls" / "checkpoint" / "task.json").read_text())
    assert task["init"] == str(bert / "checkpoint")  # fine-tuned from the model built here
    assert results[0].metric.endswith(" tokens")
    assert results[1].metric.startswith("valid MLM perplexity ")
    assert results[2].metric.startswith("test accuracy ")
    assert all(r.seconds > 0 for r in results)
    summary = S.format_summary(results)
    assert "setup: 3 built, 0 kept" in summary and "tiny-cls" in summary


def test_second_run_trains_nothing(
    built: tuple[Path, Path, list], monkeypatch: pytest.MonkeyPatch
) -> None:
    models, configs, first = built
    files = {p: p.stat().st_mtime_ns for p in models.rglob("*") if p.is_file()}

    def no_work(*args: object) -> None:
        raise AssertionError("a finished step was built again")

    monkeypatch.setattr(S, "build", no_work)
    planned = S.plan(models, configs, TINY_STEPS)
    assert all(p.done for p in planned)
    assert "nothing to do" in S.format_plan(planned, models)
    again = S.run_setup(models, configs, RUNNERS, TINY_STEPS)
    assert [r.built for r in again] == [False, False, False]
    assert [r.metric for r in again] == [r.metric for r in first]  # read from report.json
    assert "setup: 0 built, 3 kept" in S.format_summary(again)
    assert {p: p.stat().st_mtime_ns for p in models.rglob("*") if p.is_file()} == files


def test_an_interrupted_step_resumes(
    built: tuple[Path, Path, list], copy: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    models, configs = copy
    run = models / "tiny-cls"
    # As if killed after step 4 of 6: no final checkpoint, no newer step checkpoint.
    shutil.rmtree(run / "checkpoint")
    shutil.rmtree(run / "checkpoints" / "step-0000006")
    (run / "report.json").unlink()
    with caplog.at_level(logging.INFO, logger="llmos"):
        results = S.run_setup(models, configs, RUNNERS, TINY_STEPS)
    assert [r.built for r in results] == [False, False, True]
    assert "resumed from" in caplog.text and "step-0000004" in caplog.text
    assert (run / "checkpoint" / "config.json").is_file() and (run / "report.json").is_file()
    assert (run / "checkpoints" / "step-0000006").is_dir()
    weights = "checkpoint/model.safetensors"  # exact resume: the same model as the first run's
    assert (run / weights).read_bytes() == (built[0] / "tiny-cls" / weights).read_bytes()


def test_an_unfinished_run_of_another_config_is_left_alone(copy: tuple[Path, Path]) -> None:
    models, _ = copy
    run = models / "tiny-cls"
    shutil.rmtree(run / "checkpoint")  # e.g. a full-size run killed half-way
    other = write_configs(models.parent / "other", **{"tiny-cls": {"train": {"max_steps": 9}}})
    with pytest.raises(LlmosError, match="holds an unfinished run of another config"):
        S.run_setup(models, other, RUNNERS, TINY_STEPS)
    assert (run / "checkpoints" / "step-0000006").is_dir()  # nothing removed


def test_an_existing_encoder_is_kept_and_fine_tuned_from(copy: tuple[Path, Path]) -> None:
    models, configs = copy
    shutil.rmtree(models / "tiny-cls")
    before = (models / "tiny-bert" / "checkpoint" / "model.safetensors").read_bytes()
    results = S.run_setup(models, configs, RUNNERS, TINY_STEPS)
    assert [r.built for r in results] == [False, False, True]
    assert (models / "tiny-bert" / "checkpoint" / "model.safetensors").read_bytes() == before
    cfg = load_config(FinetuneConfig, models / "tiny-cls" / "config.yaml")
    assert cfg.init == str(models / "tiny-bert" / "checkpoint")


def test_trim_steps_import_or_take_an_encoder_and_keep_only_the_trimmed_model(
    copy: tuple[Path, Path],
) -> None:
    """A trim step with a source imports it into a scratch directory, trims it into the
    models directory and removes the scratch copy; one with ``init`` trims that step's
    output. A fine-tune starts from the trimmed model; a second run keeps everything."""
    models, configs = copy
    hf_dir = export_hf(models / "tiny-bert" / "checkpoint", models.parent / "hf-tiny-bert")
    trim = {"checkpoint": "replaced-by-setup", "corpus": "tiny", "progress": False}
    (configs / "tiny-trim.yaml").write_text(yaml.safe_dump(trim), encoding="utf-8")
    steps = (
        *TINY_STEPS,
        S.Step("tiny-imported", "trim", 0.1, config="tiny-trim.yaml", source=str(hf_dir)),
        S.Step("tiny-trimmed", "trim", 0.1, config="tiny-trim.yaml", init="tiny-bert"),
        S.Step("tiny-cls-trimmed", "finetune", 0.1, config="tiny-cls.yaml", init="tiny-imported"),
    )
    left = models / ".tiny-imported-import-killed" / "model"  # as a killed run leaves it
    left.mkdir(parents=True)
    results = S.run_setup(models, configs, RUNNERS, steps)
    assert [r.built for r in results] == [False, False, False, True, True, True]
    assert sorted(p.name for p in models.iterdir()) == [  # no scratch import left behind
        "tiny-bert", "tiny-cls", "tiny-cls-trimmed", "tiny-imported", "tiny-trimmed"
    ]  # fmt: skip
    for r in results[3:5]:
        report = json.loads((r.output / "trim_vocab.json").read_text())
        assert report["vocab"]["kept"] < report["vocab"]["original"]
        assert r.metric.startswith(
            f"{report['vocab']['kept']:,} of {report['vocab']['original']:,} pieces kept, "
        )
    # Trimmed from an import of the encoder, or from the encoder itself: the same model.
    imported, trimmed = (
        models / n / "model.safetensors" for n in ("tiny-imported", "tiny-trimmed")
    )
    a, b = load_file(str(imported)), load_file(str(trimmed))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    task = json.loads((models / "tiny-cls-trimmed" / "checkpoint" / "task.json").read_text())
    assert task["init"] == str(models / "tiny-imported")
    assert [r.built for r in S.run_setup(models, configs, RUNNERS, steps)] == [False] * 6


def retrain(encoder: Path) -> None:
    """As if the encoder was trained again: other weights in its model.safetensors."""
    weights = encoder / "model.safetensors"
    state = load_file(str(weights))
    name = sorted(state)[0]
    state[name] = state[name] + 1.0
    save_file(state, str(weights), metadata={"format": "pt"})


def test_a_fine_tune_of_a_since_rebuilt_encoder_is_flagged(copy: tuple[Path, Path]) -> None:
    models, configs = copy
    encoder = models / "tiny-bert" / "checkpoint"
    # The copy's tiny-cls was tuned on the original directory's encoder, not this one: not ours
    # to judge, as a full-size fine-tune of another encoder would not be.
    retrain(encoder)
    assert not any(p.stale for p in S.plan(models, configs, TINY_STEPS))
    shutil.rmtree(models / "tiny-cls")
    S.run_setup(models, configs, RUNNERS, TINY_STEPS)  # tuned on this directory's tiny-bert
    task = json.loads((models / "tiny-cls" / "checkpoint" / "task.json").read_text())
    assert task["init_digest"] == weights_digest(encoder)
    assert not any(p.stale for p in S.plan(models, configs, TINY_STEPS))
    retrain(encoder)
    planned = S.plan(models, configs, TINY_STEPS)
    assert [p.step.name for p in planned if p.stale] == ["tiny-cls"]
    line = S.format_plan(planned, models)
    assert "tiny-cls was fine-tuned from an older tiny-bert" in line
    assert str(models / "tiny-cls") in line
    # Moved away, it is fine-tuned again from the new encoder and is current.
    shutil.move(models / "tiny-cls", models.parent / "tiny-cls-old")
    results = S.run_setup(models, configs, RUNNERS, TINY_STEPS)
    assert [r.built for r in results] == [False, False, True]
    assert not any(p.stale for p in S.plan(models, configs, TINY_STEPS))


def test_staleness_is_judged_by_content_not_file_times(tmp_path: Path) -> None:
    """A fine-tune newer or older on disk than its encoder is judged by the encoder's weights
    digest alone; one without ``init_digest`` (made before llmos recorded it) is not judged."""
    models = tmp_path / "models"
    encoder = models / "enc" / "checkpoint"
    tuned = models / "cls" / "checkpoint"
    for d in (encoder, tuned):
        d.mkdir(parents=True)
        (d / "config.json").write_text("{}")
    (encoder / "model.safetensors").write_bytes(b"weights v1")
    steps = (
        S.Step("enc", "pretrain", 0.1, config="enc.yaml"),
        S.Step("cls", "finetune", 0.1, config="cls.yaml", init="enc"),
    )

    def stale(provenance: dict) -> bool:
        task = {"task": "classification", "labels": ["neg", "pos"], **provenance}
        (tuned / "task.json").write_text(json.dumps(task))
        return [p.step.name for p in S.plan(models, tmp_path, steps) if p.stale] == ["cls"]

    v1 = weights_digest(encoder)
    assert v1 is not None and v1.startswith("sha256:")
    os.utime(encoder / "config.json", ns=(0, 2 * 10**18))  # the encoder "newer" on disk
    assert not stale({"init": str(encoder), "init_digest": v1})
    (encoder / "model.safetensors").write_bytes(b"weights v2")
    os.utime(encoder / "config.json", ns=(0, 0))  # the encoder "older" on disk
    assert stale({"init": str(encoder), "init_digest": v1})
    assert not stale({"init": str(encoder)})  # an old fine-tune: not judged
    assert not stale({"init": str(tmp_path / "elsewhere"), "init_digest": v1})


def test_demo_key_is_new_and_works_every_time(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    first, _, created = S.demo_key("demo", url)
    second, _, created_again = S.demo_key("demo", url)
    assert created and not created_again
    assert first != second
    store = Store(url)
    try:
        users = {store.authenticate(k).name for k in (first, second)}
        assert users == {"demo"} and store.user("demo").is_admin
        assert [u.name for u in store.users()] == ["demo"]
    finally:
        store.close()


def test_cli_second_run_prints_the_summary_and_a_working_key(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("LLMOS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LLMOS_DATABASE_URL", f"sqlite:///{tmp_path / 'store.db'}")
    models = tmp_path / "runs"
    fake_outputs(models)
    keys = []
    for _ in range(2):
        assert main(["setup", "--models", str(models), "--demo-user", "demo"]) == 0
        out = capsys.readouterr().out
        assert "nothing to do" in out
        assert f"setup: 0 built, {len(S.DEFAULT_STEPS)} kept" in out
        keys.append(out.split("API key: ")[1].split()[0])
    assert keys[0] != keys[1]
    store = Store()
    try:
        assert {store.authenticate(k).name for k in keys} == {"demo"}
    finally:
        store.close()


def test_cli_setup_queues_the_demo_recommenders_sequential_model_once(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import numpy as np

    from llmos.apps.recommend.sequential import JOB_KIND
    from llmos.apps.recommend.train import train_recommender
    from llmos.data.interactions import Interactions, Item

    monkeypatch.setenv("LLMOS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LLMOS_DATABASE_URL", f"sqlite:///{tmp_path / 'store.db'}")
    models = tmp_path / "runs"
    fake_outputs(models)
    demo = models / "movielens" / "checkpoint"  # a real (tiny) recommender in its place
    shutil.rmtree(demo)
    items = [Item(f"i{i}", f"Film {i}", "", ("g",)) for i in range(4)]
    users, cols = np.repeat(np.arange(3), 4), np.tile(np.arange(4), 3)
    inter = Interactions(
        ("a", "b", "c"), tuple(i.id for i in items), users, cols, np.ones(12), np.zeros(12)
    )
    train_recommender(items, demo, inter=inter, catalog="movielens", reg=1.0)
    outs = []
    for _ in range(2):
        assert main(["setup", "--models", str(models), "--demo-user", "demo"]) == 0
        outs.append(capsys.readouterr().out)
    queued, demo_id = queued_jobs("demo")
    assert len(queued) == 1, queued  # not twice
    job = queued[0]
    assert job["kind"] == JOB_KIND and job["user_id"] == demo_id and job["status"] == "queued"
    assert job["params"]["checkpoint"] == str(demo.resolve()) and job["params"]["steps"] == 1200
    assert f"queued job {job['id']} (1200 SASRec steps) for user 'demo'" in outs[0]
    assert "a job worker trains it while the demo is served" in outs[0]
    assert f"job {job['id']} (queued) is training it already" in outs[1]
    task = json.loads((demo / "task.json").read_text())  # as the job leaves it, once done
    (demo / "task.json").write_text(json.dumps(task | {"sasrec": {"steps": 1200}}))
    assert main(["setup", "--models", str(models), "--demo-user", "demo"]) == 0
    assert "has its sequential model" in capsys.readouterr().out


def test_cli_dry_run_prints_the_plan_only(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    configs = str(ROOT / "configs" / "run")
    argv = ["setup", "--models", str(tmp_path / "runs"), "--configs", configs, "--dry-run"]
    assert main(argv) == 0
    out = capsys.readouterr().out.strip()
    assert out.count("\n") == 0 and out.startswith("setup: building bpe-zh, e5-zh, sentiment-zh")
    assert "movielens, materials, gpt-zh into" in out
    assert "bert-zh" not in out
    assert main([*argv, "--with", "bert-zh"]) == 0
    assert "gpt-zh, wordpiece-zh, bert-zh into" in capsys.readouterr().out
    assert main([*argv, "--with", "bert"]) != 0
    err = capsys.readouterr().err
    assert "no optional step set 'bert' (there are: bert-zh, csc-zh)" in err
    assert not (tmp_path / "runs").exists()


def test_default_steps_use_every_quick_config() -> None:
    """configs/run holds exactly the default and optional steps' configs, each fine-tune
    starting from the step it names and the trim step reading the model it imports (so each
    config also runs alone from the repository root)."""
    every = S.steps_with(list(S.OPTIONAL_STEPS))
    shipped = {p.name for p in (ROOT / "configs" / "run").glob("*.yaml")}
    assert shipped == {s.config for s in every if s.config}
    runs = {s.name: S.output_of(s, Path("runs")) for s in every}
    for step in every:
        config = ROOT / "configs" / "run" / str(step.config)
        if step.kind == "finetune":
            cfg = load_config(FinetuneConfig, config)
            assert (cfg.name, cfg.init) == (step.name, str(runs[str(step.init)]))
        elif step.kind == "pretrain":
            assert load_config(PretrainConfig, config).name == step.name
        elif step.kind == "trim":
            trim = load_config(TrimVocabConfig, config)
            assert (trim.checkpoint, trim.out_dir) == (step.source, str(runs[step.name]))
    assert S.plan(Path("runs"), ROOT / "configs" / "run", every)  # every config is found


def test_headline_of_a_multitask_run_names_every_head(tmp_path: Path) -> None:
    step = S.Step("support-zh", "finetune", 1.0, config="support-zh.yaml", init="e5-zh")
    out = tmp_path / "support-zh" / "checkpoint"
    out.mkdir(parents=True)
    report = {
        "heads": {
            "intent": {"accuracy": 0.9512, "macro_f1": 0.9},
            "slots": {"f1": 0.8834, "per_type": {}},
            "sentiment": {"accuracy": 0.871, "macro_f1": 0.87},
        }
    }
    (out.parent / "report.json").write_text(json.dumps(report))
    assert S.headline_metric(step, out) == (
        "test intent accuracy 95.12%, slots span F1 88.34, sentiment accuracy 87.10%"
    )


def test_the_recommend_step_measures_then_trains_the_movielens_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_encoder: Path
) -> None:
    from llmos.apps.recommend.demo import HALF_LIFE_DAYS, setup_movielens
    from llmos.checkpoint.recommender import read_recommender

    monkeypatch.setenv("LLMOS_HOME", str(tmp_path / "home"))
    models = tmp_path / "runs"
    steps = (
        S.Step("enc", "import", 0.1, source="unused"),
        S.Step("movielens", "recommend", 0.1, init="enc"),
    )
    shutil.copytree(tiny_encoder, models / "enc")  # the encoder step, already done
    runners = S.Runners(import_hf, pretrain, finetune, trim_vocab, recommend=setup_movielens)
    with pytest.raises(LlmosError, match=r"ml-100k\.item not found: run `llmos data prepare`"):
        S.run_setup(models, tmp_path, runners, steps)
    root = tmp_path / "home" / "data" / "tasks" / "movielens"
    root.mkdir(parents=True)
    (root / "ml-100k.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        + "".join(f"{i}\tFilm {i}\t1990\t{'Comedy' if i < 5 else 'Horror'}\n" for i in range(10)),
        encoding="utf-8",
    )
    rows = [f"u{u}\t{i}\t4\t{u}" for u in range(30) for i in range(10) if (i < 5) == (u % 2 == 0)]
    (root / "ml-100k.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "\n".join(rows) + "\n",
        encoding="utf-8",
    )
    (result,) = [r for r in S.run_setup(models, tmp_path, runners, steps) if r.built]
    ck = read_recommender(models / "movielens" / "checkpoint")
    assert ck.catalog == "movielens" and ck.num_items == 10 and "content.vectors" in ck.weights
    assert ck.meta["encoder"] == "enc" and ck.meta["trained_on"]["interactions"] == len(rows)
    assert ck.meta["half_life_days"] == HALF_LIFE_DAYS  # popularity decays as measured
    recall = ck.meta["evaluation"]["recall@10"]
    assert recall == 1.0  # every held-out film is one of the user's own four unseen ones
    assert result.metric == "150 interactions; RecBole protocol: recall@10 1.0000, NDCG@10 1.0000"
    assert S.plan(models, tmp_path, steps)[1].done  # a second setup keeps it


def test_the_materials_step_indexes_a_sample_where_the_server_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_encoder: Path
) -> None:
    """The step embeds MATERIAL_DOCS documents spread evenly over the prepared corpus with the
    encoder step's model, into the server's default place; a second setup keeps the index, and
    one after the encoder was rebuilt builds it again (the server ignores an index of another
    encoder)."""
    from llmos.apps.support.local import PipelineEmbedder
    from llmos.apps.write.materials import MaterialIndex
    from llmos.apps.write.suggestions import Materials, setup_materials, shared_index_dir
    from llmos.data.materials import SourceDocument

    monkeypatch.setenv("LLMOS_HOME", str(tmp_path / "home"))
    models = tmp_path / "runs"
    steps = (
        S.Step("enc", "import", 0.1, source="unused"),
        S.Step("materials", "materials", 0.1, init="enc"),
    )
    shutil.copytree(tiny_encoder, models / "enc")  # the encoder step, already done
    runners = S.Runners(import_hf, pretrain, finetune, trim_vocab, materials=setup_materials)
    planned = S.plan(models, tmp_path, steps)
    assert planned[1].output == shared_index_dir() and not planned[1].done
    with pytest.raises(LlmosError, match=r"manifest\.json not found: run `llmos data prepare`"):
        S.run_setup(models, tmp_path, runners, steps)
    docs = [
        SourceDocument("sanguo", "sanguo-001", "第一回", ("我们今天讨论经济。", "他喜欢文化。")),
        SourceDocument("sanguo", "sanguo-002", "第二回", ("老师研究历史。",)),
        SourceDocument("peoples_daily", "peoples_daily-0001", "新闻", ("政府支持农村教育。",)),
        SourceDocument("peoples_daily", "peoples_daily-0002", "报道", ("工人建设城市。",)),
        SourceDocument("tang", "tang-000001", "静夜思 · 李白", ("床前明月光", "疑是地上霜")),
        SourceDocument("tang", "tang-000002", "春晓 · 孟浩然", ("春眠不觉晓", "处处闻啼鸟")),
        SourceDocument("songci", "songci-000001", "念奴娇 · 苏轼", ("大江东去", "浪淘尽")),
    ]
    version = write_materials(tmp_path / "home" / "data", docs)
    monkeypatch.setattr(S, "MATERIAL_DOCS", 3)  # 3 of the 7: every 7/3-th, from the first
    (tmp_path / "no-npm").mkdir()
    with monkeypatch.context() as m:  # no npm on the PATH: the poems are prepared already
        m.setenv("PATH", str(tmp_path / "no-npm"))
        (result,) = [r for r in S.run_setup(models, tmp_path, runners, steps) if r.built]
    index = MaterialIndex.load(shared_index_dir())
    picked = sorted(d["doc"] for d in index.documents.values())  # documents 0, 2 and 4
    assert picked == ["peoples_daily-0001", "sanguo-001", "tang-000001"]
    assert index.encoder == weights_digest(models / "enc") and index.version == version
    assert len(index) == 3  # a passage each (short paragraphs merge)
    assert result.metric == (
        "3 documents, 3 passages (a sample of 7; llmos write materials build indexes all)"
    )
    Materials(PipelineEmbedder(models / "enc"), index)  # the encoder the server would embed with
    assert S.plan(models, tmp_path, steps)[1].done
    saved = (shared_index_dir() / "dense.faiss").read_bytes()
    assert [r.built for r in S.run_setup(models, tmp_path, runners, steps)] == [False, False]
    assert (shared_index_dir() / "dense.faiss").read_bytes() == saved
    retrain(models / "enc")
    planned = S.plan(models, tmp_path, steps)
    assert not planned[1].done and planned[1].outdated
    assert f"{shared_index_dir()} was embedded by another encoder than enc" in S.format_plan(
        planned, models
    )
    assert [r.built for r in S.run_setup(models, tmp_path, runners, steps)] == [False, True]
    assert MaterialIndex.load(shared_index_dir()).encoder == weights_digest(models / "enc")
    assert S.plan(models, tmp_path, steps)[1].done
