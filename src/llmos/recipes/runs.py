"""What every training recipe does before building its model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from llmos.config.loader import to_dict


def start_run(cfg: Any) -> Path:
    """Create ``out_dir/name``, save the run's config there as ``config.yaml``, and seed torch
    with ``train.seed`` so the model starts from the same weights on every rank and every
    resume. Returns the run directory."""
    run_dir = Path(cfg.out_dir).expanduser() / cfg.name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(
        yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True)
    )
    torch.manual_seed(cfg.train.seed)
    return run_dir
