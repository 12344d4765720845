"""Stage 2: LAFS self-supervised pretraining (Sun et al., CVPR 2024), a DINO-style
meta-architecture on landmark patches.

    student = PartViT tokens -> DINOHead          (trained: AdamW, lr/wd schedules, clip 3.0)
    teacher = EMA of the student (0.996 -> 1)      (sees the 2 global views only)
    landmark CNN: from a stage-1 checkpoint, frozen; it runs on the photometrically clean view,
                  patches are cut from the augmented view at its points (train/views.py)

Views per image: 2 global (random resized crop 0.4-1 to 112 px, flip) with all N landmarks,
`views.local_views` local ones with `views.local_landmarks` shuffled landmarks, Gaussian
coordinate perturbation; `views.kind=random_crops` is the plain-DINO baseline on ordinary image
patches. The exported `model.pt` is a complete PartViT (the frozen CNN as its landmarks), the
teacher's by default (DINO evaluates the teacher), ready for `train finetune`.

    from lafs_edge.train.config import load_config
    from lafs_edge.train.lafs import train
    train(load_config("pretrain", ["pretrain_smoke"], ["landmarks.checkpoint=runs/supervised/model.pt"]))
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lafs_edge.errors import UserError
from lafs_edge.models import DINOHead, PartViT, create_model, load_model, save_checkpoint
from lafs_edge.train import dino
from lafs_edge.train.engine import (DistInfo, SeededDataset, Task, Trainer, TrainResult,
                                    distributed, split_decay, wrap_ddp)
from lafs_edge.train.sources import AlignedCrop, build_source, normalise
from lafs_edge.train.views import (Photometric, TokenViews, generator, grid_views, landmark_views,
                                   per_view, random_crops)

IMAGE_SIZE = 112
LR_REFERENCE_BATCH = 256  # optim.lr is for this global batch (lr = base x global_batch / 256)


class DINOModel(nn.Module):
    """Backbone + DINO head over token sets: global tokens (and local ones) -> logits, rows in
    the order given (view-major)."""

    def __init__(self, backbone: PartViT, head: DINOHead):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, patches: torch.Tensor, ids: torch.Tensor,
                local_patches: torch.Tensor | None = None,
                local_ids: torch.Tensor | None = None) -> torch.Tensor:
        feats = [self.backbone.encode_patches(patches, ids)]
        if local_patches is not None:
            feats.append(self.backbone.encode_patches(local_patches, local_ids))
        return self.head(torch.cat(feats))


def frozen_landmark_cnn(cfg: dict[str, Any], backbone: PartViT) -> nn.Module | None:
    """The stage-1 landmark CNN (None: keep the backbone's own, random, with a warning; only
    allowed with landmarks.allow_random, for tests and the random_crops baseline)."""
    path = cfg["landmarks"]["checkpoint"]
    if not path:
        if cfg["views"]["kind"] == "landmarks" and not cfg["landmarks"]["allow_random"]:
            raise UserError("landmarks.checkpoint is required: the stage-1 (supervised) model.pt "
                            "whose landmark CNN LAFS freezes (landmarks.allow_random=true only "
                            "for tests)")
        if cfg["views"]["kind"] == "landmarks":
            warnings.warn("LAFS pretraining with a RANDOM landmark CNN (landmarks.allow_random): "
                          "only meaningful for tests", stacklevel=2)
        return None
    source = load_model(path)
    cnn = getattr(source, "landmarks", None)
    if cnn is None:
        raise UserError(f"{path}: a {source.arch} has no landmark CNN (need a part_fvit model)")
    if cnn.num_landmarks != backbone.num_landmarks or cnn.image_size != backbone.image_size:
        raise UserError(f"{path}: its landmark CNN gives {cnn.num_landmarks} points on "
                        f"{cnn.image_size} px, the model has {backbone.num_landmarks} landmarks "
                        f"on {backbone.image_size} px (set model.arch/overrides to match)")
    return cnn


def load_landmarks(backbone: PartViT, landmarks: nn.Module, source: str) -> None:
    try:
        backbone.landmarks.load_state_dict(landmarks.state_dict())
    except RuntimeError:
        raise UserError(f"{source}: its landmark CNN has another trunk than the model's "
                        "(model.overrides.landmark_trunk: large or small)") from None


def build_backbone(cfg: dict[str, Any]) -> PartViT:
    model_cfg = cfg["model"]
    backbone = create_model(model_cfg["arch"], **model_cfg["overrides"])
    if not isinstance(backbone, PartViT):
        raise UserError(f"pretraining needs a part_fvit model, not {model_cfg['arch']}")
    return backbone


def build_dino_model(cfg: dict[str, Any]) -> DINOModel:
    """PartViT + DINO head; the backbone's landmark CNN is frozen (the caller loads it)."""
    backbone = build_backbone(cfg)
    backbone.landmarks.requires_grad_(False)
    d = cfg["dino"]
    head = DINOHead(backbone.embedding_dim, d["out_dim"], d["hidden_dim"], d["bottleneck_dim"],
                    d["head_layers"], d["norm_last_layer"])
    return DINOModel(backbone, head)


class LAFSTask(Task):
    def __init__(self, cfg: dict[str, Any], dataset_size: int):
        self.cfg, self.dataset_size = cfg, dataset_size
        self.freeze_last_layer = False

    # -- construction --
    def setup(self, info: DistInfo) -> None:
        cfg, self.info = self.cfg, info
        self.student = build_dino_model(cfg)
        landmarks = frozen_landmark_cnn(cfg, self.student.backbone)
        if landmarks is not None:
            load_landmarks(self.student.backbone, landmarks, cfg["landmarks"]["checkpoint"])
        self.student.to(info.device)
        self.teacher = build_dino_model(cfg).to(info.device)
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher.requires_grad_(False)
        self.teacher.eval()  # no drop-path in the teacher
        self.student.train()
        self.student.backbone.landmarks.eval()  # frozen: BatchNorm keeps its stage-1 statistics
        self.student_ddp = wrap_ddp(self.student, info)
        d = cfg["dino"]
        self.dino_loss = dino.DINOLoss(d["out_dim"], 2, d["student_temp"],
                                       d["center_momentum"]).to(info.device)
        self.photometric = Photometric.from_config(cfg["augment"])
        optim = cfg["optim"]
        self.global_batch = optim["batch_size"] * optim["accumulate"] * info.world
        self.steps_per_epoch = max(1, self.dataset_size // self.global_batch)
        self.last_layer = list(self.student.head.last_layer.parameters())
        for p in self.last_layer:  # epoch 1: no gradient reaches the prototypes (nor Adam's moments)
            if p.requires_grad:
                p.register_hook(lambda g: torch.zeros_like(g) if self.freeze_last_layer else g)

    def state_modules(self) -> dict[str, nn.Module]:
        return {"student": self.student, "teacher": self.teacher, "dino_loss": self.dino_loss}

    def param_groups(self) -> list[dict[str, Any]]:
        """No decay on biases, norms, tokens; the last head layer in its own group (frozen in
        epoch 1); lr scaled by global_batch / 256 when optim.scale_lr."""
        scale = self.global_batch / LR_REFERENCE_BATCH if self.cfg["optim"]["scale_lr"] else 1.0
        decay, no_decay = split_decay([self.student.backbone, self.student.head.mlp])
        last = {"params": [p for p in self.last_layer if p.requires_grad], "last_layer": True}
        groups = [{**decay, "wd_schedule": True}, no_decay, {**last, "wd_schedule": True}]
        for g in groups:
            g["lr_scale"] = scale
        return groups

    def ddp_modules(self) -> list[DistributedDataParallel]:
        return [self.student_ddp] if isinstance(self.student_ddp, DistributedDataParallel) else []

    # -- schedules --
    def epoch_steps(self, epochs: float) -> int:
        return int(round(epochs * self.steps_per_epoch))

    def teacher_temp(self, step: int) -> float:
        d = self.cfg["dino"]
        return dino.teacher_temperature(step, self.epoch_steps(d["warmup_teacher_temp_epochs"]),
                                        d["warmup_teacher_temp"], d["teacher_temp"])

    def before_step(self, step: int, total_steps: int, optimizer: torch.optim.Optimizer) -> None:
        optim = self.cfg["optim"]
        wd = dino.weight_decay(step, total_steps, optim["weight_decay"], optim["weight_decay_end"])
        self.freeze_last_layer = step < self.epoch_steps(self.cfg["dino"]["freeze_last_layer_epochs"])
        for g in optimizer.param_groups:
            if g.get("wd_schedule"):
                g["weight_decay"] = wd
            if g.get("last_layer") and self.freeze_last_layer:
                g["lr"] = 0.0  # nor does weight decay move them

    def after_step(self, step: int, total_steps: int) -> None:
        self.dino_loss.update_center()
        m = dino.momentum(step, total_steps, self.cfg["dino"]["momentum_teacher"])
        dino.ema_update(self.teacher, self.student, m)

    # -- views and loss --
    def make_views(self, images: torch.Tensor, step: int, micro: int,
                   ) -> tuple[TokenViews, TokenViews | None]:
        """Global and local token sets of a micro-batch of clean aligned faces (B, 3, 112, 112).
        Random numbers are seeded by (seed, step, slot in the global batch)."""
        cfg, v, aug = self.cfg, self.cfg["views"], self.cfg["augment"]
        slot = micro * self.info.world + self.info.rank
        seed = int(cfg["seed"])
        geo, photo, marks = (generator(seed, step, slot, k) for k in (1, 2, 3))
        batch, local = images.shape[0], int(v["local_views"])
        landmark_kind = v["kind"] == "landmarks"
        local_scale = v["local_crop_scale"] or ([0.4, 1.0] if landmark_kind else [0.05, 0.4])
        local_size = IMAGE_SIZE if landmark_kind else int(v["local_size"])
        g_clean = random_crops(images, 2, IMAGE_SIZE, v["global_crop_scale"], v["crop_ratio"],
                               v["flip"], geo)
        g_aug = self.photometric(g_clean, per_view(aug["blur_prob"][:2], batch),
                                 per_view(aug["solarize_prob"][:2], batch), photo)
        l_clean = l_aug = None
        if local:
            l_clean = random_crops(images, local, local_size, local_scale, v["crop_ratio"],
                                   v["flip"], geo)
            l_aug = self.photometric(l_clean, per_view([aug["blur_prob"][2]] * local, batch),
                                     per_view([aug["solarize_prob"][2]] * local, batch), photo)
        backbone = self.student.backbone
        if not landmark_kind:
            make = lambda x: grid_views(x, backbone.num_landmarks, IMAGE_SIZE,  # noqa: E731
                                        backbone.patch_size, backbone.sampler)
            return make(g_aug), (make(l_aug) if local else None)
        cnn, sigma = backbone.landmarks, float(v["perturb_sigma"])
        g_tokens, _ = landmark_views(g_clean, g_aug, cnn, None, sigma, backbone.patch_size,
                                     backbone.sampler, marks)
        l_tokens = None
        if local:
            assert l_clean is not None and l_aug is not None
            l_tokens, _ = landmark_views(l_clean, l_aug, cnn, int(v["local_landmarks"]), sigma,
                                         backbone.patch_size, backbone.sampler, marks,
                                         shuffle=bool(v["shuffle"]))
        return g_tokens, l_tokens

    def batch_images(self, batch) -> int:
        return int(batch[0].shape[0])

    def loss(self, batch, step: int, micro: int):
        images = normalise(batch[0].to(self.info.device, non_blocking=True))
        global_views, local_views = self.make_views(images, step, micro)
        with torch.no_grad():
            teacher_out = self.teacher(global_views.patches, global_views.ids)
        local_args = (local_views.patches, local_views.ids) if local_views is not None else ()
        student_out = self.student_ddp(global_views.patches, global_views.ids, *local_args)
        temp = self.teacher_temp(step)
        loss = self.dino_loss(student_out, teacher_out, temp)
        self.dino_loss.accumulate(teacher_out)
        return loss, {"teacher_temp": temp}

    def export(self, path: Path, **extra: Any) -> None:
        which = self.cfg["dino"]["export"]
        model = self.teacher if which == "teacher" else self.student
        save_checkpoint(model.backbone, path, pretrain={"views": self.cfg["views"]["kind"],
                                                        "exported": which}, **extra)


def build_dataset(cfg: dict[str, Any]) -> SeededDataset:
    """Clean aligned 112x112 faces (labels, when a folder has them, are ignored)."""
    return SeededDataset(build_source(cfg["data"], int(cfg["seed"])), AlignedCrop(),
                         int(cfg["seed"]))


def train(cfg: dict[str, Any], dataset: SeededDataset | None = None,
          task: LAFSTask | None = None) -> TrainResult:
    """Run (or resume) LAFS pretraining as configured; `dataset` (SeededDataset of
    (uint8 (3, 112, 112) image, label) items) and `task` replace the configured ones (tests)."""
    with distributed(cfg["train"]["device"]) as info:
        dataset = dataset or build_dataset(cfg)
        task = task or LAFSTask(cfg, len(dataset))
        return Trainer(cfg, task, dataset, info=info).fit()
