"""The `Trainer`: set-up, the step (autocast, gradient accumulation, clipping), checkpoints on a
schedule and on exit, and stopping every rank together on a NaN/inf or a signal.

- bf16/fp16 autocast on GPU (GradScaler for fp16), gradient accumulation (DDP `no_sync` on all
  but the last micro-batch), AdamW with linear warmup + cosine decay, global gradient-norm clip
  (shards of Partial FC included).
- checkpoints every K steps and on exit (normal end, `train.stop_after`, SIGINT/SIGTERM); rank 0
  also writes the deployable `model.pt` (`lafs_edge.models.load_model` reads it).
- a NaN/inf loss (or gradient norm) on any rank stops every rank before the optimizer step,
  so the last checkpoint stays the last good one, and raises `TrainingDiverged`.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from lafs_edge.errors import UserError
from lafs_edge.fileio import write_text_atomic
from lafs_edge.models.registry import atomic_torch_save
from lafs_edge.train.config import save_config
from lafs_edge.train.engine.batching import (GlobalBatchSampler, SeededDataset, ShardStream,
                                             build_loader, next_batch)
from lafs_edge.train.engine.distributed import (DistInfo, autocast_dtype, barrier,
                                                compile_trained, distributed)
from lafs_edge.train.engine.optim import build_optimizer, cosine_schedule
from lafs_edge.train.engine.progress import MetricsLog, Throughput, progress_bar
from lafs_edge.train.engine.state import (config_changes, find_resume_state, latest_checkpoint,
                                          prune_checkpoints, rank_state, restore, seed_everything)
from lafs_edge.train.engine.task import Task

logger = logging.getLogger(__name__)


class TrainingDiverged(UserError):
    """The loss or gradient became NaN/inf; the last good checkpoint was kept."""


@dataclass
class TrainResult:
    start_step: int
    final_step: int
    total_steps: int
    losses: list[float] = field(default_factory=list)  # one per step run, rank mean
    images_per_s: float = 0.0  # global batch throughput, first steps excluded
    seconds: float = 0.0
    output_dir: Path | None = None


class Trainer:
    """`Trainer(cfg, task, dataset).fit()`. `info`: the processes a stage started (`distributed`)
    before it built its data; without it, `fit` starts (and ends) them itself."""

    def __init__(self, cfg: dict[str, Any], task: Task, dataset: SeededDataset,
                 collate_fn: Callable | None = None, info: DistInfo | None = None):
        self.cfg, self.task, self.dataset, self.collate_fn = cfg, task, dataset, collate_fn
        self.out = Path(cfg["output_dir"])
        self.ckpt_root = self.out / "checkpoints"
        self.info: DistInfo | None = info
        self._starts_processes = info is None
        # set up by fit()
        self.amp_dtype: torch.dtype | None = None  # None: no autocast
        self.optimizer: torch.optim.Optimizer | None = None
        self.scaler: torch.amp.GradScaler | None = None
        self.sampler: GlobalBatchSampler | ShardStream | None = None
        self.loader: DataLoader | None = None
        self.total_steps = 0
        self.warmup_steps = 0
        self.saved_step = -1  # the step of the last checkpoint written or resumed from
        self.rewarm_from: int | None = None  # resumed without optimizer moments at this step
        self._stop_signal = False  # a SIGINT/SIGTERM reached this rank
        self._agreed_stop = False  # some rank got one: every rank stops after this step

    # -- setup --
    def fit(self) -> TrainResult:
        if not self._starts_processes:
            return self._fit()
        with distributed(self.cfg["train"]["device"]) as self.info:
            return self._fit()

    def _fit(self) -> TrainResult:
        cfg, info, optim = self.cfg, self.info, self.cfg["optim"]
        assert info is not None   # given, or set by fit()
        seed = int(cfg["seed"])
        self.amp_dtype = autocast_dtype(cfg["train"]["precision"], info.device)
        if info.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        seed_everything(seed)  # identical initial weights on every rank
        self.task.setup(info)
        if cfg["train"]["compile"]:
            compile_trained(self.task.state_modules())
        seed_everything(seed + 1000 * info.rank)  # independent dropout / sampling per rank
        self.optimizer = build_optimizer(self.task.param_groups(), optim, info.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.sampler, self.loader = build_loader(cfg, self.dataset, info, self.collate_fn)
        spe = self.sampler.steps_per_epoch
        self.total_steps = optim["max_steps"] or int(optim["epochs"] * spe)
        self.warmup_steps = min(int(round(optim["warmup_epochs"] * spe)), self.total_steps)
        start_step = self._resume_or_start()
        if info.is_main:
            save_config(cfg, self.out / "config.yaml")
        return self._run(start_step)

    # -- checkpoints --
    def _resume_or_start(self) -> int:
        assert self.info is not None and self.optimizer is not None and self.scaler is not None
        found = find_resume_state(self.out, self.ckpt_root, self.cfg["train"]["resume"],
                                  self.info, getattr(self.sampler, "lanes", 0))
        if found is None:
            return 0
        latest, path, state = found
        step = restore(path, state, self.task.state_modules(), self.optimizer, self.scaler,
                       self.info.device)
        if step > 0 and not state["optimizer"]["state"]:
            # weights without AdamW's moments (e.g. a campaign's committed state): fresh moments
            # at the schedule's full lr would move every weight by ~lr at once, so ramp it again
            self.rewarm_from = step
        if self.info.is_main:
            logger.info("resuming from %s (step %s)", latest, state["step"])
            changed = config_changes(state.get("config", {}), self.cfg)
            if changed:
                logger.warning("resuming with a changed config (the schedules follow the new "
                               "values): %s", ", ".join(changed))
        return step

    def _save(self, step: int) -> None:
        info = self.info
        assert info is not None and self.optimizer is not None and self.scaler is not None
        assert self.sampler is not None
        self._check_parameters(step)
        folder = self.ckpt_root / f"step_{step:08d}"
        state = rank_state(step, info, self.task.state_modules(), self.optimizer, self.scaler,
                           {"total_steps": self.total_steps, "warmup_steps": self.warmup_steps},
                           self.sampler.steps_per_epoch, getattr(self.sampler, "lanes", 0),
                           self.cfg)
        atomic_torch_save(state, folder / f"rank{info.rank:05d}.pt")
        barrier(info)
        if info.is_main:
            self.task.export(self.out / "model.pt", step=step, train_config=self.cfg)
            write_text_atomic(self.ckpt_root / "latest", folder.name + "\n")
            keep = max(1, int(self.cfg["train"]["keep_checkpoints"]))
            prune_checkpoints(self.ckpt_root, keep=keep)
        barrier(info)
        self.saved_step = step

    # -- the loop --
    def _run(self, start_step: int) -> TrainResult:
        cfg, info = self.cfg, self.info
        assert info is not None and self.optimizer is not None
        assert self.sampler is not None and self.loader is not None
        train_cfg = cfg["train"]
        accumulate = int(cfg["optim"]["accumulate"])
        spe = self.sampler.steps_per_epoch
        stop_after = int(train_cfg["stop_after"]) or self.total_steps
        end = min(stop_after, self.total_steps)
        result = TrainResult(start_step, start_step, self.total_steps, output_dir=self.out)
        self.saved_step = start_step if start_step else -1
        metrics_log = MetricsLog(self.out, info.is_main, int(train_cfg["log_every"]))
        bar = progress_bar(info.is_main and train_cfg["progress"], self.total_steps, start_step)
        timer = Throughput(skip=2 if end - start_step > 4 else 0)
        step = start_step
        with _stop_on_signals(self):
            while step < end:
                epoch, in_epoch = divmod(step, spe)
                self.sampler.set_epoch(epoch, in_epoch)
                batches = iter(self.loader)
                try:
                    for _ in range(in_epoch, spe):
                        tick = time.perf_counter()
                        loss, metrics, images = self._step(step, batches, accumulate)
                        step += 1
                        rate = timer.add(images * info.world, time.perf_counter() - tick)
                        result.losses.append(loss)
                        lr = self.optimizer.param_groups[0]["lr"]
                        metrics_log.log(step, {"loss": loss, "lr": lr, "images_per_s": rate,
                                               **metrics})
                        bar.update(1)
                        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", img_s=f"{rate:.1f}")
                        if step % int(train_cfg["checkpoint_every"]) == 0:
                            self._save(step)
                        if step >= end or self._agreed_stop:
                            break
                finally:
                    shut_down_workers(batches)
                del batches
                if self._agreed_stop or step >= end:
                    break
        if self.saved_step != step:
            self._save(step)
        bar.close()
        metrics_log.close()
        result.final_step, result.images_per_s, result.seconds = step, timer.rate(), timer.seconds
        return result

    def _step(self, step: int, batches: Iterator, accumulate: int):
        task, optimizer = self.task, self.optimizer
        assert optimizer is not None and self.scaler is not None and self.info is not None
        optim = self.cfg["optim"]
        lr = cosine_schedule(step, self.total_steps, self.warmup_steps, optim["lr"],
                             optim["min_lr"])
        if self.rewarm_from is not None and optim["rewarm_steps"] > 0:
            lr *= min(1.0, (step - self.rewarm_from + 1) / optim["rewarm_steps"])
        for g in optimizer.param_groups:
            g["lr"] = lr * g["lr_scale"]
        task.before_step(step, self.total_steps, optimizer)
        total = torch.zeros((), device=self.info.device)
        metrics: dict[str, float] = {}
        images = 0
        for micro in range(accumulate):
            batch = next_batch(batches)
            images += task.batch_images(batch)
            last = micro == accumulate - 1
            sync = contextlib.ExitStack()
            if not last:
                for m in task.ddp_modules():
                    sync.enter_context(m.no_sync())
            with sync, torch.autocast(self.info.device.type, dtype=self.amp_dtype,
                                      enabled=self.amp_dtype is not None):
                loss, metrics = task.loss(batch, step, micro)
            self.scaler.scale(loss / accumulate).backward()
            total += loss.detach().float() / accumulate
        self.scaler.unscale_(optimizer)
        grad_norm = self._clip(float(optim["grad_clip"]))
        loss_value = self._check_finite(step, total, grad_norm)
        self.scaler.step(optimizer)
        self.scaler.update()
        optimizer.zero_grad(set_to_none=True)
        task.after_step(step, self.total_steps)
        return loss_value, {**metrics, "grad_norm": float(grad_norm)}, images

    def _clip(self, max_norm: float) -> torch.Tensor:
        """Global gradient norm over replicated and sharded parameters; clip when max_norm > 0."""
        assert self.optimizer is not None and self.info is not None
        sharded = {id(p) for p in self.task.sharded_parameters()}
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        zero = torch.zeros((), device=self.info.device)
        replicated_sq = sum((p.grad.float().pow(2).sum() for p in params if id(p) not in sharded), zero)
        sharded_sq = sum((p.grad.float().pow(2).sum() for p in params if id(p) in sharded), zero)
        if self.info.world > 1 and sharded:
            dist.all_reduce(sharded_sq)
        norm = (replicated_sq + sharded_sq).sqrt()
        if max_norm > 0:
            coef = (max_norm / (norm + 1e-6)).clamp(max=1.0)
            torch._foreach_mul_([p.grad for p in params], coef)
        return norm

    # -- stopping --
    def _check_finite(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor) -> float:
        """Stop every rank together (before the optimizer step) on a NaN/inf loss or gradient."""
        assert self.scaler is not None and self.info is not None and self.optimizer is not None
        # With fp16, inf gradients are routine: GradScaler skips that step and lowers its scale.
        bad_grad = not torch.isfinite(grad_norm) if not self.scaler.is_enabled() else False
        flags = torch.stack([loss.float(), torch.tensor(float(not torch.isfinite(loss) or bad_grad),
                                                        device=loss.device),
                             torch.tensor(float(self._stop_signal), device=loss.device)])
        if self.info.world > 1:
            dist.all_reduce(flags)
        self._agreed_stop = bool(flags[2] > 0)
        if flags[1] > 0:
            loss_ok = bool(torch.isfinite(flags[0]))
            what = "gradient norm" if loss_ok else "loss"
            value = grad_norm if loss_ok else flags[0]
            raise TrainingDiverged(
                f"training diverged: the {what} became {'nan' if torch.isnan(value) else 'inf'} "
                f"at step {step + 1} (lr {self.optimizer.param_groups[0]['lr']:.3g}); stopped "
                f"without saving, last good checkpoint: {self._kept()} in {self.ckpt_root} (lower "
                "optim.lr, use precision bf16 instead of fp16, or check the data)")
        return float(flags[0]) / self.info.world

    def _check_parameters(self, step: int) -> None:
        """Never checkpoint non-finite weights: a finite loss can precede a blown-up update."""
        assert self.info is not None and self.optimizer is not None
        bad = any(not bool(torch.isfinite(p).all())
                  for m in self.task.state_modules().values() for p in m.parameters())
        flag = torch.tensor(float(bad), device=self.info.device)
        if self.info.world > 1:
            dist.all_reduce(flag)
        if flag > 0:
            raise TrainingDiverged(
                f"training diverged: the weights became nan/inf at step {step} (lr "
                f"{self.optimizer.param_groups[0]['lr']:.3g}); stopped without saving, last good "
                f"checkpoint: {self._kept()} in {self.ckpt_root} (lower optim.lr or check the data)")

    def _kept(self) -> str:
        latest = latest_checkpoint(self.ckpt_root)
        return latest.name if latest else "none written yet"


def shut_down_workers(batches: Iterator) -> None:
    """Stop a DataLoader iterator's workers now rather than when it is collected. An exception
    leaving the loop keeps the iterator alive in its traceback's frames (a reference cycle that
    may outlive the process's atexit hooks), and the workers ignore SIGTERM (batching
    `_worker_init`), so multiprocessing's exit would wait on them for ever."""
    shutdown = getattr(batches, "_shutdown_workers", None)   # multiprocessing iterators only
    if shutdown is not None:
        shutdown()


@contextlib.contextmanager
def _stop_on_signals(trainer: Trainer):
    """First SIGINT/SIGTERM: finish the step, checkpoint, stop. Second SIGINT: stop at once."""
    def handler(signum, frame):
        if trainer._stop_signal and signum == signal.SIGINT:
            raise KeyboardInterrupt
        trainer._stop_signal = True
        if trainer.info.is_main:
            logger.warning("%s: stopping after this step with a checkpoint",
                           signal.Signals(signum).name)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
