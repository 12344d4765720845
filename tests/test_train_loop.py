"""The training engine: data order, schedules, RNG state, 2-process DDP parity, exact resume,
NaN stop, and a supervised smoke run on real faces."""
from __future__ import annotations

import json
import math
import multiprocessing
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lafs_edge.cli import main
from lafs_edge.models import load_model, read_checkpoint
from lafs_edge.train.config import load_config
from lafs_edge.train.engine import (GlobalBatchSampler, TrainingDiverged, cosine_schedule,
                                    rng_state, set_rng_state)
from lafs_edge.train.supervised import SupervisedTask, train

pytestmark = pytest.mark.training

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = "model.overrides={preset: test}"  # registry PRESETS: dim 32, 16 landmarks
# Synthetic identities (8 x 4 images), no workers, no progress bar: seconds per run on a CPU.
TINY = ["model.arch=part_fvit_tiny", TINY_MODEL, "data.format=synthetic",
        "data.synthetic_size=32", "data.synthetic_classes=8", "data.num_workers=0",
        "optim.batch_size=4", "optim.warmup_epochs=0.5", "optim.lr=1e-3", "train.progress=false",
        "head.scale=32.0", "head.margin=0.2"]


def tiny_config(out: Path, *extra: str) -> dict:
    return load_config("supervised", [], [*TINY, f"output_dir={out}", *extra])


def weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["state_dict"]


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def rank_state(out: Path, rank: int = 0) -> dict:
    latest = (out / "checkpoints" / "latest").read_text().strip()
    return torch.load(out / "checkpoints" / latest / f"rank{rank:05d}.pt", weights_only=True)


# --- pieces --------------------------------------------------------------------------------------

def test_global_batches_are_the_same_for_any_ranks_and_accumulation():
    def global_batches(world, accumulate):
        samplers = [GlobalBatchSampler(50, 3, accumulate, world, r, seed=4) for r in range(world)]
        for s in samplers:
            s.set_epoch(2)
        per_rank = [list(s) for s in samplers]
        steps = []
        for step in range(samplers[0].steps_per_epoch):
            keys = [k for a in range(accumulate) for r in range(world)
                    for k in per_rank[r][step * accumulate + a]]
            steps.append(keys)
        return steps

    one = global_batches(1, 4)
    assert global_batches(2, 2) == one == global_batches(4, 1)
    assert len(one) == 50 // 12 and all(len(b) == 12 for b in one)
    assert all(epoch == 2 for batch in one for _, epoch in batch)
    flat = [i for batch in one for i, _ in batch]
    assert len(set(flat)) == len(flat)  # no repeats inside an epoch


def test_sampler_resumes_at_the_exact_step():
    sampler = GlobalBatchSampler(40, 2, 2, 2, 1, seed=0)
    sampler.set_epoch(1)
    full = list(sampler)
    sampler.set_epoch(1, start_step=3)
    assert list(sampler) == full[3 * 2:] and len(sampler) == len(full) - 6


def test_cosine_schedule_warms_up_then_decays():
    lrs = [cosine_schedule(s, 100, 10, 1.0, 0.01) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[-1] == pytest.approx(0.01, abs=1e-3)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert cosine_schedule(55, 100, 10, 1.0, 0.0) == pytest.approx(0.5)


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.normal()  # leaves a cached gaussian in numpy's state
    torch.save(rng_state(torch.device("cpu")), tmp_path / "rng.pt")
    expected = (random.random(), np.random.normal(), torch.rand(3))
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True), torch.device("cpu"))
    got = (random.random(), np.random.normal(), torch.rand(3))
    assert got[:2] == expected[:2] and torch.equal(got[2], expected[2])


# --- runs ----------------------------------------------------------------------------------------

def test_two_process_ddp_matches_one_process_on_the_same_global_batch(tmp_path):
    """torchrun, 2 CPU ranks (gloo) x 2 accumulated micro-batches of 2, vs 1 process accumulating
    4 micro-batches of 2: the same global batches, BatchNorm statistics over the same images,
    DDP no_sync, Partial FC with its centres sharded over the 2 ranks, mixup, augmentation and
    global gradient clipping. Both sides use one thread so float reductions match.

    The two layouts sum the same numbers in a different order (the sharded softmax), so they
    agree to float rounding, which AdamW amplifies: its first steps move a parameter by about
    +-lr whatever the gradient's size, so a parameter whose true gradient is zero (a BatchNorm
    bias followed by another BatchNorm) turns 1e-6 of noise into a full step. A raised eps and
    a small lr keep that amplification below the tolerance (measured: 4e-7 at lr 1e-4, 8e-6 at
    lr 1e-3 after 3 steps)."""
    common = ["head.partial_fc_above=0", "head.sample_rate=1.0", "augment.mixup_prob=1.0",
              "optim.grad_clip=1.0", "optim.max_steps=3", "optim.batch_size=2", "optim.eps=1e-4",
              "optim.lr=1e-4", "train.checkpoint_every=100", "train.log_every=1"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(tiny_config(tmp_path / "single", *common, "optim.accumulate=4"))
    finally:
        torch.set_num_threads(threads)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "lafs_edge.cli", "train", "supervised", *TINY, *common, "optim.accumulate=2",
           f"output_dir={tmp_path / 'ddp'}"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for one, two in zip(metrics(tmp_path / "single"), metrics(tmp_path / "ddp"), strict=True):
        assert one["loss"] == pytest.approx(two["loss"], rel=1e-5)
        assert one["grad_norm"] == pytest.approx(two["grad_norm"], rel=1e-4)  # before clipping
    ours, theirs = weights(tmp_path / "single" / "model.pt"), weights(tmp_path / "ddp" / "model.pt")
    assert ours.keys() == theirs.keys()
    for key in ours:
        if "running_" not in key and "num_batches" not in key:  # BatchNorm statistics: per rank
            assert torch.allclose(ours[key], theirs[key], atol=2e-6), key
    centres = torch.cat([rank_state(tmp_path / "ddp", r)["modules"]["head"]["weight"]
                         for r in range(2)])
    assert torch.allclose(centres, rank_state(tmp_path / "single")["modules"]["head"]["weight"],
                          atol=2e-6)


def test_resume_equals_one_straight_run(tmp_path, capsys, caplog):
    """6 steps straight == 3 steps, stop, resume, 3 steps (bitwise). Dropout, drop-path and
    mixup draw random numbers and the resumed half crosses an epoch boundary (4 steps/epoch)."""
    extra = ["model.overrides.landmark_dropout=0.5", "model.overrides.drop_path=0.2",
             "model.overrides.depth=2", "augment.mixup_prob=0.5", "data.synthetic_size=16",
             "optim.max_steps=6", "train.checkpoint_every=100"]
    straight = train(tiny_config(tmp_path / "straight", *extra))
    first = train(tiny_config(tmp_path / "resumed", *extra, "train.stop_after=3"))
    assert first.final_step == 3 and rank_state(tmp_path / "resumed")["step"] == 3
    capsys.readouterr()
    second = train(tiny_config(tmp_path / "resumed", *extra))
    assert (second.start_step, second.final_step) == (3, 6)
    assert "changed config" not in capsys.readouterr().out + caplog.text  # stop_after: a run key
    assert first.losses + second.losses == straight.losses
    a, b = weights(tmp_path / "straight" / "model.pt"), weights(tmp_path / "resumed" / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    sa, sb = rank_state(tmp_path / "straight"), rank_state(tmp_path / "resumed")
    assert all(torch.equal(sa["modules"]["head"][k], sb["modules"]["head"][k])
               for k in sa["modules"]["head"])
    moments = [(sa["optimizer"]["state"][i]["exp_avg_sq"], sb["optimizer"]["state"][i]["exp_avg_sq"])
               for i in sa["optimizer"]["state"]]
    assert all(torch.equal(x, y) for x, y in moments)
    assert torch.equal(sa["rng"]["torch"], sb["rng"]["torch"])
    model = load_model(tmp_path / "resumed" / "model.pt")  # the deployable checkpoint
    assert model(torch.zeros(2, 3, 112, 112)).shape == (2, 32)


def test_resume_without_optimizer_moments_ramps_the_lr_again(tmp_path):
    """A checkpoint whose AdamW state was dropped (the campaign commits weights only) resumes with
    fresh moments and the lr ramped from 1/rewarm_steps of the schedule back to it; a resume
    with its moments follows the schedule."""
    extra = ["optim.max_steps=8", "optim.warmup_epochs=0.25", "train.checkpoint_every=100",
             "train.log_every=1", "optim.rewarm_steps=3"]
    cfg = tiny_config(tmp_path / "run", *extra, "train.stop_after=4")
    train(cfg)
    root = tmp_path / "run" / "checkpoints"
    latest = root / (root / "latest").read_text().strip()
    state = torch.load(latest / "rank00000.pt", weights_only=True)
    assert state["optimizer"]["state"]
    state["optimizer"]["state"] = {}
    torch.save(state, latest / "rank00000.pt")
    resumed = train(tiny_config(tmp_path / "run", *extra))
    assert (resumed.start_step, resumed.final_step) == (4, 8)
    optim = cfg["optim"]

    def scheduled(step):   # 32 images / batch 4: 8 steps an epoch, warmup 0.25 epoch = 2 steps
        return cosine_schedule(step, 8, 2, optim["lr"], optim["min_lr"])
    lrs = {r["step"]: r["lr"] for r in metrics(tmp_path / "run")}
    for step in range(4, 8):   # logged at step + 1
        assert lrs[step + 1] == pytest.approx(scheduled(step) * min(1.0, (step - 3) / 3),
                                              abs=1e-6), step   # logged to 6 decimals
    assert rank_state(tmp_path / "run")["optimizer"]["state"][0]["step"] == 4  # fresh moments

    straight = tmp_path / "straight"
    train(tiny_config(straight, *extra, "train.stop_after=4"))
    train(tiny_config(straight, *extra))
    assert [r["lr"] for r in metrics(straight)][4:] == pytest.approx(
        [scheduled(s) for s in range(4, 8)], abs=1e-6)


@pytest.mark.slow   # compiling takes about a minute on a CPU
def test_a_compiled_run_resumes_an_eager_one_and_keeps_its_checkpoint_keys(tmp_path, caplog):
    """train.compile=true: the trained modules are torch.compile'd in place, so a run started
    eager resumes compiled (a run key: no config change reported), its checkpoints keep their
    keys, and its losses follow the eager run's to float rounding."""
    extra = ["optim.max_steps=4", "train.checkpoint_every=100", "model.overrides.depth=1",
             "data.synthetic_size=16"]
    eager = train(tiny_config(tmp_path / "eager", *extra))
    train(tiny_config(tmp_path / "mixed", *extra, "train.stop_after=2"))
    resumed = train(tiny_config(tmp_path / "mixed", *extra, "train.compile=true"))
    assert (resumed.start_step, resumed.final_step) == (2, 4)
    assert "changed config" not in caplog.text
    assert resumed.losses == pytest.approx(eager.losses[2:], rel=1e-3)
    a, b = rank_state(tmp_path / "eager"), rank_state(tmp_path / "mixed")
    assert {n: sorted(sd) for n, sd in a["modules"].items()} == \
        {n: sorted(sd) for n, sd in b["modules"].items()}
    assert sorted(weights(tmp_path / "eager" / "model.pt")) == \
        sorted(weights(tmp_path / "mixed" / "model.pt"))


def test_compiling_leaves_frozen_modules_eager():
    from lafs_edge.train.engine.distributed import compile_trained

    trained, frozen = torch.nn.Linear(4, 2), torch.nn.Linear(4, 2).requires_grad_(False)
    compile_trained({"student": trained, "average": frozen})
    assert trained._compiled_call_impl is not None and frozen._compiled_call_impl is None
    assert list(trained.state_dict()) == ["weight", "bias"]


def test_resuming_with_another_config_says_what_changed():
    from lafs_edge.train.engine import config_changes

    saved = {"optim": {"lr": 1e-3, "max_steps": 900}, "train": {"stop_after": 3}, "seed": 0}
    current = {"optim": {"lr": 3e-4, "max_steps": 900}, "train": {"stop_after": 0}, "seed": 0}
    assert config_changes(saved, current) == ["optim.lr 0.001 -> 0.0003"]
    assert config_changes(saved, saved) == []


def test_training_reads_insightface_recordio(tmp_path):
    """data.format=recordio: a BGR-stored set (as MS1MV3) trains with data.bgr=true, and the
    reader gives back the source's RGB pixels."""
    import cv2

    from lafs_edge.train.data.recordio import RecordIODataset, write_insightface_rec
    from lafs_edge.train.supervised import SyntheticFaces

    source = SyntheticFaces(16, 4)
    items = sorted((source[i] for i in range(16)), key=lambda item: item[1])
    # cv2.imencode reads its input as B, G, R: encoding the RGB arrays as they are stores the
    # channels swapped, which is what a BGR set such as MS1MV3 holds.
    encoded = [(cv2.imencode(".png", image)[1].tobytes(), label) for image, label in items]
    write_insightface_rec(tmp_path / "rec", encoded, 16, 4)
    dataset = RecordIODataset(tmp_path / "rec", bgr=True)
    assert dataset.num_classes == 4 and np.array_equal(dataset[0][0], items[0][0])
    result = train(tiny_config(tmp_path / "out", "data.format=recordio",
                               f"data.root={tmp_path / 'rec'}", "data.bgr=true",
                               "optim.max_steps=2"))
    assert result.final_step == 2 and all(map(math.isfinite, result.losses))


class NanAtStep(SupervisedTask):
    def __init__(self, cfg, num_classes, bad_step):
        super().__init__(cfg, num_classes)
        self.bad_step = bad_step

    def loss(self, batch, step, micro):
        loss, metrics = super().loss(batch, step, micro)
        return (loss * math.nan if step == self.bad_step else loss), metrics


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = tiny_config(tmp_path, "optim.max_steps=8", "train.checkpoint_every=2")
    with pytest.raises(TrainingDiverged, match=r"the loss became nan at step 6 .*last good "
                                               r"checkpoint: step_00000004"):
        train(cfg, task=NanAtStep(cfg, 8, bad_step=5))
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_00000004"
    state = rank_state(tmp_path)
    assert state["step"] == 4 and read_checkpoint(tmp_path / "model.pt")["step"] == 4
    assert all(torch.isfinite(t).all() for t in weights(tmp_path / "model.pt").values())
    resumed = train(tiny_config(tmp_path, "optim.max_steps=8", "train.checkpoint_every=2"))
    assert (resumed.start_step, resumed.final_step) == (4, 8)  # the kept checkpoint resumes


def test_cli_exits_non_zero_with_one_line_when_training_blows_up(tmp_path, capsys):
    # lr=inf is refused at load now; 1e38 is a valid number whose first step overflows.
    code = main(["train", "supervised", *TINY, f"output_dir={tmp_path}", "optim.lr=1e38",
                 "optim.max_steps=4", "train.checkpoint_every=1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error: training diverged: the loss became nan at step 2")
    assert "last good checkpoint" in err[0]
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_00000001"


def test_a_corrupt_image_in_a_worker_is_a_one_line_error(tmp_path, capsys):
    import cv2

    for person in ("a", "b"):
        (tmp_path / "faces" / person).mkdir(parents=True)
        for shot in range(2):
            image = np.full((112, 112, 3), 40 * shot + (100 if person == "a" else 0), np.uint8)
            cv2.imwrite(str(tmp_path / "faces" / person / f"{shot}.png"), image)
    (tmp_path / "faces" / "b" / "1.png").write_bytes(b"\x89PNG broken")
    before = set(multiprocessing.active_children())
    code = main(["train", "supervised", *TINY, "data.format=folder",
                 f"data.root={tmp_path / 'faces'}", "data.num_workers=1", "optim.batch_size=2",
                 "optim.max_steps=4", f"output_dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    # the worker is gone at once: it ignores SIGTERM, so one left running (its iterator kept by
    # the error's traceback) would hang this process's exit
    assert set(multiprocessing.active_children()) <= before
    assert err[-1] == f"error: not a readable image: {tmp_path / 'faces' / 'b' / '1.png'}"
    assert not any("Traceback" in line for line in err)


def test_supervised_smoke_run_on_real_faces(shared_data, tmp_path):
    """Tiny part fViT on 8 ORL people (80 grey 92x112 crops, letterboxed to 112x112), chosen by
    a list file: the loss falls within 30 steps (3 epochs)."""
    orl = shared_data / "orl"
    lines = [f"s{person}/{shot}.pgm\ts{person}" for person in range(1, 9) for shot in range(1, 11)]
    (tmp_path / "orl8.lst").write_text("\n".join(lines) + "\n")
    out = tmp_path / "orl"
    code = main(["train", "supervised", "--config", "supervised_smoke", f"data.root={orl}",
                 f"data.list_file={tmp_path / 'orl8.lst'}", f"output_dir={out}",
                 "data.num_workers=0", "optim.batch_size=8", "optim.max_steps=30",
                 "optim.lr=1e-3", "augment.crop_prob=0", "augment.randaugment_ops=0",
                 "train.checkpoint_every=15", "train.progress=false", "train.log_every=1"])
    assert code == 0
    losses = [m["loss"] for m in metrics(out)]
    assert len(losses) == 30
    assert np.mean(losses[-8:]) < 0.85 * np.mean(losses[:8]), losses
    assert (out / "config.yaml").is_file() and any((out / "tensorboard").iterdir())
    model = load_model(out / "model.pt")
    assert model.arch == "part_fvit_tiny" and model.embedding_dim == 96  # supervised_smoke's


@pytest.mark.slow
def test_a_process_group_sigterm_still_checkpoints_the_last_step(tmp_path):
    """SIGTERM to the whole process group (a terminal, systemd, `kill -- -PGID`) kills the data
    loader's workers too: the run still writes a checkpoint of its last finished step."""
    import signal
    import time

    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "lafs_edge.cli", "train", "supervised", *TINY,
           "data.num_workers=1", "data.synthetic_size=4000", "optim.max_steps=100000",
           "train.checkpoint_every=100000", "train.log_every=1", f"output_dir={out}"]
    job = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           start_new_session=True)
    try:
        deadline = time.time() + 240
        while not ((out / "metrics.jsonl").is_file() and len(metrics(out)) >= 3):
            assert job.poll() is None and time.time() < deadline, job.stdout.read().decode()[-2000:]
            time.sleep(0.5)
        os.killpg(job.pid, signal.SIGTERM)
        job.wait(timeout=120)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    latest = (out / "checkpoints" / "latest").read_text().strip()
    last = metrics(out)[-1]["step"]
    assert latest == f"step_{last:08d}"
    assert (out / "checkpoints" / latest / "rank00000.pt").is_file()
