"""Run RecBole 1.2.1 models on a pre-made split, as the reference for bench/recommend_eval.py.

This script runs INSIDE RecBole's own virtualenv (bench/recbole_env.sh builds it), never in
llmos's: RecBole is not an llmos dependency. Run it as a subprocess:

    PY=$(bash bench/recbole_env.sh | tail -1)
    "$PY" bench/recbole_run.py --data DIR --dataset NAME --model EASE --model BPR \
        [--epochs N] [--seed S] [--threads T]

With ``--leave-one-out`` (sequential models such as SASRec) DIR/NAME/NAME.inter is read whole
(``user_id``, ``item_id``, ``timestamp``) and RecBole splits it as it does for its sequential
models: each user's interactions in time order, the last held out for test, the one before for
validation, the rest to train (``eval_args``: ``split: {LS: valid_and_test}``, ``order: TO``),
full ranking; SASRec trains with its full-softmax CE loss (no negative sampling).

Otherwise DIR/NAME holds the split as RecBole benchmark atomic files NAME.train.inter,
NAME.valid.inter and NAME.test.inter (header
``user_id:token  item_id:token  rating:float  timestamp:float``, tab-separated). RecBole uses
exactly these files (``benchmark_filename``), every interaction is a positive (no rating
threshold), evaluation is full ranking over all items with Recall, MRR, NDCG, Hit and
Precision @10, early stopping on valid NDCG@10, CPU only; everything else is RecBole's
default, model hyper-parameters included.

For each model one line goes to stdout:

    RESULT {"model": ..., "test": {"recall@10": ...}, "valid": {...}, "train_seconds": ...,
            "seconds_per_epoch": ..., "epochs": ..., "best_epoch": ...}

``valid`` and ``test`` are the best-validation checkpoint evaluated on the valid and the test
split (unrounded; RecBole itself rounds to 4 places, and early stopping still sees those).
``train_seconds`` is model construction (where closed-form models such as EASE solve) plus
the training passes, without validation. ``seconds_per_epoch`` is null for models that
RecBole's TraditionalTrainer fits in a single pass (EASE, Pop, ItemKNN, ...). RecBole's log,
checkpoints and tensorboard files go to a temporary directory that is removed at the end
(``--keep-tmp`` keeps it and prints its path to stderr).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

# RecBole 1.2.1 reloads its best checkpoint (config object, scipy matrices for EASE) with a
# bare torch.load, which torch >= 2.6 refuses under its weights_only default. Must be set
# before torch is imported.
os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

# RecBole's config hard-wires this name to its bundled copy of ML-100K (data_path and
# properties/dataset/ml-100k.yaml), so the split is linked in under a neutral name instead.
INTERNAL_NAME = "llmos_split"
PARTS = ("train", "valid", "test")
METRICS = ["Recall", "MRR", "NDCG", "Hit", "Precision"]
TOPK = 10


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--data", required=True, type=Path, help="directory holding NAME/")
    p.add_argument("--dataset", required=True, help="NAME: DIR/NAME/NAME.{train,valid,test}.inter")
    p.add_argument("--model", action="append", required=True, help="RecBole model; repeatable")
    p.add_argument("--epochs", type=int, default=None, help="max epochs (RecBole default 300)")
    p.add_argument("--seed", type=int, default=2020, help="RecBole seed (default 2020)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--keep-tmp", action="store_true", help="keep logs/checkpoints")
    p.add_argument(
        "--leave-one-out",
        action="store_true",
        help="DIR/NAME/NAME.inter whole, split by RecBole itself as for its sequential models: "
        "each user's interactions in time order, the last to test, the one before to valid",
    )
    return p.parse_args(argv)


def link_split(data: Path, name: str, root: Path, whole: bool = False) -> None:
    """Symlink DIR/NAME/NAME.<part>.inter as root/INTERNAL_NAME/INTERNAL_NAME.<part>.inter
    (``whole``: DIR/NAME/NAME.inter as INTERNAL_NAME.inter)."""
    target = root / INTERNAL_NAME
    target.mkdir(parents=True)
    if whole:
        src = (data / name / f"{name}.inter").resolve()
        if not src.is_file():
            raise SystemExit(f"recbole_run.py: missing {src}")
        (target / f"{INTERNAL_NAME}.inter").symlink_to(src)
        return
    for part in PARTS:
        src = (data / name / f"{name}.{part}.inter").resolve()
        if not src.is_file():
            raise SystemExit(f"recbole_run.py: missing {src}")
        (target / f"{INTERNAL_NAME}.{part}.inter").symlink_to(src)


def quiet_logging(log_file: Path) -> None:
    """Send RecBole's logging (it logs on the root logger) to a file, nothing to the console."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    warnings.filterwarnings("ignore")


def config_dict(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "data_path": str(root),
        "checkpoint_dir": str(root / "saved"),
        "benchmark_filename": list(PARTS),
        "load_col": {"inter": ["user_id", "item_id"]},
        "threshold": None,  # every interaction is a positive, as in RecBole's ml-100k default
        # split/order/group_by are not used: benchmark_filename gives the split itself
        "eval_args": {"mode": {"valid": "full", "test": "full"}},
        "metrics": METRICS,
        "topk": [TOPK],
        "valid_metric": f"NDCG@{TOPK}",
        "valid_metric_bigger": True,
        "use_gpu": False,
        "gpu_id": "",
        "seed": args.seed,
        "reproducibility": True,
        "show_progress": False,
        "save_dataset": False,
        "save_dataloaders": False,
        "log_wandb": False,
        "state": "INFO",
    }
    if args.leave_one_out:  # RecBole's defaults for sequential models, on the whole file
        del cfg["benchmark_filename"]
        cfg["load_col"] = {"inter": ["user_id", "item_id", "timestamp"]}
        cfg["eval_args"] = {
            "split": {"LS": "valid_and_test"},
            "order": "TO",
            "group_by": "user",
            "mode": {"valid": "full", "test": "full"},
        }
        cfg["train_neg_sample_args"] = None  # SASRec's CE loss ranks against every item
    if args.epochs is not None:
        cfg["epochs"] = args.epochs
    return cfg


def as_floats(result: dict[str, Any] | None) -> dict[str, float]:
    return {k: float(v) for k, v in (result or {}).items()}


def check_models(names: list[str]) -> None:
    """Fail early, and clearly, on a name that is no RecBole model class.

    (recbole.utils.get_model would end in its exlib package, which needs lightgbm/xgboost.)
    """
    import importlib

    packages = [
        importlib.import_module(f"recbole.model.{kind}_recommender")
        for kind in ("general", "context_aware", "sequential", "knowledge_aware")
    ]
    unknown = [n for n in names if not any(isinstance(getattr(p, n, None), type) for p in packages)]
    if unknown:
        raise SystemExit(f"recbole_run.py: not a RecBole model (case-sensitive): {unknown}")


def run_model(model_name: str, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Train one model with RecBole's own pipeline (as recbole.quick_start.run_recbole)."""
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.evaluator import Evaluator
    from recbole.utils import ModelType, get_model, get_trainer, init_seed

    # Config also reads "--key=value" pairs from sys.argv; only config_dict may configure it.
    argv, sys.argv = sys.argv, sys.argv[:1]
    cfg = config_dict(args, root)
    try:
        config = Config(model=model_name, dataset=INTERNAL_NAME, config_dict=cfg)
    finally:
        sys.argv = argv
    init_seed(config["seed"], config["reproducibility"])
    logger = logging.getLogger()
    logger.info("%s", config)
    dataset = create_dataset(config)
    logger.info("%s", dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    t0 = time.perf_counter()
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    init_seconds = time.perf_counter() - t0
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)

    # Time the training passes only (fit() also runs a validation after each epoch), and
    # note the epoch of each new best checkpoint.
    epoch_seconds: list[float] = []
    saved_epochs: list[int] = []
    train_epoch = trainer._train_epoch
    save_checkpoint = trainer._save_checkpoint

    def timed_train_epoch(*a: Any, **kw: Any) -> Any:
        start = time.perf_counter()
        try:
            return train_epoch(*a, **kw)
        finally:
            epoch_seconds.append(time.perf_counter() - start)

    def noted_save_checkpoint(epoch: int, *a: Any, **kw: Any) -> Any:
        saved_epochs.append(epoch)
        return save_checkpoint(epoch, *a, **kw)

    trainer._train_epoch = timed_train_epoch
    trainer._save_checkpoint = noted_save_checkpoint
    trainer.fit(train_data, valid_data, saved=True, show_progress=False)

    # Final numbers unrounded (RecBole rounds to metric_decimal_place=4); set only after fit
    # so that early stopping compares the same rounded scores as stock RecBole.
    config["metric_decimal_place"] = 12
    trainer.evaluator = Evaluator(config)
    valid_result = trainer.evaluate(valid_data, load_best_model=True, show_progress=False)
    test_result = trainer.evaluate(test_data, load_best_model=True, show_progress=False)

    closed_form = config["MODEL_TYPE"] == ModelType.TRADITIONAL
    fit_seconds = sum(epoch_seconds)
    epochs = len(epoch_seconds)
    return {
        "model": model_name,
        "test": as_floats(test_result),
        "valid": as_floats(valid_result),
        "train_seconds": round(init_seconds + fit_seconds, 3),
        "seconds_per_epoch": None if closed_form or not epochs else round(fit_seconds / epochs, 4),
        "epochs": epochs,
        "best_epoch": saved_epochs[-1] if saved_epochs else None,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data = args.data.resolve()
    tmp = Path(tempfile.mkdtemp(prefix="recbole-run-"))
    log_file = tmp / "recbole.log"
    try:
        link_split(data, args.dataset, tmp / "data", args.leave_one_out)
        quiet_logging(log_file)
        os.chdir(tmp)  # RecBole writes ./log_tensorboard relative to the working directory

        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        check_models(args.model)
        for model_name in args.model:
            try:
                result = run_model(model_name, args, tmp / "data")
            except Exception:
                tail = log_file.read_text(errors="replace").splitlines()[-20:]
                print("\n".join(["recbole_run.py: end of RecBole's log:", *tail]), file=sys.stderr)
                raise
            print("RESULT " + json.dumps(result), flush=True)
    finally:
        logging.shutdown()
        if args.keep_tmp:
            print(f"recbole_run.py: kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
