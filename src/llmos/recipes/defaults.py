"""Recipe: build the default model set (``llmos setup``, which ``make run`` calls).

The steps, in order: the Chinese byte-level BPE tokenizer; ``e5-zh``, the real pretrained
multilingual-e5-small imported from its registry package and its vocabulary trimmed to the
pieces the Chinese and English data use; the Chinese sentiment, intent and NER models
fine-tuned from it, and the customer-service app's NLU model (intent, slots and sentiment
heads on one encoder); the imported all-MiniLM-L6-v2 and an English intent model fine-tuned from
it; the recommendation app's MovieLens model; the writing assistant's shared material index (a
sample of it, see below); and the Chinese GPT, pretrained here. Training steps read the quick
configs of ``configs/run/`` (shortened to fit the first-run budget on a 2-core CPU) and write the
standard run directories (``runs/sentiment-zh``, ...), where the server finds them by name.

A step is skipped when its final output exists (a tokenizer's ``tokenizer.json``, a run's
``checkpoint/``, an imported or trimmed model's ``config.json``, the material index's
``meta.json``), whoever made it: a second run
does nothing, and a full-size run trained later with ``configs/pretrain`` or
``configs/finetune`` replaces a quick one and is then kept. A training step killed half-way
resumes from its newest step checkpoint (the recipes' ``resume``). A fine-tune whose encoder was
rebuilt after it is kept too, but the plan says so and how to redo it: a fine-tune records its
encoder's weights digest in ``task.json`` (``init_digest``), and the plan compares it with the
encoder's digest now. A fine-tune from before that field existed is not judged (file times
would be the only evidence, and copies, clock skew and fast machines make them wrong).

The material index (the ``materials`` step) is the shared corpus's (三国演义, People's Daily,
Tang poems and Song ci: :mod:`llmos.data.materials`), embedded with ``e5-zh`` and saved where
the server reads it (``$LLMOS_HOME/apps/write/materials``). All of it (94,882 passages) takes
hours on 2 cores, so setup indexes :data:`MATERIAL_DOCS` documents, spread evenly over the
corpus as ``llmos write materials build --max-docs`` spreads them (every n-th document, so each
corpus keeps its share); ``llmos write materials build`` builds the full index in its place,
which setup then keeps. An index embedded by another encoder than ``e5-zh``'s weights now (its
``meta.json`` names the encoder by weights digest) is of no use to the server, which ignores
it: setup builds the sample again, and the plan says so. Like the fine-tunes' note, this is
judged only when ``e5-zh`` was built before the run. ``llmos setup --background materials``
(what ``make run`` runs) leaves the step to a background job of the demo user instead
(:data:`BACKGROUND_STEPS`: the plan says so and ``run_setup`` skips it; the CLI queues the job,
which a job worker runs while the demo is already served).

The recipes a step runs (``pretrain``, ``finetune``, ``convert``'s ``import_hf``,
``trim_vocab``) and the apps' builders (the recommender, the material index) are handed in by
the caller as :class:`Runners` (the CLI builds them), so this recipe imports no other recipe
and no app. That is also why this module is past 500 lines: it is one recipe (plan, build,
report), and a recipe may not import another (tests/test_layering.py), so it is not split into
two.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from llmos.checkpoint.digest import weights_digest
from llmos.checkpoint.headline import INDEX_MARKER, headline
from llmos.checkpoint.task import parse_task
from llmos.errors import ConfigError, LlmosError
from llmos.paths import data_dir, llmos_home, tokenizers_dir

log = logging.getLogger("llmos.recipes")

DEFAULT_CONFIGS = "configs/run"
# Present once a checkpoint directory is complete: save_checkpoint writes it last, atomically.
COMPLETE_MARKER = "config.json"
# Documents of the shared corpus the materials step indexes (of 81,831): chosen so that the step
# takes about 2 minutes. They make 2,927 passages, embedded and saved in 115 s by the step (108 s
# by `llmos write materials build --max-docs 2500`), each end to end with 1 torch thread on 2
# cores shared with another CPU-heavy run (Intel Xeon; docs/BENCHMARKS.md "Material
# suggestions"). Mostly poems, as the corpus is: 4 三国演义 chapters, 94 People's Daily articles,
# 1,760 Tang poems, 642 Song ci.
MATERIAL_DOCS = 2500


@dataclass(frozen=True)
class Step:
    """One thing to build.

    Attributes:
        name: the tokenizer's name under ``$LLMOS_HOME/tokenizers``, or the model's directory
            under the models directory (the name the server gives it).
        kind: ``tokenizer``, ``pretrain``, ``finetune``, ``import`` (``llmos convert``),
            ``trim`` (``llmos compress trim-vocab``), ``recommend`` (the recommendation app's
            MovieLens model, ``llmos recommend train``) or ``materials`` (a sample of the
            writing assistant's shared material index, ``llmos write materials build
            --max-docs``, saved in ``$LLMOS_HOME/apps/write/materials`` whatever the name).
        minutes: how long it took on the reference machine (2 cores; docs/BENCHMARKS.md).
        config: the YAML file under the configs directory (training and trim steps; a trim
            step's file holds :class:`~llmos.config.trim_vocab.TrimVocabConfig`'s fields).
        init: the step whose checkpoint a fine-tune starts from, a trim step trims, a
            recommend step embeds its catalog with, or a materials step embeds the passages
            with.
        source: ``KIND:CORPUS:VOCAB`` of a tokenizer, or the packaged model (or Hugging Face
            directory) an import reads; a trim step with a source imports it into a scratch
            directory first and keeps only the trimmed model.
    """

    name: str
    kind: Literal["tokenizer", "pretrain", "finetune", "import", "trim", "recommend", "materials"]
    minutes: float
    config: str | None = None
    init: str | None = None
    source: str | None = None


# Minutes measured by `llmos setup` end to end on the reference machine (docs/BENCHMARKS.md).
DEFAULT_STEPS: tuple[Step, ...] = (
    Step("bpe-zh", "tokenizer", 0.3, source="bpe:zh:8000"),
    Step("e5-zh", "trim", 0.9, config="e5-zh.yaml", source="multilingual-e5-small"),
    Step("sentiment-zh", "finetune", 3.9, config="sentiment-zh.yaml", init="e5-zh"),
    Step("intent-zh", "finetune", 3.2, config="intent-zh.yaml", init="e5-zh"),
    Step("support-zh", "finetune", 4.5, config="support-zh.yaml", init="e5-zh"),
    Step("ner-zh", "finetune", 2.5, config="ner-zh.yaml", init="e5-zh"),
    Step("minilm", "import", 0.1, source="all-MiniLM-L6-v2"),
    Step("intent-en", "finetune", 2.1, config="intent-en.yaml", init="minilm"),
    Step("support-en", "finetune", 3.6, config="support-en.yaml", init="minilm"),
    Step("movielens", "recommend", 0.3, init="e5-zh"),
    Step("materials", "materials", 1.9, init="e5-zh"),  # MATERIAL_DOCS documents
    Step("gpt-zh", "pretrain", 5.0, config="gpt-zh.yaml"),
)

# Steps that `llmos setup --background NAME` leaves to a background job of the demo user, which
# a job worker runs while the demo is served (the CLI queues it: apps.write.materials_job).
BACKGROUND_STEPS = ("materials",)

# Steps built only when asked for (``llmos setup --with NAME``): the Chinese BERT pretrained
# here from nothing, the "pretrain your own" path (its quick run is too small to fine-tune
# from, see docs/BENCHMARKS.md; it is the default set's only fill-mask model).
OPTIONAL_STEPS: dict[str, tuple[Step, ...]] = {
    "bert-zh": (
        Step("wordpiece-zh", "tokenizer", 0.1, source="wordpiece:zh:21128"),
        Step("bert-zh", "pretrain", 7.1, config="bert-zh.yaml"),
    ),
    # The writing assistant's spelling model (the server's --write-model): 2,000 steps.
    "csc-zh": (Step("csc-zh", "finetune", 50.0, config="csc-zh.yaml", init="e5-zh"),),
}


def steps_with(names: Sequence[str] = ()) -> tuple[Step, ...]:
    """The default steps, then those of each optional set named (``OPTIONAL_STEPS``)."""
    unknown = [n for n in names if n not in OPTIONAL_STEPS]
    if unknown:
        raise ConfigError(
            f"no optional step set {unknown[0]!r} (there are: {', '.join(OPTIONAL_STEPS)})"
        )
    extra = [s for n in dict.fromkeys(names) for s in OPTIONAL_STEPS[n]]
    return (*DEFAULT_STEPS, *extra)


def check_background(names: Sequence[str] = ()) -> tuple[str, ...]:
    """``names`` (once each) if every one is a step that may be built in the background
    (:data:`BACKGROUND_STEPS`)."""
    unknown = [n for n in names if n not in BACKGROUND_STEPS]
    if unknown:
        raise ConfigError(
            f"--background {unknown[0]}: no such step is built in the background (the steps "
            f"that can be: {', '.join(BACKGROUND_STEPS)})"
        )
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class Runners:
    """The recipes the steps run, given by the caller (``llmos setup`` passes
    ``recipes.convert.import_hf``, ``recipes.pretrain.pretrain``, ``recipes.finetune.finetune``,
    ``recipes.trim_vocab.trim_vocab``, ``apps.recommend.demo.setup_movielens`` and
    ``apps.write.suggestions.setup_materials``): ``import_hf(source, out)``,
    ``pretrain(cfg, resume=True)``, ``finetune(cfg, resume=True)``, ``trim_vocab(cfg)``,
    ``recommend(out, encoder)``, ``materials(out, encoder, max_docs)``."""

    import_hf: Callable[[str, Path], Any]
    pretrain: Callable[..., Any]
    finetune: Callable[..., Any]
    trim_vocab: Callable[[Any], Any]
    recommend: Callable[[Path, Path], Any] | None = None
    materials: Callable[[Path, Path, int], Any] | None = None


@dataclass(frozen=True)
class PlannedStep:
    """A step with where its output goes and whether it is already there; ``stale`` when it
    is a fine-tune whose encoder was rebuilt since (setup keeps it: see format_plan);
    ``outdated`` when it is a material index embedded by another encoder than its init's
    weights now (not done: setup builds it again); ``background`` when it is not done and
    left to a background job (``--background``: setup skips it, the CLI queues it)."""

    step: Step
    output: Path
    done: bool
    stale: bool = False
    outdated: bool = False
    background: bool = False


@dataclass(frozen=True)
class StepResult:
    """What a step did: ``built`` False when it was skipped (kept, or left to a background
    job: ``background``); ``metric`` from its report."""

    step: Step
    output: Path
    built: bool
    seconds: float
    metric: str
    background: bool = False


def output_of(step: Step, models: Path) -> Path:
    """Where a step's final output lies; it is done when this exists."""
    if step.kind == "tokenizer":
        return tokenizers_dir() / step.name / "tokenizer.json"
    if step.kind in ("import", "trim"):
        return models / step.name  # an imported or trimmed model is a checkpoint directory itself
    if step.kind == "materials":
        # Where the server reads the shared index by default (serve/app.py: the settings'
        # apps_dir, default $LLMOS_HOME/apps; apps.write.suggestions.shared_index_dir).
        return llmos_home() / "apps" / "write" / "materials"
    return models / step.name / "checkpoint"


def is_done(step: Step, output: Path) -> bool:
    if step.kind == "tokenizer":
        return output.is_file()
    marker = INDEX_MARKER if step.kind == "materials" else COMPLETE_MARKER
    return (output / marker).is_file()


def plan(
    models: str | Path,
    configs: str | Path = DEFAULT_CONFIGS,
    steps: tuple[Step, ...] = DEFAULT_STEPS,
    background: Sequence[str] = (),
) -> list[PlannedStep]:
    """Each step with its output and whether it is done (or, named in ``background``, left to
    a background job). Fails before any work when a step to build has no config file, or a
    fine-tune starts from a step that is not in the list."""
    models, configs = Path(models).expanduser(), Path(configs).expanduser()
    names = {s.name for s in steps}
    out: list[PlannedStep] = []
    digests: dict[Path, str | None] = {}
    for step in steps:
        if step.init is not None and step.init not in names:
            raise ConfigError(f"step {step.name!r} starts from {step.init!r}, which is no step")
        if step.kind in ("recommend", "materials") and step.init is None:
            raise ConfigError(f"step {step.name!r} ({step.kind}) needs init: its encoder's step")
        output = output_of(step, models)
        done = is_done(step, output)
        if not done and step.config is not None and not (configs / step.config).is_file():
            raise ConfigError(
                f"{configs / step.config}: config file not found (run from the repository root, "
                "or pass --configs DIR)"
            )
        stale = outdated = False
        if done and step.init is not None:
            init = next(p for p in out if p.step.name == step.init)
            if step.kind == "materials":
                outdated = init.done and _indexed_with_another(output, init.output, digests)
                done = not outdated
            else:
                stale = init.done and _tuned_from_another(output, init.output, digests)
        later = not done and step.name in background
        out.append(PlannedStep(step, output, done, stale, outdated, later))
    return out


def _indexed_with_another(index: Path, encoder: Path, digests: dict[Path, str | None]) -> bool:
    """Whether the material index in ``index`` was embedded by other weights than
    ``encoder``'s now, or cannot be read: its ``meta.json`` names the encoder as the embedder
    named it (``PipelineEmbedder.name``: the weights digest, else the resolved path), and the
    server ignores an index of another encoder. ``digests`` as for :func:`_tuned_from_another`."""
    try:
        used = json.loads((index / INDEX_MARKER).read_text(encoding="utf-8"))["encoder"]
    except (OSError, ValueError, KeyError, TypeError):
        return True
    if encoder not in digests:
        digests[encoder] = weights_digest(encoder)
    return used != (digests[encoder] or str(encoder.resolve()))


def _tuned_from_another(checkpoint: Path, encoder: Path, digests: dict[Path, str | None]) -> bool:
    """Whether ``checkpoint`` was fine-tuned from ``encoder`` (its task.json says so) when the
    encoder held other weights, i.e. the encoder was rebuilt since: ``init_digest`` differs from
    the encoder's weights digest now. A fine-tune without ``init_digest`` (made before llmos
    recorded it) is not judged, nor is a fine-tune of another encoder (a full-size run on
    bert-en in place of MiniLM): neither is this step's to flag. ``digests`` caches each
    encoder's digest (one read of its weights per plan)."""
    # task.json alone, parsed as read_checkpoint does: read_checkpoint would import torch (for
    # the weights), which planning does not need.
    f = checkpoint / "task.json"
    try:
        extra = parse_task(json.loads(f.read_text(encoding="utf-8")), str(f)).extra
    except (OSError, ValueError, LlmosError):
        return False
    init, digest = extra.get("init"), extra.get("init_digest")
    if not isinstance(init, str) or Path(init).resolve() != encoder.resolve():
        return False
    if not digest:
        return False
    if encoder not in digests:
        digests[encoder] = weights_digest(encoder)
    return digests[encoder] not in (None, digest)


def format_plan(planned: list[PlannedStep], models: str | Path) -> str:
    """One line: what will be built into ``models`` and about how long it takes; then a note
    line per fine-tune kept although its encoder was rebuilt after it."""
    todo = [p.step for p in planned if not p.done and not p.background]
    kept = [p.step.name for p in planned if p.done]
    later = [p.step for p in planned if p.background]
    if not todo and not later:
        line = f"setup: everything is built ({', '.join(kept)}); nothing to do"
    elif not todo:
        line = "setup: nothing to build now" + (
            f"; already built: {', '.join(kept)}" if kept else ""
        )
    else:
        minutes = sum(s.minutes for s in todo)
        line = (
            f"setup: building {', '.join(s.name for s in todo)} into {models}/ "
            f"(about {max(minutes, 1):.0f} min on 2 CPU cores)"
        ) + (f"; already built: {', '.join(kept)}" if kept else "")
    if later:
        line += (
            f"; queued as a background job for the demo user: {', '.join(s.name for s in later)} "
            f"(a job worker builds it while the demo is served, about "
            f"{max(sum(s.minutes for s in later), 1):.0f} min)"
        )
    for p in planned:
        if p.outdated:
            who = "a background job" if p.background else "setup"
            line += (
                f"\nsetup: note: {p.output} was embedded by another encoder than {p.step.init} "
                f"(the server ignores it); {who} indexes a sample of the shared corpus again "
                f"(llmos write materials build indexes all of it)"
            )
        if p.stale:
            line += (
                f"\nsetup: note: {p.step.name} was fine-tuned from an older {p.step.init} "
                f"({p.step.init} was rebuilt after it) and is kept as it is; move "
                f"{Path(models) / p.step.name} away to fine-tune it again from the new one"
            )
    return line


def run_setup(
    models: str | Path,
    configs: str | Path,
    runners: Runners,
    steps: tuple[Step, ...] = DEFAULT_STEPS,
    background: Sequence[str] = (),
) -> list[StepResult]:
    """Build every step whose output is missing, in order, with ``runners``' recipes, but
    those named in ``background`` (left to a job: the caller queues it); returns one result
    per step."""
    models, configs = Path(models).expanduser(), Path(configs).expanduser()
    planned = plan(models, configs, steps, background)
    outputs = {p.step.name: p.output for p in planned}
    todo = [p for p in planned if not p.done and not p.background]
    results = []
    for p in planned:
        step = p.step
        if p.background:
            results.append(StepResult(step, p.output, False, 0.0, "left to a job", True))
            continue
        if p.done:
            results.append(StepResult(step, p.output, False, 0.0, headline_metric(step, p.output)))
            continue
        n = todo.index(p) + 1
        log.info(
            "step %d/%d: %s (%s, about %.1f min)", n, len(todo), step.name, step.kind, step.minutes
        )
        start = time.perf_counter()
        build(step, models, configs, outputs, runners)
        seconds = time.perf_counter() - start
        results.append(StepResult(step, p.output, True, seconds, headline_metric(step, p.output)))
        log.info("step %d/%d: %s done in %s", n, len(todo), step.name, _duration(seconds))
    return results


def build(
    step: Step, models: Path, configs: Path, outputs: dict[str, Path], runners: Runners
) -> None:
    """Run one step (a tokenizer's trainer is imported here: planning needs no torch)."""
    if step.kind == "tokenizer":
        from llmos.text.tokenizer import train_tokenizer

        kind, corpus, vocab = str(step.source).split(":")
        files = [data_dir() / "corpus" / corpus / "train.txt"]
        train_tokenizer(kind, files, int(vocab), tokenizers_dir() / step.name)
    elif step.kind == "import":
        runners.import_hf(str(step.source), models / step.name)
    elif step.kind == "trim":
        _trim(step, models, configs, outputs, runners)
    elif step.kind == "recommend":
        if runners.recommend is None:
            raise LlmosError(f"step {step.name!r} needs a recommend runner")
        runners.recommend(models / step.name / "checkpoint", outputs[str(step.init)])
    elif step.kind == "materials":
        if runners.materials is None:
            raise LlmosError(f"step {step.name!r} needs a materials runner")
        runners.materials(outputs[step.name], outputs[str(step.init)], MATERIAL_DOCS)
    elif step.kind == "pretrain":
        from llmos.config import PretrainConfig, load_config

        cfg = load_config(PretrainConfig, configs / str(step.config), _overrides(step, models))
        _check_resumable(cfg, models / step.name, "pretrain", configs / str(step.config))
        runners.pretrain(cfg, resume=True)
    else:
        from llmos.config import FinetuneConfig, load_config

        extra = [f"init={json.dumps(str(outputs[step.init]))}"] if step.init else []
        cfg = load_config(
            FinetuneConfig, configs / str(step.config), [*_overrides(step, models), *extra]
        )
        _check_resumable(cfg, models / step.name, "finetune", configs / str(step.config))
        runners.finetune(cfg, resume=True)


def _trim(
    step: Step, models: Path, configs: Path, outputs: dict[str, Path], runners: Runners
) -> None:
    """Trim the vocabulary of ``step.init``'s output, of ``step.source`` imported into a
    scratch directory beside the output (removed afterwards: only the trimmed model stays), or
    of the config's own ``checkpoint``. A scratch directory left by a killed run (a full-size
    import: hundreds of MB) is removed first."""
    from llmos.config import load_config
    from llmos.config.trim_vocab import TrimVocabConfig

    out = [f"out_dir={json.dumps(str(models / step.name))}"]
    if step.init is not None:
        out.append(f"checkpoint={json.dumps(str(outputs[step.init]))}")
    if step.source is None:
        runners.trim_vocab(load_config(TrimVocabConfig, configs / str(step.config), out))
        return
    models.mkdir(parents=True, exist_ok=True)
    for left in models.glob(f".{step.name}-import-*"):
        shutil.rmtree(left, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=f".{step.name}-import-", dir=models) as scratch:
        imported = Path(scratch) / "model"
        runners.import_hf(step.source, imported)
        out.append(f"checkpoint={json.dumps(str(imported))}")
        runners.trim_vocab(load_config(TrimVocabConfig, configs / str(step.config), out))


def _overrides(step: Step, models: Path) -> list[str]:
    # JSON quoting makes any path a YAML string.
    return [f"out_dir={json.dumps(str(models))}", f"name={step.name}"]


def _check_resumable(cfg: Any, run_dir: Path, verb: str, config: Path) -> None:
    """Refuse to resume another config's unfinished run (a full-size run killed half-way):
    continuing it with the quick schedule would mix the two."""
    from llmos.config.loader import to_dict

    if not any((run_dir / "checkpoints").glob("step-*")):
        return
    try:
        saved = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        saved = {}
    ours = to_dict(cfg)
    if all(saved.get(k) == ours[k] for k in ("data", "optim", "train")):
        return
    raise LlmosError(
        f"{run_dir} holds an unfinished run of another config; finish it (llmos {verb} "
        f"--config ITS_CONFIG --resume) or move it away, then run setup again (it would train "
        f"{config})"
    )


def headline_metric(step: Step, output: Path) -> str:
    """The headline metric of a built step (:func:`~llmos.checkpoint.headline.headline`)."""
    return headline(step.kind, output)


def format_summary(results: list[StepResult]) -> str:
    """A table: each step, built or kept, its metric and the time it took."""
    width = max(len(r.step.name) for r in results)
    lines = []
    for r in results:
        took = _duration(r.seconds) if r.built else "background" if r.background else "kept"
        lines.append(f"  {r.step.name:<{width}}  {took:>10}  {r.metric}")
    total = sum(r.seconds for r in results)
    built, later = sum(r.built for r in results), sum(r.background for r in results)
    kept = f"{len(results) - built - later} kept" + (
        f", {later} in the background" if later else ""
    )
    lines.append(f"setup: {built} built, {kept}, {_duration(total)} in all")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s:02d} s" if m else f"{s} s"


def demo_key(name: str = "demo", url: str | None = None) -> tuple[str, str, bool]:
    """Make sure the admin user ``name`` exists and give it a new API key.

    Keys are stored hashed, so an old one cannot be shown again: every call issues a new key
    (older keys keep working). Returns ``(key, store url, created)``.
    """
    from llmos.store.db import Store

    store = Store(url)
    try:
        user = store.user(name)
        if user is None:
            _, key = store.create_user(name, admin=True)
            return key, store.url, True
        if not user.is_admin:
            log.warning("user %r exists and is not an admin; the demo key is a user key", name)
        return store.create_key(user.id), store.url, False
    finally:
        store.close()
