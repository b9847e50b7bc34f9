"""Typed run configs (dataclasses, no torch) and the YAML/override loader."""

from llmos.config.distill import DistillConfig
from llmos.config.loader import from_dict, load_config, to_dict
from llmos.config.model import MODEL_PRESETS, BertConfig, model_preset
from llmos.config.prune import PruneConfig
from llmos.config.quantize import QuantizeConfig
from llmos.config.run import (
    DataConfig,
    FinetuneConfig,
    FinetuneDataConfig,
    OptimConfig,
    PretrainConfig,
    TrainConfig,
)

__all__ = [
    "MODEL_PRESETS",
    "BertConfig",
    "DataConfig",
    "DistillConfig",
    "FinetuneConfig",
    "FinetuneDataConfig",
    "OptimConfig",
    "PretrainConfig",
    "PruneConfig",
    "QuantizeConfig",
    "TrainConfig",
    "from_dict",
    "load_config",
    "model_preset",
    "to_dict",
]
