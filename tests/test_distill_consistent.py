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


def brute_force_tar(x: np.ndarray, labels: np.ndarray, counts: np.ndarray, far: float) -> float:
    """TAR at `far` with every pair weighed by its identities' draw counts, pair by pair."""
    i, j = np.triu_indices(len(labels), 1)
    scores = np.einsum("ij,ij->i", x[i], x[j])
    same = labels[i] == labels[j]
    weight = counts[labels[i]] * np.where(same, 1.0, counts[labels[j]])
    imp, imp_w = scores[~same], weight[~same]
    # the lowest impostor score with at most `far` of the impostor weight strictly above it
    threshold = min(t for t in imp if imp_w[imp > t].sum() <= far * imp_w.sum())
    return float((weight[same] * (scores[same] > threshold)).sum() / weight[same].sum())


def test_paired_difference_shares_the_draws_and_cancels_what_the_models_share():
    """The paired difference of two models is TAR(b) - TAR(a) on the full set, its spread is the
    std of that difference over identity draws shared by both (checked draw by draw against a
    brute-force count), and it is far narrower than either model's own spread when the models
    differ by little."""
    wild_eval = campaign_module("wild_eval")
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(20), 6)
    centres = rng.normal(size=(20, 16))
    a = centres[labels] + rng.normal(scale=1.2, size=(len(labels), 16))
    b = a + rng.normal(scale=0.3, size=a.shape)
    a, b = (v / np.linalg.norm(v, axis=1, keepdims=True) for v in (a, b))
    far = 1e-2
    diff = wild_eval.paired_difference([wild_eval.all_pair_scores(b, labels)],
                                       [wild_eval.all_pair_scores(a, labels)], 20, far=far,
                                       bootstraps=40, seed=5)
    fig_a = wild_eval.all_pairs(a, labels, far=far, bootstraps=40, seed=5)
    fig_b = wild_eval.all_pairs(b, labels, far=far, bootstraps=40, seed=5)
    assert diff["diff"] == pytest.approx(fig_b["tar"] - fig_a["tar"], abs=2e-4)
    draws = wild_eval.identity_draws(20, 40, 5)
    by_hand = [brute_force_tar(b, labels, c, far) - brute_force_tar(a, labels, c, far)
               for c in draws]
    assert diff["std"] == pytest.approx(np.std(by_hand), abs=2e-4)
    assert diff["std"] < 0.6 * min(fig_a["std"], fig_b["std"])
    itself = wild_eval.paired_difference([wild_eval.all_pair_scores(a, labels)],
                                         [wild_eval.all_pair_scores(a, labels)], 20)
    assert itself == {"diff": 0.0, "std": 0.0, "ci95": [0.0, 0.0]}


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
    """Ship past the paired difference's spread (and 0.01), or at equal accuracy when that makes
    the package's student meet the latency target."""
    campaign = campaign_module("campaign")
    fast, slow = 1.05, 1.81    # int8 latency over the reference's; the target is 1.5
    assert campaign.ship_reason({"diff": 0.03, "std": 0.04}, fast) is None   # inside the spread
    assert campaign.ship_reason({"diff": 0.005, "std": 0.001}, fast) is None   # under 0.01
    assert campaign.ship_reason({"diff": 0.05, "std": 0.04}, fast) == "better"
    assert campaign.ship_reason({"diff": 0.02, "std": 0.012}, None) == "better"
    assert campaign.ship_reason({"diff": 0.0, "std": 0.02}, slow) == "within the latency target"
    assert campaign.ship_reason({"diff": -0.001, "std": 0.02}, slow) is None   # less accurate
    assert campaign.ship_reason({"diff": 0.0, "std": 0.02}, None) is None   # latency unknown

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
    card = campaign.ship_card(state, figures(0.6), figures(0.48), teacher,
                              {"diff": 0.12, "std": 0.013, "ci95": [0.095, 0.146]})
    save_checkpoint(create_model("mobilefacenet"), tmp_path / "model.pt")
    entry = ship_student("mobilefacenet", tmp_path / "model.pt", 0.41, card, weights=tmp_path / "w")
    text = (tmp_path / "w" / entry["card"]).read_text()
    assert "192,000 images seen" in text and "--line arm" in text and "0.600 ± 0.030" in text
    assert "0.480 ± 0.030" in text and "0.905" in text and "non-commercial" in text
    assert "+0.120 ± 0.013 (2.5-97.5%: +0.095 to +0.146)" in text
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


def test_campaign_commits_fp16_weights_only_and_rebuilds_a_run_that_resumes(tmp_path):
    """compact keeps the modules' weights (fp16) and the param groups, no AdamW moments: about
    half a run checkpoint; expand gives back a run checkpoint at the same step with those weights
    and an empty optimizer state, which the trainer resumes with a re-warm-up. A committed file of
    the first format (bf16 second moments inside) expands the same way."""
    campaign = campaign_module("campaign")
    from lafs_edge.models import create_model
    from lafs_edge.train.distill import Student
    from lafs_edge.train.engine.optim import build_optimizer, split_decay

    state = campaign.read_state("mobilefacenet", "cpu", "c", {})
    cfg = campaign.resolved_config(campaign.distill_argv("mobilefacenet", state["recipe"],
                                                         tmp_path, 0))
    student = Student(create_model("mobilefacenet"), torch.nn.Linear(128, 256))
    optimizer = build_optimizer(split_decay([student]), cfg["optim"], torch.device("cpu"))
    student(torch.randn(2, 3, 112, 112))[0].square().sum().backward()
    optimizer.step()   # moments exist now
    run, rebuilt = tmp_path / "run", tmp_path / "rebuilt"
    campaign.write_run_checkpoint(run, 700, {"student": student.state_dict()},
                                  optimizer.state_dict(), cfg, 21)
    rank = campaign.latest_rank_file(run)
    committed = tmp_path / "checkpoint.pt"
    campaign.compact(rank, committed)
    saved = torch.load(committed, weights_only=True)
    assert "optimizer" not in saved and saved["step"] == 700
    assert committed.stat().st_size < 0.3 * rank.stat().st_size   # fp32 weights + 2 moments
    assert all(v.dtype in (torch.float16, torch.int64) for v in saved["modules"]["student"].values())

    assert campaign.expand(committed, rebuilt, cfg) == 700
    back = torch.load(campaign.latest_rank_file(rebuilt), weights_only=True)
    assert back["optimizer"]["state"] == {} and back["step"] == 700
    assert back["optimizer"]["param_groups"] == optimizer.state_dict()["param_groups"]
    for key, value in student.state_dict().items():
        assert torch.equal(back["modules"]["student"][key],
                           value.half().float() if value.is_floating_point() else value), key
    fresh = Student(create_model("mobilefacenet"), torch.nn.Linear(128, 256))
    fresh.load_state_dict(back["modules"]["student"])   # the trainer's restore: every key fits

    first = {**saved, "format": "lafs-edge-campaign/1",
             "optimizer": {"state": {i: {"step": s["step"], "exp_avg_sq": s["exp_avg_sq"].bfloat16()}
                                     for i, s in optimizer.state_dict()["state"].items()},
                           "param_groups": saved.pop("param_groups")}}
    torch.save(first, committed)
    assert campaign.expand(committed, tmp_path / "old", cfg) == 700
    old = torch.load(campaign.latest_rank_file(tmp_path / "old"), weights_only=True)
    assert old["optimizer"]["state"] == {}
    assert old["optimizer"]["param_groups"] == back["optimizer"]["param_groups"]


def test_campaign_embeds_each_model_once_for_its_figures_and_pair_sets(tmp_path, monkeypatch):
    """evaluate_model and pair_sets share one embedding of a model (kept by its weights' hash):
    the figures equal wild_eval.report's with an embedder of its own, and a model paired with
    itself differs by exactly 0."""
    from lafs_edge.models import create_model, load_model, save_checkpoint

    campaign = campaign_module("campaign")
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (24, 112, 112, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(6), 4)
    monkeypatch.setattr(campaign, "celeba_eval_crops", lambda: (crops, labels))
    monkeypatch.setattr(campaign, "EMBEDDINGS", {})
    campaign.relit_eval_crops.cache_clear()
    embedded = []
    own = campaign.torch_embedder
    monkeypatch.setattr(campaign, "torch_embedder", lambda model: embedded.append(1) or own(model))
    torch.manual_seed(0)
    save_checkpoint(create_model("mobilefacenet").eval(), tmp_path / "model.pt")
    try:
        figures = campaign.evaluate_model(tmp_path / "model.pt")
        sets = campaign.pair_sets(tmp_path / "model.pt")
        gain = campaign.paired_gain(tmp_path / "model.pt", tmp_path / "model.pt")
        expected = campaign.wild_eval.report(
            lambda c: campaign.embed_with(own(load_model(tmp_path / "model.pt").eval()), c),
            crops, labels)
        assert len(embedded) == 1
        save_checkpoint(create_model("mobilefacenet").eval(), tmp_path / "model.pt")
        campaign.pair_sets(tmp_path / "model.pt")   # new weights in the same file: read again
    finally:
        campaign.relit_eval_crops.cache_clear()
    assert len(embedded) == 2
    assert figures == expected
    assert len(sets) == 1 + len(campaign.wild_eval.RELIGHT)
    assert len(sets[0].genuine) == 6 * 6 and len(sets[1].genuine) == 6 * 4 * 3
    assert gain["celeba"]["diff"] == 0 and gain["stress_mean"]["diff"] == 0


def test_fit_gap_rebuilds_the_committed_student_with_its_projection(tmp_path, monkeypatch):
    """experiments/fit_gap.py reads a line's committed checkpoint into the trainer's student and
    projection: its projected rows are the trainer's Student's (fp16-rounded weights), unit."""
    import json

    campaign, fit_gap = campaign_module("campaign"), campaign_module("fit_gap")
    from lafs_edge.image import MEAN, STD
    from lafs_edge.models import create_model
    from lafs_edge.train.distill import Student
    from lafs_edge.train.engine.optim import build_optimizer, split_decay

    state = campaign.read_state("mobilefacenet", "cpu", "gap", {})
    cfg = campaign.resolved_config(campaign.distill_argv("mobilefacenet", state["recipe"],
                                                         tmp_path, 0))
    torch.manual_seed(0)
    student = Student(create_model("mobilefacenet"), torch.nn.Linear(128, 256))
    optimizer = build_optimizer(split_decay([student]), cfg["optim"], torch.device("cpu"))
    campaign.write_run_checkpoint(tmp_path / "run", 40, {"student": student.state_dict()},
                                  optimizer.state_dict(), cfg, 21)
    (tmp_path / "line").mkdir()
    campaign.compact(campaign.latest_rank_file(tmp_path / "run"), tmp_path / "line" / "checkpoint.pt")
    (tmp_path / "line" / "state.json").write_text(json.dumps({**state, "step": 40,
                                                              "images_seen": 2560}))
    monkeypatch.setattr(fit_gap, "STATE", tmp_path)
    rebuilt, step, images = fit_gap.student_of("line")
    assert (step, images) == (40, 2560)
    student.load_state_dict({k: v.half().float() if v.is_floating_point() else v
                             for k, v in student.state_dict().items()})
    crops = torch.randint(0, 256, (3, 3, 112, 112), dtype=torch.uint8)
    with torch.no_grad():
        expected = F.normalize(student.eval()((crops.float() - MEAN) / STD)[1], dim=1).numpy()
    np.testing.assert_allclose(fit_gap.projected(rebuilt, crops), expected, atol=1e-5)


def test_campaign_branch_continues_a_line_with_changed_settings(tmp_path, monkeypatch):
    """--branch: the new line starts at the parent's step and images with its checkpoint, the
    parent's recipe plus the changes (config entries merged), and the parent untouched; an
    existing line, or a change to what the weights were built on, is refused."""
    import json

    campaign = campaign_module("campaign")
    monkeypatch.setattr(campaign, "STATE", tmp_path)
    parent = campaign.read_state("mobilefacenet", "cpu", "main", {"config": {"augment.flip": 0.5}})
    parent.update(step=900, images_seen=57600, stints=[{"start_step": 0, "end_step": 900}])
    campaign.save_state(parent, campaign.state_dir("mobilefacenet", "cpu", "main"))
    (tmp_path / "mobilefacenet-main" / "checkpoint.pt").write_bytes(b"weights")
    change = {"config": {"augment.hard.illumination_prob": 0}, "relational_weight": 0.1}
    state = campaign.branch_line("mobilefacenet", "cpu", "main", "noillum", change)
    saved = json.loads((tmp_path / "mobilefacenet-noillum" / "state.json").read_text())
    assert saved == state and state["step"] == 900 and state["images_seen"] == 57600
    assert state["recipe"]["config"] == {"augment.flip": 0.5, "augment.hard.illumination_prob": 0}
    assert state["recipe"]["relational_weight"] == 0.1 and state["recipe"]["lr"] == parent["recipe"]["lr"]
    assert state["parent"] == {"line": "mobilefacenet-main", "step": 900, "images_seen": 57600,
                               "changed": change}
    assert (tmp_path / "mobilefacenet-noillum" / "checkpoint.pt").read_bytes() == b"weights"
    assert campaign.read_state("mobilefacenet", "cpu", "main")["recipe"] == parent["recipe"]
    assert campaign.read_state("mobilefacenet", "cpu", "noillum") == state   # resumes as a line
    # the report shows the parent's past once: the branch's own curve starts where it branched
    state["curve"] = [{"step": 0}, {"step": 900}, {"step": 1200}]
    state["stints"] += [{"start_step": 900, "end_step": 1200}]
    assert campaign.own_part(state) == ([{"step": 900}, {"step": 1200}],
                                        [{"start_step": 900, "end_step": 1200}])
    assert campaign.own_part(parent)[1] == parent["stints"]
    with pytest.raises(SystemExit, match="exists"):
        campaign.branch_line("mobilefacenet", "cpu", "main", "noillum", change)
    with pytest.raises(SystemExit, match=r"cannot change \['batch'\]"):
        campaign.branch_line("mobilefacenet", "cpu", "main", "b2", {"batch": 32})
    with pytest.raises(SystemExit, match="no committed checkpoint"):
        campaign.branch_line("mobilefacenet", "cpu", "noparent", "b3", {})
