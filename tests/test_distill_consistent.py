"""Consistent teaching (distill.targets=loader): degraded views made in the loader, the teacher's
embedding of exactly that view, the relational loss, and the campaign's all-pairs TAR@FAR with
its identity bootstrap (checked against a brute-force count)."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lafs_edge.cli import main
from lafs_edge.image import read_image
from lafs_edge.train.config import load_config
from lafs_edge.train.distill import loader_collate
from lafs_edge.train.distill_losses import embedding_loss, relational_loss
from lafs_edge.train.distill_views import (ILLUMINATION, ConsistentViews, TeacherCollate, degrade,
                                           erase, jpeg, low_resolution, mixed)
from lafs_edge.train.sources import normalise, student_matrix, template_change, warp
from lafs_edge.train.teachers import load_teacher, teacher_geometry

pytestmark = pytest.mark.training

REPO = Path(__file__).resolve().parents[1]
INT8_YAML = REPO / "train" / "configs" / "teachers" / "retail_0095_int8.yaml"
OFF = ["augment.flip=0.0", "augment.rotate_deg=0.0", "augment.scale=[1.0, 1.0]",
       "augment.shift=0.0", "augment.jitter_prob=0.0", "augment.grayscale_prob=0.0",
       "augment.blur_prob=0.0", "augment.hard.illumination_prob=0.0",
       "augment.hard.low_res_prob=0.0", "augment.hard.jpeg_prob=0.0",
       "augment.hard.erase_prob=0.0", "augment.hard.point_jitter=0.0",
       "augment.hard.mixup_prob=0.0"]


def teacher_yaml(tmp_path: Path, shared_models: Path) -> Path:
    """The packaged INT8 YAML with the model path made absolute."""
    xml = shared_models / "face-reidentification-retail-0095" / "FP16-INT8" / \
        "face-reidentification-retail-0095.xml"
    if not xml.is_file():
        pytest.skip(f"{xml} not found")
    text = "\n".join(f"model: {xml}" if line.startswith("model:") else line
                     for line in INT8_YAML.read_text().splitlines())
    path = tmp_path / "teacher.yaml"
    path.write_text(text + "\n")
    return path


def wild5_items(shared_data: Path, count: int):
    lines = (shared_data / "wild5" / "landmarks.txt").read_text().splitlines()[:count]
    items = []
    for line in lines:
        parts = line.split()
        values = np.array(parts[1:], float)
        items.append((read_image(shared_data / "wild5" / parts[0]),
                      np.stack([values[:5], values[5:]], 1), -1))
    return items


def face(shared_data: Path) -> np.ndarray:
    image, points, _ = wild5_items(shared_data, 1)[0]
    return warp(image, student_matrix(points), 112, 112)


def test_every_degradation_changes_the_face_and_keeps_its_shape(shared_data):
    crop = face(shared_data).astype(np.float32)
    hard = load_config("distill")["augment"]["hard"]
    for fn in (*ILLUMINATION, low_resolution, jpeg, erase):
        out = fn(crop, np.random.default_rng(1), hard)
        assert out.shape == crop.shape, fn.__name__
        assert np.abs(out - crop).mean() > 1.0, fn.__name__
    # low resolution removes fine detail: less energy in the image's gradients
    small = low_resolution(crop, np.random.default_rng(0), {**hard, "low_res_scale": [0.2, 0.2]})
    assert np.abs(np.diff(small, axis=1)).mean() < 0.8 * np.abs(np.diff(crop, axis=1)).mean()


def test_views_are_reproducible_and_off_means_the_aligned_crop(shared_data):
    aug = load_config("distill")["augment"]
    template = teacher_geometry(INT8_YAML).template
    item = wild5_items(shared_data, 1)[0]
    a = ConsistentViews(aug, template)(item, np.random.default_rng(5))
    b = ConsistentViews(aug, template)(item, np.random.default_rng(5))
    assert torch.equal(a["student"], b["student"]) and a["mix"] == b["mix"]
    plain = load_config("distill", overrides=OFF)["augment"]
    view = ConsistentViews(plain, template)(item, np.random.default_rng(5))
    assert torch.equal(view["student"].permute(1, 2, 0), torch.from_numpy(face(shared_data)))
    assert view["mix"] == 0.0
    degraded = degrade(face(shared_data), np.random.default_rng(3), aug)
    assert degraded.dtype == np.uint8 and degraded.shape == (112, 112, 3)


def test_mixup_blends_with_the_next_face_only_where_asked():
    images = torch.stack([torch.full((3, 4, 4), v, dtype=torch.uint8) for v in (0, 100, 200)])
    out = mixed(images, torch.tensor([0.5, 0.0, 0.25]))
    assert out[0].unique().tolist() == [50] and out[1].unique().tolist() == [100]
    assert out[2].unique().tolist() == [150]  # 0.75 * 200 + 0.25 * 0 (wraps to the first)


def test_relational_loss_is_the_kl_of_similarity_distributions():
    torch.manual_seed(0)
    bank = F.normalize(torch.randn(50, 8), dim=1)
    teacher = torch.randn(4, 8)
    assert float(relational_loss(teacher * 3, teacher, bank, 0.1)) < 1e-6  # scale-free
    student = torch.randn(4, 8)
    p = F.softmax(F.normalize(teacher, dim=1) @ bank.T / 0.1, 1)
    q = F.softmax(F.normalize(student, dim=1) @ bank.T / 0.1, 1)
    expected = (p * (p.log() - q.log())).sum(1).mean()
    assert torch.allclose(relational_loss(student, teacher, bank, 0.1), expected, atol=1e-5)


def test_hard_example_emphasis_weighs_faces_by_their_share_of_the_loss():
    torch.manual_seed(0)
    teacher = torch.randn(6, 8)
    student = (teacher + torch.randn(6, 8) * torch.linspace(0.1, 2, 6)[:, None]).requires_grad_()
    for kind in ("cosine", "l2"):
        plain = embedding_loss(kind, student, teacher)
        assert torch.equal(embedding_loss(kind, student, teacher, 0.0), plain)
    per = (1 - F.cosine_similarity(student, teacher, dim=1)).detach().numpy()
    w = (per / per.mean()) ** 2
    w /= w.mean()
    hard = embedding_loss("cosine", student, teacher, 2.0)
    assert float(hard) == pytest.approx(float(np.mean(w * per)), rel=1e-5)
    assert float(hard) > float(embedding_loss("cosine", student, teacher))
    (grad_plain,) = torch.autograd.grad(embedding_loss("cosine", student, teacher), student)
    (grad_hard,) = torch.autograd.grad(hard, student)
    worst, best = int(np.argmax(per)), int(np.argmin(per))
    share = lambda g: float(g[worst].norm() / g[best].norm())  # noqa: E731
    assert share(grad_hard) > 10 * share(grad_plain)


def test_the_teacher_embeds_exactly_the_view_the_student_gets(shared_data, shared_models,
                                                              tmp_path):
    """The worker's target is the teacher's embedding of its crop of the finished (degraded,
    mixed) view; without augmentation it is the teacher's embedding of the face."""
    teacher_path = teacher_yaml(tmp_path, shared_models)
    aug = load_config("distill", overrides=["augment.hard.mixup_prob=1.0"])["augment"]
    geometry = teacher_geometry(teacher_path)
    views = ConsistentViews(aug, geometry.template)
    items = wild5_items(shared_data, 4)
    batch = [views(item, np.random.default_rng(i)) for i, item in enumerate(items)]
    out = TeacherCollate(str(teacher_path), geometry.crop_size)(batch)
    assert out["student"].shape == (4, 3, 112, 112) and out["target"].shape == (4, 256)
    teacher = load_teacher(teacher_path, torch.device("cpu"))
    for i, view in enumerate(batch):
        crop = warp(np.ascontiguousarray(out["student"][i].permute(1, 2, 0).numpy()),
                    view["change"].numpy(), *geometry.crop_size)
        expected, _ = teacher(normalise(torch.from_numpy(crop[None]).permute(0, 3, 1, 2)))
        assert F.cosine_similarity(out["target"][i:i + 1], expected).item() > 0.9999
    # No augmentation: the teacher's crop of the student's crop is its own crop of the photo.
    plain = load_config("distill", overrides=OFF)["augment"]
    image, points, _ = items[0]
    view = ConsistentViews(plain, geometry.template)(items[0], np.random.default_rng(0))
    target = TeacherCollate(str(teacher_path), geometry.crop_size)([view])["target"]
    native = warp(image, template_change(points, geometry.template) @ student_matrix(points),
                  *geometry.crop_size)
    expected, _ = teacher(normalise(torch.from_numpy(native[None]).permute(0, 3, 1, 2)))
    assert F.cosine_similarity(target, expected).item() > 0.97


def test_loader_targets_need_a_cpu_teacher(tmp_path, capsys):
    checkpoint = tmp_path / "teacher.pt"
    from lafs_edge.models import create_model, save_checkpoint

    save_checkpoint(create_model("mobilefacenet"), checkpoint)
    cfg = load_config("distill", overrides=[f"distill.teacher={checkpoint}",
                                            "distill.targets=loader"])
    with pytest.raises(Exception, match="teacher YAML or an exported artifact"):
        loader_collate(cfg)


@pytest.mark.slow
def test_loader_distillation_runs_resumes_and_learns(shared_data, shared_models, tmp_path):
    """targets=loader with one worker and the relational term: the loss falls and the run
    resumes at its step."""
    subset = tmp_path / "list.txt"
    subset.write_text("\n".join((shared_data / "wild5" / "landmarks.txt").read_text()
                                .splitlines()[:96]) + "\n")
    out = tmp_path / "run"
    args = ["train", "distill", "--config", "distill", "model.arch=mobilefacenet",
            f"distill.teacher={teacher_yaml(tmp_path, shared_models)}", "distill.targets=loader",
            "distill.relational_weight=1.0", f"distill.target_cache={tmp_path / 'bank.pt'}",
            f"data.list_file={subset}", f"data.root={shared_data / 'wild5'}",
            "data.format=landmarks", f"output_dir={out}", "data.num_workers=1",
            "optim.batch_size=16", "optim.max_steps=16", "optim.warmup_epochs=0.5",
            "optim.lr=3e-3", "train.checkpoint_every=8", "train.progress=false",
            "train.log_every=1"]
    assert main([*args, "train.stop_after=8"]) == 0
    assert main(args) == 0
    import json

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 17))
    assert all(r["relational_kl"] > 0 for r in rows)
    losses = [r["loss"] for r in rows]
    assert np.mean(losses[-4:]) < np.mean(losses[:4]), losses


def campaign_module(name: str):
    sys.path.insert(0, str(REPO / "experiments"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def test_all_pairs_tar_matches_a_brute_force_count():
    wild_eval = campaign_module("wild_eval")
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(30), 8)
    centres = rng.normal(size=(30, 16))
    x = centres[labels] + rng.normal(scale=1.2, size=(len(labels), 16))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    fig = wild_eval.all_pairs(x, labels, far=1e-2, bootstraps=50)
    i, j = np.triu_indices(len(labels), 1)
    same = labels[i] == labels[j]
    scores = np.einsum("ij,ij->i", x[i], x[j])  # the same arithmetic: ties stay ties
    impostor, genuine = scores[~same], scores[same]
    assert fig["genuine_pairs"] == same.sum() and fig["impostor_pairs"] == (~same).sum()
    assert (impostor > fig["threshold"]).mean() <= 1e-2
    assert (impostor >= fig["threshold"]).mean() > 1e-2  # the lowest such threshold
    assert fig["tar"] == pytest.approx((genuine > fig["threshold"]).mean(), abs=1e-4)
    assert 0 < fig["std"] < 0.2 and fig["ci95"][0] <= fig["tar"] <= fig["ci95"][1]


def test_stress_set_is_fixed_and_harsh(shared_data):
    wild_eval = campaign_module("wild_eval")
    crops = np.stack([face(shared_data)] * 2)
    for condition in wild_eval.RELIGHT:
        a, b = wild_eval.relit(crops, condition), wild_eval.relit(crops, condition)
        assert np.array_equal(a, b), condition
        assert np.abs(a.astype(float) - crops).mean() > 10, condition


def test_campaign_lines_fix_their_recipe_and_scale_every_degradation(tmp_path, monkeypatch):
    campaign = campaign_module("campaign")
    monkeypatch.setattr(campaign, "STATE", tmp_path)
    settings = campaign.parse_settings(["lr=3e-4", "degrade_scale=0.5"])
    assert settings == {"lr": 3e-4, "degrade_scale": 0.5}
    state = campaign.read_state("mobilefacenet", "cpu", "arm", settings)
    assert state["recipe"]["lr"] == 3e-4 and state["recipe"]["batch"] == 64
    campaign.save_state(state, campaign.state_dir("mobilefacenet", "cpu", "arm"))
    assert (tmp_path / "mobilefacenet-arm" / "state.json").is_file()
    assert campaign.read_state("mobilefacenet", "cpu", "arm", {"lr": 3e-4})["step"] == 0
    with pytest.raises(SystemExit, match="has started"):
        campaign.read_state("mobilefacenet", "cpu", "arm", {"lr": 1e-3})
    evaluated = campaign.read_state("mobilefacenet", "cpu", "arm", {"bn_faces": 0})
    assert evaluated["recipe"]["bn_faces"] == 0 and evaluated["recipe"]["lr"] == 3e-4
    with pytest.raises(SystemExit, match="unknown recipe keys"):
        campaign.read_state("mobilefacenet", "cpu", "other", {"learning_rate": 1e-3})
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        campaign.parse_settings(["lr"])

    base = load_config("distill", overrides=[])["augment"]
    cfg = campaign.resolved_config(campaign.distill_argv("mobilefacenet", state["recipe"],
                                                         tmp_path, 10))
    assert cfg["optim"]["lr"] == 3e-4
    for key in ("illumination_prob", "low_res_prob", "jpeg_prob", "erase_prob", "mixup_prob"):
        assert cfg["augment"]["hard"][key] == pytest.approx(base["hard"][key] / 2), key
    for key in ("jitter_prob", "grayscale_prob", "blur_prob"):
        assert cfg["augment"][key] == pytest.approx(base[key] / 2), key
    assert cfg["augment"]["hard"]["gamma"] == base["hard"]["gamma"]   # strengths unchanged


def test_campaign_ships_only_past_the_spread_with_a_card_of_its_stints(tmp_path):
    campaign = campaign_module("campaign")
    shipped = {"tar": 0.48, "std": 0.04}
    assert not campaign.better_than_shipped({"tar": 0.51, "std": 0.04}, shipped)  # inside spread
    assert not campaign.better_than_shipped({"tar": 0.485, "std": 0.001}, shipped)  # < 0.01
    assert campaign.better_than_shipped({"tar": 0.53, "std": 0.04}, shipped)

    from lafs_edge.models import create_model, load_model, save_checkpoint
    from lafs_edge.models.shipping import ship_student

    conditions = list(campaign.wild_eval.RELIGHT)

    def figures(tar: float) -> dict:
        return {"celeba": {"tar": tar, "std": 0.03, "threshold": 0.41},
                "stress": {c: {"tar": tar - 0.05} for c in conditions}, "stress_mean": tar - 0.05}

    state = campaign.read_state("mobilefacenet", "cpu", "arm", {"lr": 3e-4})
    state.update(step=3000, images_seen=192000, stints=[
        {"start_step": 0, "end_step": 3000, "minutes": 130.0, "machine": "x86_64",
         "command": "python experiments/campaign.py --student mobilefacenet --line arm"}])
    teacher = {"FP16": figures(0.905)}
    card = campaign.ship_card(state, figures(0.6), figures(0.48), teacher)
    save_checkpoint(create_model("mobilefacenet"), tmp_path / "model.pt")
    entry = ship_student("mobilefacenet", tmp_path / "model.pt", 0.41, card, weights=tmp_path / "w")
    text = (tmp_path / "w" / entry["card"]).read_text()
    assert "192,000 images seen" in text and "--line arm" in text and "0.600 ± 0.030" in text
    assert "0.480 ± 0.030" in text and "0.905" in text and "non-commercial" in text
    assert load_model(tmp_path / "w" / entry["file"]).embedding_dim == 128


def test_campaign_line_that_averages_starts_its_average_at_the_student(shared_data, tmp_path):
    """A run checkpoint written for a recipe with distill.ema_decay > 0 (the first start, or a
    rebuild from committed state without an average) carries the student's weights as its
    average, under the name the trainer restores."""
    campaign = campaign_module("campaign")
    from lafs_edge.models import create_model
    from lafs_edge.train.distill import Student

    state = campaign.read_state("mobilefacenet", "cpu", "avg",
                                {"config": {"distill.ema_decay": 0.999}})
    cfg = campaign.resolved_config(campaign.distill_argv("mobilefacenet", state["recipe"],
                                                         tmp_path, 0))
    assert cfg["distill"]["ema_decay"] == 0.999
    student = Student(create_model("mobilefacenet"), torch.nn.Linear(128, 256))
    campaign.write_run_checkpoint(tmp_path, 0, {"student": student.state_dict()},
                                  {"state": {}, "param_groups": []}, cfg, 21)
    modules = torch.load(campaign.latest_rank_file(tmp_path), weights_only=True)["modules"]
    assert set(modules["average"]) == set(student.model.state_dict())
    for key, value in student.model.state_dict().items():
        assert torch.equal(modules["average"][key], value), key
