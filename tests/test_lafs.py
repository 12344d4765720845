"""LAFS pretraining: the parts that carry the method (landmark shuffle, coordinate perturbation,
clean-view landmarks, which views the teacher sees, DINO loss, centre, EMA, schedules,
last-layer freeze), the photometric ops against independent references, and a smoke run on
real wild5 faces that resumes."""
from __future__ import annotations

import colorsys
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lafs_edge.cli import main
from lafs_edge.models import create_model, load_model, sample_patches, save_checkpoint
from lafs_edge.train import dino
from lafs_edge.train.config import load_config
from lafs_edge.train.engine import DistInfo, seed_everything
from lafs_edge.train.lafs import LAFSTask, train
from lafs_edge.train.views import (Photometric, adjust_hue, fixed_ids, gaussian_blur, grid_ids,
                                   grid_points, grid_views, landmark_views, perturb, shuffled_ids)

pytestmark = pytest.mark.training

REPO = Path(__file__).resolve().parents[1]
TINY_OVERRIDES = "model.overrides={preset: test}"  # registry PRESETS: dim 32, 16 landmarks
TINY = [TINY_OVERRIDES, "model.arch=part_fvit_tiny", "landmarks.allow_random=true",
        "data.format=synthetic", "data.synthetic_size=16", "data.num_workers=0",
        "dino.out_dim=64", "dino.hidden_dim=32", "dino.bottleneck_dim=16",
        "views.local_views=2", "views.local_landmarks=6", "optim.batch_size=4",
        "optim.scale_lr=false", "train.progress=false", "train.log_every=1"]
CPU = DistInfo(0, 1, 0, torch.device("cpu"))


def tiny_cfg(tmp_path: Path, *extra: str) -> dict:
    return load_config("pretrain", [], [*TINY, f"output_dir={tmp_path}", *extra])


def tiny_task(tmp_path: Path, *extra: str) -> LAFSTask:
    cfg = tiny_cfg(tmp_path, *extra)
    seed_everything(int(cfg["seed"]))
    task = LAFSTask(cfg, dataset_size=16)
    task.setup(CPU)
    return task


def faces(n: int = 4) -> torch.Tensor:
    """Smooth random colour images in [-1, 1] (structure for crops and blur to act on)."""
    g = torch.Generator().manual_seed(0)
    small = torch.rand(n, 3, 7, 7, generator=g) * 2 - 1
    return F.interpolate(small, size=112, mode="bicubic", align_corners=False).clamp(-1, 1)


class RecordingCNN(torch.nn.Module):
    """A landmark CNN stand-in: fixed points, records what it was shown."""

    def __init__(self, points: torch.Tensor):
        super().__init__()
        self.points, self.seen = points, []

    def forward(self, images):
        self.seen.append(images.clone())
        return self.points.expand(images.shape[0], -1, -1)


# --- views ----------------------------------------------------------------------------------

def test_landmark_shuffle_draws_uniformly_with_replacement_in_random_order():
    ids = shuffled_ids(4000, 36, 196, torch.Generator().manual_seed(1))
    assert ids.shape == (4000, 36) and ids.min() >= 0 and ids.max() < 196
    counts = torch.bincount(ids.reshape(-1), minlength=196).float()
    expected = ids.numel() / 196
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 196 + 5 * np.sqrt(2 * 196)  # uniform: chi-square ~ 195 +- 20
    # with replacement: P(36 distinct of 196) = prod(1 - i/196) = 0.034
    repeats = np.mean([len(set(row)) < 36 for row in ids.tolist()])
    assert 0.95 < repeats < 0.985
    # random order: almost no row comes out sorted
    assert (ids[:, 1:] >= ids[:, :-1]).all(1).float().mean() < 0.01


def test_shuffle_off_gives_every_local_view_the_same_evenly_spaced_ids(tmp_path):
    ids = fixed_ids(3, 36, 100)
    assert torch.equal(ids[0], ids[2]) and len(set(ids[0].tolist())) == 36
    assert (ids[0, 1:] > ids[0, :-1]).all() and ids[0, 0] == 0 and ids[0, -1] < 100
    points = torch.rand(1, 16, 2) * 100 + 6
    clean = faces()
    on, _ = landmark_views(clean, clean, RecordingCNN(points), 6, 0.0, 8, "gather",
                           torch.Generator().manual_seed(0))
    off, _ = landmark_views(clean, clean, RecordingCNN(points), 6, 0.0, 8, "gather",
                            torch.Generator().manual_seed(0), shuffle=False)
    assert torch.equal(off.ids, fixed_ids(4, 6, 16))
    assert not torch.equal(on.ids, off.ids)
    # the config key reaches the task's local views
    task = tiny_task(tmp_path, "views.shuffle=false")
    _, local = task.make_views(faces(), step=0, micro=0)
    assert torch.equal(local.ids.cpu(), fixed_ids(local.ids.shape[0], 6, 16))
    assert tiny_cfg(tmp_path)["views"]["shuffle"] is True


def test_coordinate_perturbation_is_gaussian_with_the_configured_sigma():
    points = torch.zeros(20000, 10, 2)
    noise = perturb(points, 3.0, torch.Generator().manual_seed(2)).reshape(-1, 2)
    assert abs(float(noise.mean())) < 0.02
    assert float(noise.std()) == pytest.approx(3.0, rel=0.01)
    assert abs(float(torch.corrcoef(noise.T)[0, 1])) < 0.01  # x and y independent
    kurtosis = float(((noise / noise.std()) ** 4).mean())
    assert kurtosis == pytest.approx(3.0, abs=0.05)  # Gaussian, not uniform (1.8)
    assert torch.equal(perturb(points, 0.0, torch.Generator()), points)


def test_landmarks_come_from_the_clean_view_and_patches_from_the_augmented_one():
    clean, augmented = faces(), -faces()
    points = torch.rand(1, 16, 2) * 100 + 6
    cnn = RecordingCNN(points)
    tokens, found = landmark_views(clean, augmented, cnn, None, 0.0, 8, "gather",
                                   torch.Generator())
    assert len(cnn.seen) == 1 and torch.equal(cnn.seen[0], clean)
    assert torch.equal(tokens.ids, torch.arange(16).expand(4, 16))
    assert torch.allclose(tokens.patches, sample_patches(augmented, points.expand(4, -1, -1), 8))
    local, _ = landmark_views(clean, augmented, cnn, 5, 0.0, 8, "gather",
                              torch.Generator().manual_seed(3))
    chosen = points.expand(4, -1, -1).gather(1, local.ids[..., None].expand(-1, -1, 2))
    assert local.ids.shape == (4, 5)
    assert torch.allclose(local.patches, sample_patches(augmented, chosen, 8))


def test_the_clean_view_does_not_depend_on_photometric_settings(tmp_path):
    seen = []
    for extra in (["augment.jitter_prob=0.0", "augment.grayscale_prob=0.0",
                   "augment.blur_prob=[0.0, 0.0, 0.0]"],
                  ["augment.jitter_prob=1.0", "augment.grayscale_prob=1.0"]):
        task = tiny_task(tmp_path, *extra)
        hook = task.student.backbone.landmarks.register_forward_pre_hook(
            lambda m, args: seen.append(args[0].clone()))
        global_views, _ = task.make_views(faces(), step=3, micro=0)
        hook.remove()
        seen.append(global_views.patches)
    clean_a, local_a, patches_a, clean_b, local_b, patches_b = seen
    assert torch.equal(clean_a, clean_b) and torch.equal(local_a, local_b)
    assert not torch.allclose(patches_a, patches_b)  # patches carry the augmentation


def test_the_teacher_sees_only_the_global_views(tmp_path):
    task = tiny_task(tmp_path)
    calls = {}
    task.teacher.register_forward_pre_hook(lambda m, args: calls.setdefault("teacher", args))
    task.student.register_forward_pre_hook(lambda m, args: calls.setdefault("student", args))
    images = ((faces() + 1) * 127.5).round().to(torch.uint8)
    loss, _ = task.loss((images, torch.zeros(4)), step=0, micro=0)
    teacher_args, student_args = calls["teacher"], calls["student"]
    assert len(teacher_args) == 2 and teacher_args[0].shape[:2] == (2 * 4, 16)
    assert torch.equal(teacher_args[0], student_args[0])  # the same 2 global views
    assert torch.equal(teacher_args[1], torch.arange(16).expand(8, 16))
    assert student_args[2].shape[:2] == (2 * 4, 6)  # the student also gets 2 local views
    assert torch.isfinite(loss)


def test_random_crops_use_exact_grid_patches_and_matching_position_ids():
    image = faces(1)
    tokens = grid_views(image, 196, 112, 8, "gather")
    tiles = image.unfold(2, 8, 8).unfold(3, 8, 8)  # (1, 3, 14, 14, 8, 8)
    expected = tiles.permute(0, 2, 3, 1, 4, 5).reshape(1, 196, 3, 8, 8)
    assert torch.allclose(tokens.patches, expected, atol=1e-6)
    assert torch.equal(tokens.ids[0], torch.arange(196))
    local = grid_views(F.interpolate(image, size=48), 196, 112, 8, "gather")
    assert local.patches.shape == (1, 36, 3, 8, 8)
    # a 6x6 local grid sits on global cells 1, 3, 5, 8, 10, 12 of each axis
    assert grid_ids(6, 14)[:6].tolist() == [15, 17, 19, 22, 24, 26]
    assert torch.equal(grid_points(14, 112)[:2], torch.tensor([[4.5, 4.5], [12.5, 4.5]]))


def test_hue_shift_matches_colorsys():
    pixels = torch.rand(1, 3, 4, 5, generator=torch.Generator().manual_seed(4))
    shifted = adjust_hue(pixels, torch.tensor([0.13]).view(1, 1, 1, 1))
    for y in range(4):
        for x in range(5):
            h, s, v = colorsys.rgb_to_hsv(*pixels[0, :, y, x].tolist())
            ref = colorsys.hsv_to_rgb((h + 0.13) % 1.0, s, v)
            assert np.allclose(shifted[0, :, y, x].tolist(), ref, atol=1e-5)


def test_blur_matches_opencv_and_sigma_zero_is_identity():
    import cv2

    x = (faces(2) + 1) / 2
    out = gaussian_blur(x, torch.tensor([1.3, 0.0]), 9)
    ref = cv2.GaussianBlur(x[0].permute(1, 2, 0).numpy(), (9, 9), 1.3,
                           borderType=cv2.BORDER_REFLECT_101)
    assert np.allclose(out[0].permute(1, 2, 0).numpy(), ref, atol=1e-5)
    assert torch.equal(out[1], x[1])


def test_grayscale_and_solarize_are_applied_per_sample():
    ph = Photometric(jitter_prob=0.0, grayscale_prob=1.0)
    x = faces(2)
    out = ph(x, torch.zeros(2), torch.tensor([1.0, 0.0]), torch.Generator())
    grey = (x + 1) / 2
    grey = (0.299 * grey[:, 0] + 0.587 * grey[:, 1] + 0.114 * grey[:, 2])[:, None].expand_as(x)
    assert torch.allclose(out[1], grey[1] * 2 - 1, atol=1e-6)
    solar = torch.where(grey[0] >= 0.5, 1 - grey[0], grey[0])
    assert torch.allclose(out[0], solar * 2 - 1, atol=1e-6)


# --- DINO -----------------------------------------------------------------------------------

def test_dino_loss_matches_a_direct_computation():
    g = torch.Generator().manual_seed(5)
    batch, views, k = 3, 4, 10
    student, teacher = torch.randn(views * batch, k, generator=g), torch.randn(2 * batch, k, generator=g)
    loss_fn = dino.DINOLoss(k, 2, student_temp=0.1)
    loss_fn.center.copy_(torch.randn(1, k, generator=g))
    got = float(loss_fn(student, teacher, teacher_temp=0.04))
    s, t, c = student.double().numpy(), teacher.double().numpy(), loss_fn.center.double().numpy()
    total, pairs = 0.0, 0
    for i in range(2):
        for v in range(views):
            if v == i:
                continue
            for b in range(batch):
                q = np.exp((t[i * batch + b] - c[0]) / 0.04)
                q /= q.sum()
                logits = s[v * batch + b] / 0.1
                log_p = logits - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
                total += -(q * log_p).sum() / batch
            pairs += 1
    assert pairs == 2 * (views - 1)
    assert got == pytest.approx(total / pairs, rel=1e-5)


def test_centre_is_an_ema_of_the_global_batch_mean_once_per_step():
    loss_fn = dino.DINOLoss(6, center_momentum=0.9)
    start = torch.randn(1, 6)
    loss_fn.center.copy_(start)
    first, second = torch.randn(8, 6), torch.randn(4, 6)
    loss_fn.accumulate(first)  # two micro-batches of one step
    loss_fn.accumulate(second)
    assert torch.equal(loss_fn.center, start)  # nothing moves before the step ends
    loss_fn.update_center()
    mean = torch.cat([first, second]).mean(0, keepdim=True)
    assert torch.allclose(loss_fn.center, 0.9 * start + 0.1 * mean)
    loss_fn.update_center()  # no pending outputs: unchanged
    assert torch.allclose(loss_fn.center, 0.9 * start + 0.1 * mean)


def test_two_ranks_equal_one_process_accumulating_two(tmp_path):
    """torchrun, 2 CPU ranks (gloo) with micro-batch 2 vs 1 process accumulating 2 micro-batches
    of 2: the same views (seeded by step and slot), the centre all-reduced over ranks, DDP with a
    frozen landmark CNN and the last-layer freeze: the same losses, weights and centre."""
    common = ["optim.batch_size=2", "optim.max_steps=3", "train.checkpoint_every=100",
              "dino.freeze_last_layer_epochs=0.25", "optim.lr=1e-2"]
    single = train(tiny_cfg(tmp_path / "single", *common, "optim.accumulate=2"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "lafs_edge.cli", "train", "pretrain", *TINY, *common,
           f"output_dir={tmp_path / 'ddp'}"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ddp = [json.loads(line)["loss"] for line in
           (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert np.allclose(ddp, single.losses, atol=1e-4), (ddp, single.losses)
    states = [torch.load(tmp_path / name / "checkpoints" / "step_00000003" / f"rank{r:05d}.pt",
                         weights_only=True)["modules"] for name, r in
              (("single", 0), ("ddp", 0), ("ddp", 1))]
    for part in ("student", "teacher", "dino_loss"):
        for key, value in states[0][part].items():
            for other in states[1:]:
                assert torch.allclose(value, other[part][key], atol=1e-5, rtol=1e-4), (part, key)


def test_ema_update_follows_the_momentum():
    student, teacher = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [p.detach().clone() for p in teacher.parameters()]
    dino.ema_update(teacher, student, 0.9)
    for t, t0, s in zip(teacher.parameters(), before, student.parameters()):
        assert torch.allclose(t, 0.9 * t0 + 0.1 * s)


def test_schedules():
    temps = [dino.teacher_temperature(s, 30, 0.07, 0.04) for s in range(40)]
    assert temps[0] == pytest.approx(0.07) and temps[15] == pytest.approx(0.055)
    assert temps[30:] == [0.04] * 10
    moms = [dino.momentum(s, 100, 0.996) for s in range(101)]
    assert moms[0] == pytest.approx(0.996) and moms[100] == pytest.approx(1.0)
    assert moms[50] == pytest.approx(0.998) and all(a <= b for a, b in zip(moms, moms[1:]))
    wds = [dino.weight_decay(s, 100, 0.04, 0.4) for s in range(101)]
    assert wds[0] == pytest.approx(0.04) and wds[100] == pytest.approx(0.4)
    assert wds[50] == pytest.approx(0.22)


def test_task_schedules_reach_the_optimizer(tmp_path):
    task = tiny_task(tmp_path, "optim.scale_lr=true", "optim.batch_size=64",
                     "dino.freeze_last_layer_epochs=1.0")
    groups = task.param_groups()
    assert all(g["lr_scale"] == pytest.approx(64 / 256) for g in groups)
    optimizer = torch.optim.AdamW([{**g, "weight_decay": 0.04} for g in groups], lr=1.0)
    task.before_step(50, 100, optimizer)
    decayed = [g for g in optimizer.param_groups if g.get("wd_schedule")]
    assert decayed and all(g["weight_decay"] == pytest.approx(0.22) for g in decayed)
    assert [g["weight_decay"] for g in optimizer.param_groups if not g.get("wd_schedule")] == [0.04]
    # 16 images, global batch 64 -> steps_per_epoch 1 (at least one): freeze covers step 0 only
    assert not task.freeze_last_layer
    task.before_step(0, 100, optimizer)
    assert task.freeze_last_layer and [g["lr"] for g in optimizer.param_groups
                                       if g.get("last_layer")] == [0.0]
    assert task.teacher_temp(0) == pytest.approx(0.07)


def test_last_layer_is_frozen_in_the_first_epoch_and_the_run_resumes(tmp_path):
    """4 steps per epoch (16 images, batch 4): the prototypes do not move in steps 1-4 while
    the rest of the student and the teacher (EMA) do; then they train. Stopping after step 4
    and resuming gives the same weights as a straight run."""
    extra = ["optim.max_steps=6", "dino.freeze_last_layer_epochs=1.0", "optim.lr=1e-2",
             "train.checkpoint_every=100", "optim.warmup_epochs=0.25"]
    initial = tiny_task(tmp_path / "init", *extra)
    start = {k: v.clone() for k, v in initial.student.state_dict().items()}
    first = train(tiny_cfg(tmp_path / "resumed", *extra, "train.stop_after=4"))
    state = torch.load(tmp_path / "resumed" / "checkpoints" / "step_00000004" / "rank00000.pt",
                       weights_only=True)["modules"]
    last = "head.last_layer.parametrizations.weight.original1"
    assert torch.equal(state["student"][last], start[last])
    assert not torch.equal(state["student"]["head.mlp.0.weight"], start["head.mlp.0.weight"])
    assert not torch.equal(state["teacher"]["head.mlp.0.weight"], start["head.mlp.0.weight"])
    assert not torch.equal(state["dino_loss"]["center"], torch.zeros_like(state["dino_loss"]["center"]))
    second = train(tiny_cfg(tmp_path / "resumed", *extra))
    final = torch.load(tmp_path / "resumed" / "checkpoints" / "step_00000006" / "rank00000.pt",
                       weights_only=True)["modules"]["student"]
    assert not torch.equal(final[last], start[last])
    straight = train(tiny_cfg(tmp_path / "straight", *extra))
    assert first.losses + second.losses == straight.losses
    model = load_model(tmp_path / "resumed" / "model.pt")  # the teacher backbone, deployable
    assert model(torch.zeros(1, 3, 112, 112)).shape == (1, 32)


def test_pretraining_needs_a_landmark_checkpoint_unless_allowed(tmp_path, capsys):
    code = main(["train", "pretrain", *[a for a in TINY if "allow_random" not in a],
                 f"output_dir={tmp_path}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "landmarks.checkpoint is required" in err[0]
    wrong = tmp_path / "wrong.pt"
    save_checkpoint(create_model("part_fvit_tiny", preset="test", num_landmarks=9), wrong)
    code = main(["train", "pretrain", *TINY, f"landmarks.checkpoint={wrong}",
                 f"output_dir={tmp_path / 'b'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "gives 9 points" in err[-1]


# --- a real run -----------------------------------------------------------------------------

def wild5_subset(shared_data: Path, tmp_path: Path, count: int) -> Path:
    lines = (shared_data / "wild5" / "landmarks.txt").read_text().splitlines()[:count]
    path = tmp_path / "subset.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_pretrain_smoke_run_on_real_faces_falls_and_resumes(shared_data, tmp_path):
    """LAFS on 64 wild5 faces with a frozen landmark CNN loaded from a (stage-1 format)
    checkpoint: the DINO loss falls; the run stops half-way and resumes to the end.
    (At this scale a longer run collapses to the uniform solution, loss ln K: tiny DINO runs
    need the short horizon; the engine tests above check the mechanics.)"""
    stage1 = tmp_path / "stage1.pt"  # the smoke config's own model (its landmark count)
    smoke_model = load_config("pretrain", ["pretrain_smoke"])["model"]["overrides"]
    save_checkpoint(create_model("part_fvit_tiny", **smoke_model), stage1)
    out = tmp_path / "run"
    args = ["train", "pretrain", "--config", "pretrain_smoke",
            f"data.list_file={wild5_subset(shared_data, tmp_path, 64)}",
            f"data.root={shared_data / 'wild5'}", f"landmarks.checkpoint={stage1}",
            f"output_dir={out}", "data.num_workers=0", "optim.batch_size=8", "views.local_views=2",
            "views.local_landmarks=6", "dino.out_dim=256", "optim.max_steps=10",
            "dino.freeze_last_layer_epochs=0.25", "train.checkpoint_every=5",
            "train.progress=false", "train.log_every=1"]
    assert main([*args, "train.stop_after=5"]) == 0
    assert main(args) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows]
    assert [r["step"] for r in rows] == list(range(1, 11))
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.3, losses
    model = load_model(out / "model.pt")
    reference = load_model(stage1)
    assert all(torch.equal(a, b) for a, b in zip(model.landmarks.state_dict().values(),
                                                 reference.landmarks.state_dict().values()))
