"""Distillation: a teacher's embeddings into an edge student, on unlabelled faces.

Teacher targets are computed on every augmented view (no precomputed targets), which is the
exact supervision for strong augmentation (docs/architecture.md, "The method"): each face is warped once per
step with a random small pose (flip, rotation, scale, shift) for the student's 112x112 ArcFace
crop AND, when the teacher expects another crop (an external model's template and size), for
the teacher's crop of the same view: M_teacher = C A M_student with C = M_t M_s^-1 the change
from the student's template to the teacher's, computed from the face's own 5 points (or the
template-to-template similarity for pre-aligned crops), so both are cut from the original
pixels. The same photometric draw (colour jitter, grey, blur) then goes to both crops.

Loss = embedding_weight x (cosine: 1 - cos(P s, t) | l2: ||P s - t||^2 / D)
     + landmark_weight x mean squared landmark error / 112^2 (student landmark CNN follows the
       teacher's points; only when both are part fViTs with the SAME number of landmarks: with
       different counts there is no point-to-point correspondence, and the run refuses)
     + margin_weight x CosFace/ArcFace (only with labels: data.format=folder, data.labelled)
P is a linear projection (dropped at export) when the widths differ.

`distill.targets=loader` is consistent teaching on CPU runtimes (train/distill_views.py): the
data loader's workers make strongly degraded views (harsh light, low resolution, blur, JPEG,
occlusion, point jitter, mixup) and run the teacher (an OpenVINO/ONNX teacher YAML or artifact,
one thread per worker) on the exact view, so the training process runs the student only.

relational_weight > 0 adds KL(p_teacher || p_student) over softmax similarities to a bank of the
teacher's embeddings of the pool at temperature relational_temp (CompRess, Abbasi Koohpayegani
et al. 2020): it matches the neighbourhood structure that decides the low-FAR tail, not only
each embedding's direction. The bank is the cached targets' clean views (`teacher_targets`).

`distill.targets=cached` is offline distillation for small compute budgets: the teacher embeds
each face's clean crop and its mirror image once (`TeacherTargets`, saved beside the run and
reused), and training only flips: no pose or photometric augmentation, and students trained on
fixed targets over-fit (Beyer et al. 2022). On a 2-core CPU `online` measured 0.86x its images/s.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from lafs_edge.align import CROP_SIZE
from lafs_edge.errors import UserError
from lafs_edge.models import FaceModel, PartViT, create_model, load_model, save_checkpoint
from lafs_edge.models.registry import atomic_torch_save, read_checkpoint
from lafs_edge.train.data.webdataset import ShardSource
from lafs_edge.train.distill_views import ConsistentViews, TeacherCollate, random_pose
from lafs_edge.train.engine import (DistInfo, SeededDataset, Task, Trainer, TrainResult, barrier,
                                    distributed, split_decay, wrap_ddp)
from lafs_edge.train.engine.batching import SizedDataset
from lafs_edge.train.partial_fc import build_margin_loss
from lafs_edge.train.sources import (NO_LABEL, build_source, chw_uint8, normalise, student_matrix,
                                     template_change, warp)
from lafs_edge.train.teachers import TeacherGeometry, load_teacher, teacher_geometry
from lafs_edge.train.views import Photometric, generator, per_view


class DistillViews:
    """(image, points, label), rng -> {"student": (3, 112, 112), ["teacher": (3, H, W)],
    "label"}: one random pose, cut for the student's crop and (if different) the teacher's."""

    def __init__(self, aug: dict[str, Any], teacher: TeacherGeometry):
        self.aug, self.teacher = aug, teacher

    def __call__(self, item, rng: np.random.Generator) -> dict[str, Any]:
        return self.cut(item, random_pose(rng, self.aug))

    def cut(self, item, pose: np.ndarray) -> dict[str, Any]:
        image, points, label = item
        m_student = student_matrix(points)
        crop = warp(image, pose @ m_student, CROP_SIZE, CROP_SIZE)
        out = {"student": chw_uint8(crop), "label": int(label)}
        if not self.teacher.is_student_crop:
            change = template_change(points, self.teacher.template)
            width, height = self.teacher.crop_size
            out["teacher"] = chw_uint8(warp(image, change @ pose @ m_student, width, height))
        return out


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


def relational_loss(student: torch.Tensor, teacher: torch.Tensor, bank: torch.Tensor,
                    temperature: float) -> torch.Tensor:
    """KL(teacher || student) between each face's softmax similarities to the bank (N, D) of
    unit rows, per face (batchmean). In fp32 even under autocast: bf16 similarities are
    off by ~0.004, a tenth of a logit at temperature 0.04."""
    with torch.autocast(student.device.type, enabled=False):
        s = F.normalize(student.float(), dim=1) @ bank.T / temperature
        t = F.normalize(teacher.float(), dim=1) @ bank.T / temperature
        return F.kl_div(F.log_softmax(s, 1), F.log_softmax(t, 1), log_target=True,
                        reduction="batchmean")


def embedding_loss(kind: str, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    student, teacher = student.float(), teacher.float()
    if kind == "cosine":
        return (1 - F.cosine_similarity(student, teacher, dim=1)).mean()
    if kind == "l2":
        return F.mse_loss(student, teacher)
    raise UserError(f"distill.loss must be cosine or l2, got {kind!r}")


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
        return modules

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
        loss = d["embedding_weight"] * embedding_loss(d["loss"], projected, target)
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
        save_checkpoint(self.student.model, path,
                        distill={"teacher": self.teacher.name, "loss": self.cfg["distill"]["loss"],
                                 "projection": projection}, **extra)


MIRROR = np.array([[-1.0, 0.0, CROP_SIZE - 1], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
TARGETS_FORMAT = "lafs-edge-teacher-targets/1"
TARGETS_TIMEOUT_S = 4 * 3600  # how long the other ranks wait for rank 0 to compute the targets


class TeacherTargets(Dataset):
    """Offline targets: uint8 clean 112x112 crops (N, 3, 112, 112), the teacher's embeddings of
    each crop and of its mirror image (N, 2, D), labels (N,)."""

    def __init__(self, crops: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor,
                 num_classes: int):
        self.crops, self.targets, self.labels, self.num_classes = crops, targets, labels, num_classes

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, i: int):
        return self.crops[i], self.targets[i], int(self.labels[i])


class MirrorTarget:
    """(crop, targets, label), rng -> a view dict: mirrored with probability augment.flip,
    paired with the teacher's embedding of exactly that view."""

    def __init__(self, flip: float):
        self.flip = flip

    def __call__(self, item, rng: np.random.Generator) -> dict[str, Any]:
        crop, targets, label = item
        mirrored = rng.random() < self.flip
        return {"student": crop.flip(-1) if mirrored else crop,
                "target": targets[int(mirrored)], "label": label}


def compute_teacher_targets(cfg: dict[str, Any], labelled: bool, batch: int = 64) -> dict:
    """Run the teacher once over every face (clean and mirrored views)."""
    source = build_source(cfg["data"], int(cfg["seed"]), labelled=labelled)
    teacher = load_teacher(cfg["distill"]["teacher"], torch.device("cpu"))
    views = DistillViews(cfg["augment"], teacher.geometry)
    # Preallocated: tens of thousands of small kept tensors between each batch's large
    # temporaries fragmented the heap to ~0.5 MB per face (17 GB for the 47k-face pool).
    total = len(source)
    crops = torch.empty((total, 3, CROP_SIZE, CROP_SIZE), dtype=torch.uint8)
    targets = torch.empty((total, 2, teacher.embedding_dim))
    labels = torch.empty(total, dtype=torch.int64)
    started = time.perf_counter()
    faces = _faces_in_order(source)
    key = "student" if teacher.geometry.is_student_crop else "teacher"  # the teacher's crop
    for start in range(0, total, batch):
        stop = min(start + batch, total)
        items = [next(faces) for _ in range(start, stop)]
        plain = [views.cut(item, np.eye(3)) for item in items]
        mirrored = [views.cut(item, MIRROR) for item in items]
        targets[start:stop] = torch.stack(
            [teacher(normalise(torch.stack([c[key] for c in cut])))[0] for cut in (plain, mirrored)], 1)
        crops[start:stop] = torch.stack([c["student"] for c in plain])
        labels[start:stop] = torch.tensor([c["label"] for c in plain])
        if stop == total or (start // batch) % 20 == 0:
            logging.getLogger(__name__).info("teacher targets: %d/%d faces (%.0f s)", stop, total,
                                             time.perf_counter() - started)
    return {"format": TARGETS_FORMAT, "key": _targets_key(cfg, labelled),
            "crops": crops, "targets": targets, "labels": labels,
            "num_classes": int(getattr(source, "num_classes", 0))}


def _faces_in_order(source: SizedDataset):
    """Every item once, in order (WebDataset shards are read sequentially, not indexed)."""
    if hasattr(source, "read"):
        shards = cast(ShardSource, source)
        return (shards.decode(sample) for sample in shards.read(shards.shards))
    return (source[i] for i in range(len(source)))


def _targets_key(cfg: dict[str, Any], labelled: bool) -> str:
    """What the targets depend on: a cache computed for other data or another teacher is stale."""
    data = cfg["data"]
    return repr((str(cfg["distill"]["teacher"]), data["format"], str(data["root"]),
                 str(data["list_file"]), labelled, bool(data["bgr"])))


def teacher_targets(cfg: dict[str, Any], labelled: bool, info: DistInfo) -> TeacherTargets:
    """Load the cached targets. Rank 0 reads the file and computes and saves it (atomically)
    when it is missing or stale; the other ranks wait at a barrier and then read it."""
    path = Path(cfg["distill"]["target_cache"] or Path(cfg["output_dir"]) / "teacher_targets.pt")
    key = _targets_key(cfg, labelled)
    state = None
    if info.is_main:
        state = _read_targets(path)
        if state is None or state["key"] != key:
            state = compute_teacher_targets(cfg, labelled)
            atomic_torch_save(state, path)
    barrier(info, timeout_s=TARGETS_TIMEOUT_S)
    if not info.is_main:
        state = _read_targets(path)
        if state is None or state["key"] != key:
            raise UserError(f"rank 0 did not write the teacher targets {path} (is "
                            "distill.target_cache on storage every rank shares?)")
    assert state is not None
    return TeacherTargets(state["crops"], state["targets"], state["labels"], state["num_classes"])


def _read_targets(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: recompute rather than train on it
        logging.getLogger(__name__).warning("%s: unreadable (%s); recomputing", path,
                                            str(e).splitlines()[0])
        return None
    return state if isinstance(state, dict) and state.get("format") == TARGETS_FORMAT else None


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
    if not (Path(teacher).suffix in (".yaml", ".yml") or Path(teacher).is_dir()
            or Path(teacher).name == "manifest.json"):
        raise UserError("distill.targets=loader runs the teacher in the data loader's workers on "
                        "the CPU: give a teacher YAML or an exported artifact, not a checkpoint")
    return TeacherCollate(teacher, teacher_geometry(teacher).crop_size)
