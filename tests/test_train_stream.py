"""Training from WebDataset shards (data.format=webdataset): the engine's streaming path
(`engine.ShardStream`): equal batch counts per rank, disjoint shards, seeded epoch order, exact
resume with and without DataLoader workers, and one-line errors."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from lafs_edge.cli import main
from lafs_edge.errors import UserError
from lafs_edge.models import read_checkpoint
from lafs_edge.train.config import load_config
from lafs_edge.train.data.webdataset import ShardSource, write_shards
from lafs_edge.train.engine import SeededDataset, ShardStream
from lafs_edge.train.sources import build_source
from lafs_edge.train.supervised import SyntheticFaces, train

pytestmark = pytest.mark.training

# The registry's test preset, as in tests/test_train_loop.py: seconds per run on a CPU.
TINY = ["model.arch=part_fvit_tiny", "model.overrides={preset: test}", "optim.batch_size=4",
        "optim.warmup_epochs=0.5", "train.progress=false", "head.scale=32.0", "head.margin=0.2"]


def pack_ids(root: Path, sizes: list[int]) -> Path:
    """Shards of tiny lossless images whose pixels hold the sample's id (shard i: `sizes[i]`
    samples); label = id % 4."""
    items, n = [], 0
    for size in sizes:
        for _ in range(size):
            png = cv2.imencode(".png", np.full((4, 4, 3), n, np.uint8))[1].tobytes()
            items.append((f"{n:05d}", png, "png", n % 4))
            n += 1
    # write_shards cuts every shard_size samples: write uneven shards one call at a time
    start = 0
    for i, size in enumerate(sizes):
        write_shards(root / f"part{i}", items[start:start + size], shard_size=size)
        (root / f"part{i}" / "shard-000000.tar").rename(root / f"shard-{i:06d}.tar")
        start += size
    (root / "meta.json").write_text(f'{{"samples": {n}, "classes": 4}}')
    return root


def ids(item, rng):
    """Transform: (sample id, a draw of its rng)."""
    image, _ = item
    return int(image[0, 0, 0]), int(rng.integers(1 << 30))


def rank_batches(root: Path, world: int, rank: int, workers: int = 0, epoch: int = 0,
                 start_step: int = 0, seed: int = 0, batch: int = 2, accumulate: int = 1,
                 buffer: int = 4) -> list[list[tuple[int, int]]]:
    """This rank's micro-batches of one epoch, as the Trainer's DataLoader delivers them."""
    data = SeededDataset(ShardSource(root), ids, seed)
    stream = ShardStream(data, batch, accumulate, world, rank, workers, buffer)
    stream.set_epoch(epoch, start_step)
    loader = DataLoader(stream, batch_size=None, num_workers=workers)
    return [list(zip(b[0].tolist(), b[1].tolist())) for b in loader]


def shard_of(sample: int, sizes: list[int]) -> int:
    return int(np.searchsorted(np.cumsum(sizes), sample, side="right"))


# --- the stream ----------------------------------------------------------------------------------

def test_every_rank_yields_the_same_batches_from_its_own_shards(tmp_path):
    """Uneven shards (7, 3, 5, 2, 6, 4, 5, 4 = 36 samples), 2 ranks x 2 workers, 2 micro-batches
    of 2 per step: 36 // 8 = 4 steps, 8 micro-batches on each rank (a rank with short shards
    cycles them); each lane reads its own shards."""
    sizes = [7, 3, 5, 2, 6, 4, 5, 4]
    root = pack_ids(tmp_path, sizes)
    per_rank = [rank_batches(root, 2, r, workers=2, accumulate=2) for r in range(2)]
    assert [len(b) for b in per_rank] == [8, 8]
    assert all(len(batch) == 2 for batches in per_rank for batch in batches)
    shards = [{shard_of(i, sizes) for batch in batches for i, _ in batch} for batches in per_rank]
    assert shards[0] and shards[1] and not shards[0] & shards[1]
    for batches in per_rank:  # micro-batch i from lane i % 2: the two lanes' shards differ too
        lanes = [{shard_of(i, sizes) for batch in batches[lane::2] for i, _ in batch}
                 for lane in range(2)]
        assert not lanes[0] & lanes[1]


def test_epoch_order_is_seeded_and_changes_with_the_epoch(tmp_path):
    root = pack_ids(tmp_path, [6] * 4)
    first = rank_batches(root, 1, 0, workers=2, epoch=0)
    assert rank_batches(root, 1, 0, workers=2, epoch=0) == first  # reproducible
    assert rank_batches(root, 1, 0, workers=2, epoch=1) != first
    assert rank_batches(root, 1, 0, workers=2, epoch=0, seed=1) != first
    assert len(first) == 24 // 2
    seen = [i for batch in first for i, _ in batch]
    assert sorted(seen) == list(range(24))  # one pass over even shards: every sample once
    assert seen != sorted(seen)  # the shuffle buffer mixed them


@pytest.mark.parametrize("workers", [0, 2])
def test_a_stream_started_mid_epoch_continues_the_full_one(tmp_path, workers):
    """Starting at step 3 (an odd number of micro-batches: with 2 workers, each DataLoader
    worker plays the other lane) gives the tail of the epoch, augmentation draws included."""
    root = pack_ids(tmp_path, [5, 7, 6, 6])
    full = rank_batches(root, 2, 1, workers=workers, epoch=2)
    assert len(full) == 24 // 4
    assert rank_batches(root, 2, 1, workers=workers, epoch=2, start_step=3) == full[3:]


def test_skipped_samples_are_not_decoded(tmp_path, monkeypatch):
    """Resuming at step 5 of 8 reads the first 5 micro-batches' samples but decodes none."""
    root = pack_ids(tmp_path, [8, 8])
    decoded = []
    original = ShardSource.decode
    monkeypatch.setattr(ShardSource, "decode",
                        lambda self, sample: decoded.append(1) or original(self, sample))
    rank_batches(root, 1, 0, start_step=5)
    assert len(decoded) == (8 - 5) * 2


def test_too_few_shards_for_ranks_times_workers(tmp_path):
    root = pack_ids(tmp_path, [4, 4, 4])
    with pytest.raises(UserError, match="3 shards cannot feed 2 ranks x 2 DataLoader workers"):
        rank_batches(root, 2, 0, workers=2)


# --- stages --------------------------------------------------------------------------------------

def face_items(n: int = 16, classes: int = 4):
    """Synthetic 112x112 faces as (key, JPEG, "jpg", label) shard items."""
    faces = SyntheticFaces(n, classes)
    for i in range(n):
        image, label = faces[i]
        yield f"{i:05d}", cv2.imencode(".jpg", image[:, :, ::-1])[1].tobytes(), "jpg", label


@pytest.fixture(scope="module")
def faces_wds(tmp_path_factory) -> Path:
    """16 synthetic faces of 4 identities in 4 shards."""
    root = tmp_path_factory.mktemp("wds")
    write_shards(root, face_items(), shard_size=4)
    return root


def wds_config(out: Path, root: Path, *extra: str, stage: str = "supervised",
               tiny: list[str] = TINY) -> dict:
    return load_config(stage, [], [*tiny, "data.format=webdataset", f"data.root={root}",
                                   "data.shuffle_buffer=6", "data.num_workers=0",
                                   f"output_dir={out}", *extra])


def rank_state(out: Path) -> dict:
    latest = (out / "checkpoints" / "latest").read_text().strip()
    return torch.load(out / "checkpoints" / latest / "rank00000.pt", weights_only=True)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["state_dict"]


def test_supervised_trains_from_shards(faces_wds, tmp_path):
    result = train(wds_config(tmp_path, faces_wds, "optim.max_steps=3"))
    assert result.final_step == 3 and all(map(math.isfinite, result.losses))
    assert rank_state(tmp_path)["sampler"] == {"epoch": 0, "step_in_epoch": 3, "lanes": 1}


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_equals_one_straight_run(faces_wds, tmp_path, workers):
    """10 steps straight == 5 steps, stop, resume, 5 steps (bitwise): 8 steps of 2 images per
    epoch, so the resumed half starts mid-epoch (5 micro-batches skipped: the lanes swap) and
    crosses into the next epoch. Resuming with another worker count is refused."""
    extra = ["optim.max_steps=10", "optim.batch_size=2", "train.checkpoint_every=100",
             f"data.num_workers={workers}", "model.overrides.landmark_dropout=0.5",
             "augment.mixup_prob=0.5"]
    straight = train(wds_config(tmp_path / "straight", faces_wds, *extra))
    first = train(wds_config(tmp_path / "resumed", faces_wds, *extra, "train.stop_after=5"))
    assert first.final_step == 5
    if workers:
        with pytest.raises(UserError, match="data.num_workers=2; resume with that"):
            train(wds_config(tmp_path / "resumed", faces_wds, *extra, "data.num_workers=0"))
    second = train(wds_config(tmp_path / "resumed", faces_wds, *extra))
    assert (second.start_step, second.final_step) == (5, 10)
    assert first.losses + second.losses == straight.losses
    a, b = weights(tmp_path / "straight" / "model.pt"), weights(tmp_path / "resumed" / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_unlabelled_source_items_and_a_pretrain_run(faces_wds, tmp_path):
    from lafs_edge.train.lafs import train as pretrain

    source = build_source({"format": "webdataset", "root": str(faces_wds), "bgr": False}, 0)
    assert len(source) == 16 and source.num_classes == 0
    image, points, label = source.decode(next(iter(source.read(source.shards))))
    assert image.shape == (112, 112, 3) and points is None and label == -1
    labelled = build_source({"format": "webdataset", "root": str(faces_wds), "bgr": False}, 0,
                            labelled=True)
    assert labelled.num_classes == 4
    assert labelled.decode(next(iter(labelled.read(labelled.shards))))[2] == 0
    tiny = ["model.arch=part_fvit_tiny", "model.overrides={preset: test}",
            "landmarks.allow_random=true", "dino.out_dim=64", "dino.hidden_dim=32",
            "dino.bottleneck_dim=16", "views.local_views=2", "views.local_landmarks=6",
            "optim.batch_size=4", "optim.scale_lr=false", "train.progress=false"]
    result = pretrain(wds_config(tmp_path, faces_wds, "optim.max_steps=2", stage="pretrain",
                                 tiny=tiny))
    assert result.final_step == 2 and all(map(math.isfinite, result.losses))


@pytest.mark.parametrize("root, message", [
    ("missing", "error: no .tar shards at {tmp}/missing"),
    ("no_meta", "error: {tmp}/no_meta: no meta.json with the sample count beside the shards"),
    ("one_shard", "error: 1 shards cannot feed 1 ranks x 2 DataLoader workers"),
])
def test_bad_shard_folders_are_one_line_errors(tmp_path, capsys, root, message):
    if root == "no_meta":
        pack_ids(tmp_path / root, [2])
        (tmp_path / root / "meta.json").unlink()
    elif root == "one_shard":
        pack_ids(tmp_path / root, [8])
    code = main(["train", "supervised", *TINY, "data.format=webdataset", "data.num_workers=2",
                 f"data.root={tmp_path / root}", f"output_dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith(message.format(tmp=tmp_path))


def test_two_ranks_stay_in_step_on_uneven_shards(tmp_path):
    """torchrun, 2 CPU ranks on shards of 5, 5, 5 and 1 faces: 16 // (2 x 2) = 4 steps per
    epoch on both ranks (the rank holding the short shard cycles it), 6 steps across an epoch
    boundary without a hang."""
    write_shards(tmp_path / "wds", face_items(), shard_size=5)
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "lafs_edge.cli", "train", "supervised", *TINY, "optim.batch_size=2",
           "data.format=webdataset", f"data.root={tmp_path / 'wds'}", "data.num_workers=1",
           "optim.max_steps=6", f"output_dir={tmp_path / 'out'}"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    folder = tmp_path / "out" / "checkpoints" / "step_00000006"
    states = [torch.load(folder / f"rank{r:05d}.pt", weights_only=True) for r in range(2)]
    assert all(s["sampler"] == {"epoch": 1, "step_in_epoch": 2, "lanes": 1} for s in states)
