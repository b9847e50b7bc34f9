"""Config loading: every shipped YAML parses; bad keys and types are one-line errors."""

from pathlib import Path

import pytest

from llmos.config import DistillConfig, FinetuneConfig, PretrainConfig, load_config
from llmos.config.trim_vocab import TrimVocabConfig
from llmos.errors import ConfigError
from llmos.recipes.defaults import OPTIONAL_STEPS, steps_with

ROOT = Path(__file__).resolve().parents[2]


KINDS = {"pretrain": PretrainConfig, "finetune": FinetuneConfig, "distill": DistillConfig}
# configs/run: the quick configs `llmos setup` trains, pretraining and fine-tuning side by side,
# and the trim-vocab settings of the encoder it imports.
RUN_KINDS = {s.config: s.kind for s in steps_with(list(OPTIONAL_STEPS)) if s.config}
# The command each directory's configs start with, and the run name it gives (from the stem).
COMMANDS = {
    "pretrain": ("llmos pretrain --config configs/pretrain/{name}", "{stem}"),
    "finetune": ("llmos finetune --config configs/finetune/{name}", "{stem}"),
    "distill": (
        "llmos compress distill --teacher runs/{stem}/checkpoint --student configs/distill/{name}",
        "distill-{stem}",
    ),
}
SHIPPED = sorted((ROOT / "configs").glob("*/*.yaml"))


def test_every_config_directory_is_known() -> None:
    assert {p.parent.name for p in SHIPPED} == {*KINDS, "run"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_configs_parse(path: Path) -> None:
    kind = path.parent.name
    if kind == "run":
        kind = RUN_KINDS[path.name]
    if kind == "trim":  # no --config of its own: the import, then trim-vocab's flags
        assert path.read_text().startswith("# llmos convert --from-hf ")
        assert load_config(TrimVocabConfig, path).out_dir == f"runs/{path.stem}"
        return
    command, run_name = COMMANDS[kind]
    command = command.replace(f"configs/{kind}/", f"configs/{path.parent.name}/")
    first = path.read_text().splitlines()[0]
    assert first == "# " + command.format(name=path.name, stem=path.stem), "starts with its command"
    cfg = load_config(KINDS[kind], path)
    assert cfg.name == run_name.format(stem=path.stem)


def test_overrides_are_typed_and_dotted() -> None:
    cfg = load_config(
        PretrainConfig,
        None,
        ["train.max_steps=7", "optim.lr=3e-4", "data.objective=mlm", "model.dropout=0"],
    )
    assert cfg.train.max_steps == 7
    assert cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.data.objective == "mlm"
    assert cfg.model.dropout == 0.0 and isinstance(cfg.model.dropout, float)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.max_stepz=5", "unknown key 'train.max_stepz'"),
        ("train.max_steps=abc", "train.max_steps: expected an integer, got 'abc'"),
        ("train.progress=maybe", "train.progress: expected true or false"),
        (
            "data.objective=gpt",
            "data.objective: expected one of ['mlm+nsp', 'mlm', 'clm', 'plm', 'contrastive'] "
            "or null",
        ),
        ("model.num_heads=3", "model.hidden_size (256) must be divisible by model.num_heads (3)"),
        ("optim.lr=-1", "optim.lr must be positive"),
        ("trainmax_steps", "expected key=value"),
        ("train=3", "train: expected a mapping"),
    ],
)
def test_bad_overrides_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(PretrainConfig, None, [override])
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_yaml_file_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("train:\n  batch_size: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_config(PretrainConfig, p)
    p.write_text("train:\n  batch_sise: 4\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown key 'train.batch_sise'"):
        load_config(PretrainConfig, p)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(PretrainConfig, tmp_path / "missing.yaml")


def test_crf_is_for_tagging_only() -> None:
    assert load_config(FinetuneConfig, None, ["task=tagging", "crf=true"]).crf
    with pytest.raises(
        ConfigError,
        match="crf is a sequence-labelling head: it needs task: tagging, got task: classification",
    ):
        load_config(FinetuneConfig, None, ["crf=true"])  # the default task: classification
