"""The typed schema of the training configs: a dataclass per section, one per stage (STAGES).

`checks.py` says how a schema is written and read (annotations, `Range`, `Length`, `Leaf`,
`resolve`); `shared.py` holds the sections several stages use; each stage's own sections and its
config class are in the file named after it. `lafs_edge.train.config` checks every key against
`stage_schema(stage)` at load.
"""
from __future__ import annotations

from lafs_edge.errors import UserError
from lafs_edge.train.schema.distill import DistillConfig
from lafs_edge.train.schema.finetune import FinetuneConfig
from lafs_edge.train.schema.pretrain import PretrainConfig
from lafs_edge.train.schema.supervised import SupervisedConfig

STAGES = {"supervised": SupervisedConfig, "pretrain": PretrainConfig,
          "finetune": FinetuneConfig, "distill": DistillConfig}


def stage_schema(stage: str) -> type:
    if stage not in STAGES:
        raise UserError(f"no training stage {stage!r}; stages: {', '.join(STAGES)}")
    return STAGES[stage]
