"""Run under torchrun by test_trainer.py: pretrain, then save this rank's parameters."""

import sys
from pathlib import Path

import torch.distributed as dist
from safetensors.torch import save_file

from llmos.config import PretrainConfig, load_config
from llmos.models.bert import BertForPreTraining
from llmos.train.loop import fit
from llmos.train.tasks.mlm import setup_mlm_pretraining

cfg = load_config(PretrainConfig, sys.argv[1], ["name=ddp"])
out = Path(sys.argv[2])
setup = setup_mlm_pretraining(cfg)
cfg, tokenizer, task = setup.cfg, setup.tokenizer, setup.task
import torch  # noqa: E402

torch.manual_seed(cfg.train.seed)
model = BertForPreTraining(cfg.model)
rank = int(__import__("os").environ["RANK"])
# fit() tears the process group down at the end; keep parameters to save afterwards.
fit(
    model,
    task,
    cfg.train,
    cfg.optim,
    Path(cfg.out_dir) / cfg.name,
    model_config=cfg.model,
    tokenizer=tokenizer,
)
out.mkdir(parents=True, exist_ok=True)
save_file(
    {k: v.contiguous() for k, v in model.state_dict().items()}, str(out / f"rank{rank}.safetensors")
)
assert not dist.is_initialized()
