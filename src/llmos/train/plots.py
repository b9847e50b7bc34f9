"""Loss curves as PNG, drawn from ``metrics.jsonl``."""

from __future__ import annotations

import json
import math
from pathlib import Path

from llmos.files import atomic_path


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_losses(metrics_path: Path, out_png: Path, title: str = "") -> Path:
    """Plot train and validation losses (and validation perplexity) against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    train = [r for r in rows if r.get("split") == "train"]
    valid = [r for r in rows if r.get("split") == "valid"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    for key in ("loss", "mlm_loss", "nsp_loss"):
        pts = [(r["step"], r[key]) for r in train if key in r]
        if pts:
            ax.plot(*zip(*pts, strict=True), label=f"train {key}", alpha=0.8)
    for key in ("loss", "mlm_loss"):
        pts = [(r["step"], r[key]) for r in valid if key in r]
        if pts:
            ax.plot(*zip(*pts, strict=True), "o-", label=f"valid {key}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title or "loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax = axes[1]
    pts = [(r["step"], r["perplexity"]) for r in valid if r.get("perplexity")]
    if pts and all(math.isfinite(p) for _, p in pts):
        ax.plot(*zip(*pts, strict=True), "o-", color="tab:red")
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("validation perplexity")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return out_png
