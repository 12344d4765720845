"""The training engine every stage (supervised, pretrain, finetune, distill) runs on.

A stage supplies a `Task` (its modules, parameter groups and loss; `task.py`); `Trainer(cfg,
task, dataset).fit()` (`trainer.py`) does the rest, the same way on a CPU, one GPU, or many GPUs
and nodes under `torchrun` (DDP over NCCL on GPUs, gloo on CPUs; `distributed.py`). A stage
starts the processes before it builds its data (`with distributed(device) as info:`) and hands
them to the Trainer (`Trainer(..., info=info)`), so data preparation can wait on a `barrier`:

- data order (`batching.py`): `GlobalBatchSampler` splits each global batch (micro_batch x
  accumulate x world) into fixed per-rank slots, so a run sees the same global batches on any
  number of ranks, and resumes at the exact step. `SeededDataset` seeds each sample's
  augmentation from (seed, epoch, index): independent of ranks, workers and restarts. A
  `SeededDataset` over WebDataset shards (`data.webdataset.ShardSource`) streams instead
  (`ShardStream`): shards split over ranks and workers, equal batch counts per rank, exact
  resume; its order depends on the number of ranks and workers.
- bf16/fp16 autocast on GPU (GradScaler for fp16), gradient accumulation (DDP `no_sync` on all
  but the last micro-batch), AdamW with linear warmup + cosine decay (`optim.py`), global
  gradient-norm clip (shards of Partial FC included).
- checkpoints (`state.py`) every K steps and on exit (normal end, `train.stop_after`,
  SIGINT/SIGTERM): `checkpoints/step_XXXXXXXX/rankNNNNN.pt` (model, optimizer, scaler, schedule
  step, sampler position, python/numpy/torch/cuda RNG), then `checkpoints/latest` names it;
  every file is written atomically and loads with `torch.load(weights_only=True)`. Rank 0 also
  writes the deployable `model.pt` (`lafs_edge.models.load_model` reads it).
- a NaN/inf loss (or gradient norm) on any rank stops every rank before the optimizer step,
  so the last checkpoint stays the last good one, and raises `TrainingDiverged`.
- TensorBoard scalars and `metrics.jsonl` on rank 0, a tqdm bar with images/s (`progress.py`);
  diagnostics (resuming, a changed config, a signal) through `logging`.
"""
from lafs_edge.train.engine.batching import GlobalBatchSampler, SeededDataset, ShardStream
from lafs_edge.train.engine.distributed import (DistInfo, autocast_dtype, barrier, distributed,
                                                init_distributed, use_channels_last, wrap_ddp)
from lafs_edge.train.engine.optim import build_optimizer, cosine_schedule, split_decay
from lafs_edge.train.engine.state import (STATE_FORMAT, config_changes, rng_state, seed_everything,
                                          set_rng_state)
from lafs_edge.train.engine.task import Task
from lafs_edge.train.engine.trainer import Trainer, TrainingDiverged, TrainResult

__all__ = ["DistInfo", "GlobalBatchSampler", "STATE_FORMAT", "SeededDataset", "ShardStream",
           "Task", "TrainResult", "Trainer", "TrainingDiverged", "autocast_dtype", "barrier",
           "build_optimizer", "config_changes", "cosine_schedule", "distributed",
           "init_distributed", "rng_state", "seed_everything", "set_rng_state", "split_decay",
           "use_channels_last", "wrap_ddp"]
