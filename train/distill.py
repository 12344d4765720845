"""Distillation: a teacher's embeddings into an edge student, on unlabelled faces.

Where each piece lives (`distill.targets` picks where the teacher's targets come from):
- this file: the task (`DistillTask`: the student, its projection, the losses' weights), the
  dataset for each targets mode (`build_dataset`), the loader's collate and `train(cfg)`;
- train/distill_views.py: the views: `online` (a random pose cut for the student's and the
  teacher's crops, the teacher run here with the same photometric draw on both), `loader`
  (consistent teaching: strongly degraded views and the teacher in the data loader's workers),
  `cached` (a clean crop or its mirror);
- train/distill_losses.py: the embedding and relational losses;
- train/teacher_targets.py: the cached targets (each face's clean crop and mirror, embedded
  once), which are also the relational loss's bank.

Loss = embedding_weight x (cosine: 1 - cos(P s, t) | l2: ||P s - t||^2 / D), each face weighed by
       (its term / the batch's mean) ** hard_gamma (0: a plain mean)
     + relational_weight x KL(p_teacher || p_student) over softmax similarities to a bank of the
       teacher's embeddings of the pool at temperature relational_temp (CompRess, 2020)
     + landmark_weight x mean squared landmark error / 112^2 (student landmark CNN follows the
       teacher's points; only when both are part fViTs with the SAME number of landmarks: with
       different counts there is no point-to-point correspondence, and the run refuses)
     + margin_weight x CosFace/ArcFace (only with labels: data.format=folder, data.labelled)
P is a linear projection (dropped at export, saved beside the model) when the widths differ.

On a 2-core CPU `online` measured 0.86x the images/s of `cached`; `loader` keeps the teacher
off the training process (the issue-21 campaign's mode). Fixed (cached) targets over-fit
(Beyer et al. 2022).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lafs_edge.align import CROP_SIZE
from lafs_edge.errors import UserError
from lafs_edge.models import FaceModel, PartViT, create_model, load_model, save_checkpoint
from lafs_edge.models.registry import read_checkpoint
from lafs_edge.train.dino import ema_update
from lafs_edge.train.distill_losses import embedding_loss, relational_loss
from lafs_edge.train.distill_views import ConsistentViews, DistillViews, MirrorTarget, TeacherCollate
from lafs_edge.train.engine import (DistInfo, SeededDataset, Task, Trainer, TrainResult,
                                    distributed, split_decay, wrap_ddp)
from lafs_edge.train.partial_fc import build_margin_loss
from lafs_edge.train.sources import NO_LABEL, build_source, normalise
from lafs_edge.train.teacher_targets import teacher_targets
from lafs_edge.train.teachers import load_teacher, teacher_geometry, teacher_kind
from lafs_edge.train.views import Photometric, generator, per_view


class Student(nn.Module):
    """The student and its projection to the teacher's width: -> (embedding, projected,
    landmarks or None)."""

    def __init__(self, model: nn.Module, projection: nn.Module):
        super().__init__()
        self.model, self.projection = model, projection

    def forward(self, images: torch.Tensor):
        if isinstance(self.model, PartViT):
            emb, points, _ = self.model.forward_with_landmarks(images)
        else:
            emb, points = self.model(images), None
        return emb, self.projection(emb), points


class DistillTask(Task):
    def __init__(self, cfg: dict[str, Any], num_classes: int = 0):
        self.cfg, self.num_classes = cfg, num_classes

    def setup(self, info: DistInfo) -> None:
        cfg, d, self.info = self.cfg, self.cfg["distill"], info
        self.teacher = load_teacher(d["teacher"], info.device)
        model = self.build_student()
        self.check_landmark_distillation(model)
        projection = self.build_projection(model.embedding_dim)
        self.student = Student(model, projection).to(info.device).train()
        self.student_ddp = wrap_ddp(self.student, info)
        self.margin_loss, self.sharded = None, False
        if d["margin_weight"] > 0:
            if self.num_classes < 2:
                raise UserError("distill.margin_weight > 0 needs labels: data.format=folder with "
                                "identity folders and data.labelled=true")
            margin, self.sharded = build_margin_loss(model.embedding_dim, self.num_classes,
                                                     cfg["head"], int(cfg["seed"]))
            self.margin_loss = margin.to(info.device)
            self.head = self.margin_loss if self.sharded else wrap_ddp(self.margin_loss, info)
        self.photometric = Photometric.from_config(cfg["augment"])
        self.bank = self.build_bank() if d["relational_weight"] > 0 else None
        self.average = copy.deepcopy(model).requires_grad_(False) if d["ema_decay"] > 0 else None

    def build_bank(self) -> torch.Tensor:
        """Unit teacher embeddings of the pool's clean crops (the cached targets' first view),
        at most distill.relational_anchors of them (an even subsample, fixed by the seed)."""
        cfg = self.cfg
        targets = teacher_targets(cfg, bool(cfg["data"]["labelled"]), self.info).targets[:, 0]
        count = int(cfg["distill"]["relational_anchors"])
        if count < len(targets):
            g = torch.Generator().manual_seed(int(cfg["seed"]))
            targets = targets[torch.randperm(len(targets), generator=g)[:count]]
        return F.normalize(targets.float(), dim=1).to(self.info.device)

    def build_student(self) -> FaceModel:
        model_cfg = self.cfg["model"]
        if model_cfg["init"]:
            return load_model(model_cfg["init"]).train()
        return create_model(model_cfg["arch"], **model_cfg["overrides"])

    def build_projection(self, width: int) -> nn.Module:
        mode, target = self.cfg["distill"]["projection"], self.teacher.embedding_dim
        if mode == "never" or (mode == "auto" and width == target):
            if width != target:
                raise UserError(f"student width {width} != teacher width {target}: use "
                                "distill.projection=auto")
            return nn.Identity()
        projection = nn.Linear(width, target)
        saved = self.init_projection()
        if saved is not None and saved["weight"].shape == projection.weight.shape:
            # a continued distillation keeps the map its student was trained through
            projection.load_state_dict(saved)
        return projection

    def init_projection(self) -> dict[str, torch.Tensor] | None:
        """The projection saved with `model.init` when it was distilled from the same teacher."""
        init = self.cfg["model"]["init"]
        if not init:
            return None
        distilled = read_checkpoint(init).get("distill") or {}
        return distilled.get("projection") if distilled.get("teacher") == self.teacher.name else None

    def check_landmark_distillation(self, model: nn.Module) -> None:
        if self.cfg["distill"]["landmark_weight"] <= 0:
            return
        if not (self.teacher.has_landmarks and isinstance(model, PartViT)):
            raise UserError("distill.landmark_weight > 0 needs a part_fvit teacher checkpoint and "
                            "a part_fvit student")
        n_teacher = self.teacher.model.num_landmarks
        if n_teacher != model.num_landmarks:
            raise UserError(f"landmark distillation needs the same number of landmarks (teacher "
                            f"{n_teacher}, student {model.num_landmarks}): set "
                            f"model.overrides.num_landmarks={n_teacher} or landmark_weight=0")

    def state_modules(self) -> dict[str, nn.Module]:
        modules: dict[str, nn.Module] = {"student": self.student}
        if self.margin_loss is not None:
            modules["head"] = self.margin_loss
        if self.average is not None:
            modules["average"] = self.average
        return modules

    def after_step(self, step: int, total_steps: int) -> None:
        if self.average is not None:
            update_average(self.average, self.student.model, self.cfg["distill"]["ema_decay"])

    def param_groups(self) -> list[dict[str, Any]]:
        modules = [self.student] + ([self.margin_loss] if self.margin_loss is not None else [])
        return split_decay(modules)

    def ddp_modules(self) -> list[DistributedDataParallel]:
        candidates = [self.student_ddp] + ([self.head] if self.margin_loss is not None else [])
        return [m for m in candidates if isinstance(m, DistributedDataParallel)]

    def sharded_parameters(self) -> list[nn.Parameter]:
        if not self.sharded or self.margin_loss is None:
            return []
        return list(self.margin_loss.parameters())

    def batch_images(self, batch) -> int:
        return int(batch["student"].shape[0])

    def augment(self, batch, step: int, micro: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The same photometric draw on the student's and the teacher's crops of each view."""
        aug, device = self.cfg["augment"], self.info.device
        student = normalise(batch["student"].to(device, non_blocking=True))
        teacher = normalise(batch["teacher"].to(device, non_blocking=True)) \
            if "teacher" in batch else None
        slot = micro * self.info.world + self.info.rank
        n = student.shape[0]
        params = self.photometric.draw(n, per_view([aug["blur_prob"]], n),
                                       per_view([aug["solarize_prob"]], n),
                                       generator(int(self.cfg["seed"]), step, slot, 4))
        student = self.photometric.apply(student, params)
        if teacher is None:
            return student, student
        return student, self.photometric.apply(teacher, params, teacher.shape[-1] / CROP_SIZE)

    def loss(self, batch, step: int, micro: int):
        d = self.cfg["distill"]
        if "target" in batch:  # cached (clean crops) or loader (the worker's exact views)
            student_views = normalise(batch["student"].to(self.info.device, non_blocking=True))
            target, target_points = batch["target"].to(self.info.device).float(), None
        else:
            student_views, teacher_views = self.augment(batch, step, micro)
            target, target_points = self.teacher(teacher_views)
        emb, projected, points = self.student_ddp(student_views)
        loss = d["embedding_weight"] * embedding_loss(d["loss"], projected, target, d["hard_gamma"])
        metrics = {"teacher_cosine": float(F.cosine_similarity(projected.detach().float(),
                                                               target, dim=1).mean())}
        if self.bank is not None:
            relational = relational_loss(projected, target, self.bank, d["relational_temp"])
            loss = loss + d["relational_weight"] * relational
            metrics["relational_kl"] = float(relational)
        if d["landmark_weight"] > 0:
            assert target_points is not None   # online targets of a part fViT teacher (setup)
            landmark = F.mse_loss(points.float() / CROP_SIZE, target_points / CROP_SIZE)
            loss = loss + d["landmark_weight"] * landmark
            metrics["landmark_mse"] = float(landmark)
        if self.margin_loss is not None:
            labels = batch["label"].to(self.info.device)
            if bool((labels == NO_LABEL).any()):
                raise UserError("distill.margin_weight > 0 but some images have no identity")
            margin = self.head(emb, labels)
            loss = loss + d["margin_weight"] * margin
            metrics["margin_loss"] = float(margin)
        return loss, metrics

    def export(self, path: Path, **extra: Any) -> None:
        # The projection is not part of the model; kept beside it to measure teacher cosines.
        projection = {k: v.detach().cpu() for k, v in self.student.projection.state_dict().items()}
        if self.average is not None:
            extra["averaged"] = {"ema_decay": self.cfg["distill"]["ema_decay"]}
        save_checkpoint(self.average or self.student.model, path,
                        distill={"teacher": self.teacher.name, "loss": self.cfg["distill"]["loss"],
                                 "projection": projection}, **extra)


@torch.no_grad()
def update_average(average: nn.Module, model: nn.Module, decay: float) -> None:
    """average <- decay * average + (1 - decay) * model: the trained parameters (dino.ema_update)
    and the float buffers (BatchNorm statistics, which belong to the averaged weights)."""
    ema_update(average, model, decay)
    for kept, live in zip(average.buffers(), model.buffers(), strict=True):
        if kept.is_floating_point():
            kept.lerp_(live, 1 - decay)
        else:
            kept.copy_(live)


def build_dataset(cfg: dict[str, Any], info: DistInfo | None = None) -> tuple[SeededDataset, int]:
    """(SeededDataset of view dicts, number of identities (0 without labels)). `info`: the
    processes that share cached targets (None: this process alone)."""
    labelled, mode = bool(cfg["data"]["labelled"]), cfg["distill"]["targets"]
    seed = int(cfg["seed"])
    if mode == "cached":
        if cfg["distill"]["landmark_weight"] > 0:
            raise UserError("distill.landmark_weight > 0 needs the teacher's points on every "
                            "view: use distill.targets=online")
        targets = teacher_targets(cfg, labelled, info or DistInfo(0, 1, 0, torch.device("cpu")))
        return SeededDataset(targets, MirrorTarget(cfg["augment"]["flip"]), seed), targets.num_classes
    source = build_source(cfg["data"], seed, labelled=labelled)
    geometry = teacher_geometry(cfg["distill"]["teacher"])
    views: Any = ConsistentViews(cfg["augment"], geometry.template) if mode == "loader" else \
        DistillViews(cfg["augment"], geometry)
    return SeededDataset(source, views, seed), int(getattr(source, "num_classes", 0))


def train(cfg: dict[str, Any], task: DistillTask | None = None) -> TrainResult:
    """Run (or resume) distillation as configured."""
    if not cfg["distill"]["teacher"]:
        raise UserError("distill.teacher is required: a model.pt, an artifact folder, or a "
                        "teacher YAML (e.g. train/configs/teachers/retail_0095.yaml)")
    if not Path(cfg["distill"]["teacher"]).exists():
        raise UserError(f"distill.teacher not found: {cfg['distill']['teacher']}")
    with distributed(cfg["train"]["device"]) as info:
        dataset, num_classes = build_dataset(cfg, info)
        task = task or DistillTask(cfg, num_classes)
        return Trainer(cfg, task, dataset, collate_fn=loader_collate(cfg), info=info).fit()


def loader_collate(cfg: dict[str, Any]) -> TeacherCollate | None:
    """targets=loader: the workers' collate runs the teacher; otherwise torch's default."""
    d = cfg["distill"]
    if d["targets"] != "loader":
        return None
    if d["landmark_weight"] > 0:
        raise UserError("distill.landmark_weight > 0 needs the teacher's points on the training "
                        "device: use distill.targets=online")
    teacher = str(d["teacher"])
    if teacher_kind(teacher) == "checkpoint":
        raise UserError("distill.targets=loader runs the teacher in the data loader's workers on "
                        "the CPU: give a teacher YAML or an exported artifact, not a checkpoint")
    return TeacherCollate(teacher, teacher_geometry(teacher).crop_size)
