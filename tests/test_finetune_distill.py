"""Fine-tuning (pretrained weights + stage-1 landmark CNN, landmark perturbation, layer-wise lr
decay, k-shot lists) and distillation (teacher crops of the same augmented view, external
OpenVINO teacher from a YAML, projection, landmark and margin terms), with smoke runs on real
faces that fall and resume."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lafs_edge.align import align_face
from lafs_edge.cli import main
from lafs_edge.image import read_image
from lafs_edge.models import create_model, load_model, save_checkpoint
from lafs_edge.train.config import load_config
from lafs_edge.train.distill import DistillTask
from lafs_edge.train.distill_views import DistillViews, random_pose
from lafs_edge.train.engine import DistInfo
from lafs_edge.train.finetune import FinetuneTask, layer_decay_groups, perturb_landmarks
from lafs_edge.train.sources import template_change
from lafs_edge.train.teachers import CheckpointTeacher, load_teacher, teacher_geometry

pytestmark = pytest.mark.training

REPO = Path(__file__).resolve().parents[1]
TEACHER_YAML = REPO / "train" / "configs" / "teachers" / "retail_0095.yaml"
TINY = dict(preset="test")  # lafs_edge.models.registry.PRESETS: dim 32, 16 landmarks
TINY_OVERRIDES = "model.overrides={preset: test}"
CPU = DistInfo(0, 1, 0, torch.device("cpu"))
NO_POSE = ["augment.flip=0.0", "augment.rotate_deg=0.0", "augment.scale=[1.0, 1.0]",
           "augment.shift=0.0"]


def tiny_checkpoint(path: Path, seed: int, **overrides) -> Path:
    torch.manual_seed(seed)
    save_checkpoint(create_model("part_fvit_tiny", **{**TINY, **overrides}), path)
    return path


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def teacher_yaml(tmp_path: Path, shared_models: Path) -> Path:
    """The packaged YAML with the model path made absolute (tests run from any folder)."""
    xml = shared_models / "face-reidentification-retail-0095" / "FP16" / \
        "face-reidentification-retail-0095.xml"
    if not xml.is_file():
        pytest.skip(f"{xml} not found")
    text = TEACHER_YAML.read_text()
    text = "\n".join(f"model: {xml}" if line.startswith("model:") else line
                     for line in text.splitlines())
    path = tmp_path / "teacher.yaml"
    path.write_text(text + "\n")
    return path


def wild5_subset(shared_data: Path, tmp_path: Path, count: int) -> Path:
    lines = (shared_data / "wild5" / "landmarks.txt").read_text().splitlines()[:count]
    path = tmp_path / "subset.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


# --- fine-tuning ----------------------------------------------------------------------------

def test_finetune_loads_pretrained_weights_and_the_stage1_landmarks(tmp_path):
    pretrained = tiny_checkpoint(tmp_path / "pre.pt", seed=1)
    stage1 = tiny_checkpoint(tmp_path / "stage1.pt", seed=2)
    cfg = load_config("finetune", [], [f"finetune.pretrained={pretrained}",
                                       f"finetune.landmarks={stage1}", "finetune.freeze_landmarks=true"])
    model = FinetuneTask(cfg, 5).build_backbone()
    pre, lmk = load_model(pretrained).state_dict(), load_model(stage1).state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, lmk[key] if key.startswith("landmarks.") else pre[key]), key
    assert model.training and not model.landmarks.training
    assert not any(p.requires_grad for p in model.landmarks.parameters())


def test_landmark_perturbation_only_while_training():
    model = create_model("part_fvit_tiny", **TINY)
    perturb_landmarks(model, 2.0)
    images = torch.zeros(64, 3, 112, 112)
    model.eval()
    clean = model.landmarks(images)
    assert torch.equal(model.landmarks(images), clean)
    model.train()
    model.landmarks.eval()  # the same CNN output, plus noise from the hook
    noise = model.landmarks(images) - clean
    assert float(noise.std()) == pytest.approx(2.0, rel=0.05) and abs(float(noise.mean())) < 0.1


def test_layer_wise_lr_decay():
    model = create_model("part_fvit_tiny", **{**TINY, "depth": 3})
    groups = layer_decay_groups(model, 0.5)
    scale_of = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert scale_of[id(named["norm.weight"])] == 1.0
    assert scale_of[id(named["blocks.2.mlp.0.weight"])] == 0.5
    assert scale_of[id(named["blocks.0.attn.qkv.weight"])] == 0.125
    assert scale_of[id(named["patch_embed.weight"])] == 0.0625
    assert scale_of[id(named["landmarks.head.weight"])] == 0.0625
    no_decay = {id(p) for g in groups if g.get("weight_decay") == 0.0 for p in g["params"]}
    assert id(named["pos_embed"]) in no_decay and id(named["blocks.0.norm1.bias"]) in no_decay
    assert id(named["blocks.0.attn.qkv.weight"]) not in no_decay
    assert len(scale_of) == sum(1 for p in model.parameters())


@pytest.mark.slow
def test_finetune_smoke_run_on_a_kshot_orl_subset(shared_data, tmp_path):
    """4-shot ORL (40 people x 4 images, batch 16) from a pretrained tiny checkpoint: loss falls, resumes,
    the k-shot list is recorded."""
    pretrained = tiny_checkpoint(tmp_path / "pre.pt", seed=1)
    stage1 = tiny_checkpoint(tmp_path / "stage1.pt", seed=2)
    out = tmp_path / "ft"
    args = ["train", "finetune", "--config", "finetune_smoke", f"finetune.pretrained={pretrained}",
            f"finetune.landmarks={stage1}", f"data.root={shared_data / 'orl'}", f"output_dir={out}",
            "data.num_workers=0", "optim.max_steps=20", "train.checkpoint_every=10",
            "train.progress=false", "train.log_every=1"]
    assert main([*args, "train.stop_after=10"]) == 0
    assert main(args) == 0
    losses = [r["loss"] for r in metrics(out)]
    assert len(losses) == 20 and np.mean(losses[-5:]) < np.mean(losses[:5]) - 1.0, losses
    entries = [line for line in (out / "kshot.lst").read_text().splitlines()
               if not line.startswith("#")]
    assert len(entries) == 160
    assert load_model(out / "model.pt").arch == "part_fvit_tiny"


# --- distillation ---------------------------------------------------------------------------

def test_random_pose_is_a_similarity_about_the_centre():
    rng = np.random.default_rng(0)
    aug = {"flip": 1.0, "rotate_deg": 0.0, "scale": [1.0, 1.0], "shift": 0.0}
    flipped = random_pose(rng, aug)
    assert np.allclose(flipped @ [0, 10, 1], [111, 10, 1]) and np.allclose(flipped @ [111, 5, 1], [0, 5, 1])
    aug = {"flip": 0.0, "rotate_deg": 10.0, "scale": [0.9, 1.1], "shift": 0.0}
    for _ in range(20):
        m = random_pose(rng, aug)
        assert np.allclose(m @ [55.5, 55.5, 1], [55.5, 55.5, 1])  # about the centre
        scale = np.sqrt(abs(np.linalg.det(m[:2, :2])))
        angle = np.degrees(np.arctan2(m[1, 0], m[0, 0]))
        assert 0.9 <= scale <= 1.1 and abs(angle) <= 10


def test_teacher_crop_is_the_same_view_in_the_teachers_alignment(shared_data, shared_models,
                                                                 tmp_path):
    """Without pose the teacher's crop IS its own alignment of the original photo (the two
    similarity transforms compose exactly); with a pose, mapping the teacher's crop back into
    the student's frame reproduces the student's crop."""
    import cv2

    line = (shared_data / "wild5" / "landmarks.txt").read_text().splitlines()[0].split()
    image = read_image(shared_data / "wild5" / line[0])
    values = np.array(line[1:], float)
    points = np.stack([values[:5], values[5:]], 1)
    geometry = teacher_geometry(teacher_yaml(tmp_path, shared_models))
    assert geometry.crop_size == (128, 128) and not geometry.is_student_crop
    cfg = load_config("distill", [], NO_POSE)
    item = DistillViews(cfg["augment"], geometry)((image, points, -1), np.random.default_rng(0))
    expected = align_face(image, points, 128, template=geometry.template)
    assert np.abs(item["teacher"].permute(1, 2, 0).numpy().astype(int) - expected).max() <= 1
    posed = DistillViews(load_config("distill")["augment"], geometry)
    item = posed((image, points, -1), np.random.default_rng(7))
    change = template_change(points, geometry.template)
    back = cv2.warpAffine(item["teacher"].permute(1, 2, 0).numpy(), np.linalg.inv(change)[:2],
                          (112, 112), flags=cv2.INTER_LINEAR)
    student = item["student"].permute(1, 2, 0).numpy().astype(float)
    inner = (slice(30, 90), slice(30, 90))  # away from borders; two resamplings blur a little
    assert np.abs(back.astype(float)[inner] - student[inner]).mean() < 6


def test_external_teacher_matches_the_device_embedder(shared_data, shared_models, tmp_path,
                                                      retail_0095):
    from lafs_edge.runtime.embedder import Embedder
    from lafs_edge.train.sources import normalise

    teacher = load_teacher(teacher_yaml(tmp_path, shared_models), torch.device("cpu"))
    assert teacher.embedding_dim == 256 and not teacher.has_landmarks
    lines = (shared_data / "wild5" / "landmarks.txt").read_text().splitlines()[:4]
    crops = []
    for line in lines:
        fields = line.split()
        values = np.array(fields[1:], float)
        crops.append(align_face(read_image(shared_data / "wild5" / fields[0]),
                                np.stack([values[:5], values[5:]], 1), 128,
                                template=teacher.geometry.template))
    views = normalise(torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2))
    ours, _ = teacher(views)
    reference = Embedder.from_artifact(retail_0095["FP16"]).embed_crops(crops)
    cosine = torch.nn.functional.cosine_similarity(ours, torch.from_numpy(reference), dim=1)
    assert float(cosine.min()) > 0.999


def test_bad_teacher_yaml_is_one_clear_line(tmp_path, capsys):
    bad = tmp_path / "teacher.yaml"
    bad.write_text("name: x\nruntime: openvino\n")
    code = main(["train", "distill", f"distill.teacher={bad}", "data.format=synthetic",
                 f"output_dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "not a teacher description" in err[0]


def distill_task(tmp_path: Path, teacher: Path, *extra: str, num_classes: int = 0) -> DistillTask:
    cfg = load_config("distill", [], [f"distill.teacher={teacher}", "model.arch=part_fvit_tiny",
                                      TINY_OVERRIDES, f"output_dir={tmp_path}", *extra])
    task = DistillTask(cfg, num_classes)
    task.setup(CPU)
    return task


def test_projection_landmark_and_margin_terms(tmp_path):
    teacher = tiny_checkpoint(tmp_path / "teacher.pt", seed=3, dim=48)
    task = distill_task(tmp_path, teacher, "distill.landmark_weight=1.0",
                        "distill.margin_weight=0.5", "head.scale=16.0", num_classes=3)
    assert isinstance(task.student.projection, torch.nn.Linear)
    assert task.student.projection.weight.shape == (48, 32)
    batch = {"student": torch.randint(0, 256, (4, 3, 112, 112), dtype=torch.uint8),
             "label": torch.tensor([0, 1, 2, 0])}
    loss, m = task.loss(batch, 0, 0)
    loss.backward()
    assert {"teacher_cosine", "landmark_mse", "margin_loss"} <= set(m)
    assert task.student.model.landmarks.head.weight.grad.abs().sum() > 0
    same = tiny_checkpoint(tmp_path / "same.pt", seed=4)
    assert isinstance(distill_task(tmp_path, same).student.projection, torch.nn.Identity)
    assert isinstance(CheckpointTeacher(same, torch.device("cpu"))(torch.zeros(1, 3, 112, 112))[1],
                      torch.Tensor)


def test_continued_distillation_keeps_its_projection(tmp_path):
    """model.init from a distilled checkpoint: the student and the map it was trained through
    both carry over (a fresh projection would undo the first run's fit); another teacher's
    projection is not reused."""
    teacher = tiny_checkpoint(tmp_path / "teacher.pt", seed=3, dim=48)
    first = distill_task(tmp_path / "first", teacher)
    with torch.no_grad():
        first.student.projection.weight.normal_()
    first.export(tmp_path / "first.pt")
    continued = distill_task(tmp_path / "continued", teacher, f"model.init={tmp_path / 'first.pt'}")
    assert torch.equal(continued.student.projection.weight, first.student.projection.weight)
    images = torch.randn(2, 3, 112, 112)
    torch.testing.assert_close(continued.student.eval()(images)[1], first.student.eval()(images)[1])
    other = tiny_checkpoint(tmp_path / "other.pt", seed=5, dim=48)
    fresh = distill_task(tmp_path / "fresh", other, f"model.init={tmp_path / 'first.pt'}")
    assert not torch.equal(fresh.student.projection.weight, first.student.projection.weight)


def test_weight_average_is_an_ema_of_parameters_and_batchnorm_statistics():
    from lafs_edge.train.distill import update_average

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    average = copy.deepcopy(model).requires_grad_(False)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()(torch.randn(8, 4))            # new BatchNorm statistics
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    update_average(average, model, 0.9)
    live = model.state_dict()
    for key, value in average.state_dict().items():
        expected = live[key] if key.endswith("num_batches_tracked") else \
            0.9 * start[key] + 0.1 * live[key]
        torch.testing.assert_close(value, expected, msg=key)


def test_averaged_student_is_exported_and_survives_a_resume(tmp_path):
    """distill.ema_decay: model.pt is the average (not the live student), and a run stopped and
    resumed exports the same average as one that ran straight through."""
    teacher = tiny_checkpoint(tmp_path / "teacher.pt", seed=3, dim=48)
    args = ["train", "distill", f"distill.teacher={teacher}", "model.arch=part_fvit_tiny",
            TINY_OVERRIDES, "data.format=synthetic", "data.synthetic_size=32",
            "data.num_workers=0", "optim.batch_size=4", "optim.max_steps=6", "optim.lr=1e-2",
            "distill.ema_decay=0.5", "train.checkpoint_every=3", "train.progress=false",
            "train.precision=fp32"]
    assert main([*args, f"output_dir={tmp_path / 'straight'}"]) == 0
    assert main([*args, f"output_dir={tmp_path / 'resumed'}", "train.stop_after=3"]) == 0
    assert main([*args, f"output_dir={tmp_path / 'resumed'}"]) == 0
    straight = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed" / "model.pt", weights_only=True)
    assert straight["averaged"] == {"ema_decay": 0.5}
    for key, value in straight["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, msg=key)
    last = torch.load(tmp_path / "straight" / "checkpoints" / "step_00000006" / "rank00000.pt",
                      weights_only=True)["modules"]
    live = {k[len("model."):]: v for k, v in last["student"].items() if k.startswith("model.")}
    assert not torch.equal(live["pos_embed"], straight["state_dict"]["pos_embed"])
    torch.testing.assert_close(last["average"]["pos_embed"], straight["state_dict"]["pos_embed"])
    assert main([*args, f"output_dir={tmp_path / 'bad'}", "distill.ema_decay=1.0"]) == 2


def test_landmark_distillation_needs_matching_counts(tmp_path, capsys):
    teacher = tiny_checkpoint(tmp_path / "teacher.pt", seed=3, num_landmarks=25)
    code = main(["train", "distill", f"distill.teacher={teacher}", "distill.landmark_weight=1.0",
                 "model.arch=part_fvit_tiny", TINY_OVERRIDES, "data.format=synthetic",
                 "data.num_workers=0", f"output_dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "same number of landmarks (teacher 25, student 16)" in err[-1]


@pytest.mark.slow
def test_distill_smoke_run_from_the_external_teacher(shared_data, shared_models, tmp_path):
    """The OpenVINO teacher on 96 wild5 faces, targets on every augmented view: the loss falls
    and the run resumes."""
    out = tmp_path / "run"
    args = ["train", "distill", "--config", "distill_smoke",
            f"distill.teacher={teacher_yaml(tmp_path, shared_models)}",
            f"data.list_file={wild5_subset(shared_data, tmp_path, 96)}",
            f"data.root={shared_data / 'wild5'}", f"output_dir={out}", "data.num_workers=0",
            "optim.batch_size=16", "optim.max_steps=24", "optim.warmup_epochs=0.5",
            "optim.lr=3e-3", "train.checkpoint_every=12", "train.progress=false",
            "train.log_every=1"]
    assert main([*args, "train.stop_after=12"]) == 0
    assert main(args) == 0
    rows = metrics(out)
    assert [r["step"] for r in rows] == list(range(1, 25))
    losses = [r["loss"] for r in rows]
    assert np.mean(losses[-6:]) < np.mean(losses[:6]) - 0.05, losses
    checkpoint = torch.load(out / "model.pt", weights_only=True)
    assert checkpoint["distill"]["teacher"] == "face-reidentification-retail-0095"
    assert not any(k.startswith("projection") for k in checkpoint["state_dict"])
    assert checkpoint["distill"]["projection"]["weight"].shape == (256, 96)  # distill_smoke's dim


def test_cached_targets_are_the_teachers_embeddings_of_each_view(shared_data, shared_models,
                                                                 tmp_path):
    """distill.targets=cached: the mirrored crop is the flipped clean crop, its target is the
    teacher's embedding of exactly that view, the file is reused, and a stale one (other data)
    is recomputed."""
    from lafs_edge.train.distill import build_dataset
    from lafs_edge.train.distill_views import MIRROR
    from lafs_edge.train.sources import normalise

    teacher = teacher_yaml(tmp_path, shared_models)
    subset = wild5_subset(shared_data, tmp_path, 6)
    cfg = load_config("distill", [], [f"distill.teacher={teacher}", "distill.targets=cached",
                                      f"data.list_file={subset}", f"data.root={shared_data / 'wild5'}",
                                      f"output_dir={tmp_path / 'run'}"])
    dataset, classes = build_dataset(cfg)
    assert len(dataset) == 6 and classes == 0
    cache = tmp_path / "run" / "teacher_targets.pt"
    first_write = cache.stat().st_mtime_ns
    views = DistillViews(cfg["augment"], teacher_geometry(teacher))
    source = dataset.base
    line = subset.read_text().splitlines()[2].split()
    values = np.array(line[1:], float)
    item = (read_image(shared_data / "wild5" / line[0]), np.stack([values[:5], values[5:]], 1), -1)
    plain, mirrored = views.cut(item, np.eye(3)), views.cut(item, MIRROR)
    assert torch.equal(source.crops[2], plain["student"])
    # The same pixels up to OpenCV's fixed-point interpolation weights (1/32 px steps).
    assert (mirrored["student"].int() - plain["student"].flip(-1).int()).abs().max() <= 2
    model = load_teacher(teacher, torch.device("cpu"))
    expected, _ = model(normalise(torch.stack([plain["teacher"], mirrored["teacher"]])))
    assert torch.allclose(source.targets[2], expected, atol=1e-5)
    seen = {bool(torch.equal(dataset[(2, e)]["student"], plain["student"])) for e in range(12)}
    assert seen == {True, False}  # flip 0.5: both views occur, each with its own target
    for e in range(12):
        view = dataset[(2, e)]
        expect = 0 if torch.equal(view["student"], plain["student"]) else 1
        assert torch.equal(view["target"], source.targets[2, expect])
    build_dataset(cfg)
    assert cache.stat().st_mtime_ns == first_write  # reused
    other = tmp_path / "other.txt"
    other.write_text("\n".join(subset.read_text().splitlines()[:5]) + "\n")
    dataset, _ = build_dataset({**cfg, "data": {**cfg["data"], "list_file": str(other)}})
    assert len(dataset) == 5  # stale key: recomputed for the new list


def test_two_ranks_share_cached_targets_through_a_barrier(tmp_path):
    """torchrun, 2 CPU ranks, distill.targets=cached: the process group starts before the data,
    rank 0 computes and saves the targets while rank 1 waits at a barrier, then loads them;
    training runs on that same group (started once, ended once)."""
    teacher = tiny_checkpoint(tmp_path / "teacher.pt", seed=3)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "lafs_edge.cli", "train", "distill", f"distill.teacher={teacher}",
           "distill.targets=cached", "model.arch=part_fvit_tiny", TINY_OVERRIDES,
           "data.format=synthetic", "data.synthetic_size=8", "data.synthetic_classes=4",
           "data.num_workers=0", "optim.batch_size=2", "optim.max_steps=2",
           "train.progress=false", "train.log_every=1", f"output_dir={tmp_path / 'out'}"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # library code logs (the command shows it on stderr); rank 0 alone computes the targets
    assert done.stderr.count("lafs-edge: teacher targets: 8/8 faces") == 1, done.stderr
    assert (tmp_path / "out" / "teacher_targets.pt").is_file()
    assert [r["step"] for r in metrics(tmp_path / "out")] == [1, 2]
    states = [torch.load(tmp_path / "out" / "checkpoints" / "step_00000002" / f"rank{r:05d}.pt",
                         weights_only=True) for r in range(2)]
    assert [s["world"] for s in states] == [2, 2]


def test_cached_targets_refuse_landmark_distillation(tmp_path, capsys):
    teacher = tiny_checkpoint(tmp_path / "teacher.pt", seed=3)
    code = main(["train", "distill", f"distill.teacher={teacher}", "distill.targets=cached",
                 "distill.landmark_weight=1.0", "data.format=synthetic",
                 f"output_dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "distill.targets=online" in err[0]
