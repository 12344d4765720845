"""WebDataset tar shards: streaming reads for sets too large for random access.

Shard layout (written by `write_shards`): `shard-000000.tar`, ... each holding samples
`KEY.jpg` (or `.png`, the encoded RGB image) and `KEY.cls` (the integer label as ASCII text),
plus `meta.json` = {"samples", "classes", "shards", "format"} beside them.

Reading splits shards first across distributed ranks (rank r takes shards r, r+W, ...), then
across DataLoader workers (webdataset's `split_by_worker`); every sample is read once per epoch
overall. Ranks can get different sample counts when shards are uneven, so a DDP loop should
stop on a fixed step count, not on the end of the stream.

For training, `ShardSource` is the shard folder as a stage's data source: the engine streams it
(`lafs_edge.train.engine.ShardStream`: equal micro-batch counts on every rank, exact resume).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from torch.utils.data import IterableDataset

from lafs_edge.errors import UserError
from lafs_edge.train.data.recordio import decode_image

META = "meta.json"
IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")


def list_shards(path: str | os.PathLike) -> list[str]:
    """The .tar shards of a folder (sorted), or a single .tar file."""
    path = Path(path)
    if path.is_file() and path.suffix == ".tar":
        return [str(path)]
    shards = sorted(str(p) for p in path.glob("*.tar")) if path.is_dir() else []
    if not shards:
        raise UserError(f"no .tar shards at {path}")
    return shards


def read_meta(path: str | os.PathLike) -> dict:
    meta = Path(path) / META
    return json.loads(meta.read_text()) if meta.is_file() else {}


def distributed_position() -> tuple[int, int]:
    """(rank, world size) of this process: torch.distributed if initialised, else RANK/WORLD_SIZE."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def split_for_rank(shards: list[str], rank: int, world_size: int) -> list[str]:
    if len(shards) < world_size:
        raise UserError(f"{len(shards)} shards cannot feed {world_size} ranks; "
                        "write at least one shard per rank (data pack --shard-size)")
    return shards[rank::world_size]


class WebDatasetShards(IterableDataset):
    """Streams (image RGB uint8 (H, W, 3) or transform(image), int label) from tar shards.

    `shuffle` > 0 shuffles shard order each epoch (seeded by `seed` + `set_epoch`) and samples
    within a buffer of that many. `rank`/`world_size` default to `distributed_position()`.
    """

    def __init__(self, path: str | os.PathLike, transform=None, shuffle: int = 0, seed: int = 0,
                 rank: int | None = None, world_size: int | None = None, bgr: bool = False):
        self.shards = list_shards(path)
        self.meta = read_meta(path) if Path(path).is_dir() else {}
        self.transform = transform
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.bgr = bgr
        default_rank, default_world = distributed_position()
        self.rank = default_rank if rank is None else rank
        self.world_size = default_world if world_size is None else world_size
        self.rank_shards = split_for_rank(self.shards, self.rank, self.world_size)

    @property
    def num_classes(self) -> int | None:
        return self.meta.get("classes")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _pipeline(self):
        import webdataset as wds

        seed = self.seed + self.epoch
        return wds.WebDataset(
            self.rank_shards, shardshuffle=(len(self.rank_shards) if self.shuffle else False),
            seed=seed, nodesplitter=None, workersplitter=wds.split_by_worker, empty_check=False)

    def __iter__(self) -> Iterator:
        from torch.utils.data import get_worker_info

        stream = self._pipeline()
        if self.shuffle:
            worker = get_worker_info()
            salt = (self.rank * 1000 + (worker.id if worker else 0)) * 100003
            stream = stream.shuffle(self.shuffle, seed=self.seed + self.epoch + salt)
        for sample in stream:
            yield self._decode(sample)

    def _decode(self, sample: dict):
        image, label = decode_sample(sample, self.bgr)
        return (self.transform(image) if self.transform else image), label


def decode_sample(sample: dict, bgr: bool = False, labelled: bool = True) -> tuple[Any, int]:
    """A raw shard sample (encoded bytes by extension) -> (RGB uint8 image, label); the label is
    -1 when not `labelled`."""
    key = next((k for k in IMAGE_KEYS if k in sample), None)
    if key is None or (labelled and "cls" not in sample):
        raise UserError(f"shard sample {sample.get('__key__')} in {sample.get('__url__')} "
                        "lacks an image or a .cls label")
    image = decode_image(sample[key], bgr)
    if not labelled:
        return image, -1
    return image, int(sample["cls"].decode() if isinstance(sample["cls"], bytes) else sample["cls"])


class ShardSource:
    """A shard folder as a training source: `len` is the sample count of meta.json (the engine
    plans its epochs with it), `read(shards)` yields raw samples (bytes, nothing decoded) and
    `decode(sample)` makes one item, `item(image, label)` ((image, label) by default).

    A stage wraps it in `SeededDataset` like any dataset; the Trainer sees the shard source
    inside and streams it instead of sampling indices (`engine.ShardStream`).
    """

    def __init__(self, root: str | os.PathLike | None, bgr: bool = False, labelled: bool = True,
                 item: Callable[[Any, int], Any] | None = None):
        if not root:
            raise UserError("data.root is required for format=webdataset (the folder of .tar "
                            "shards from `lafs-edge data pack --format webdataset`)")
        self.shards = list_shards(root)
        meta = read_meta(root) if Path(root).is_dir() else {}
        if not meta.get("samples"):
            raise UserError(f"{root}: no {META} with the sample count beside the shards (write "
                            "them with `lafs-edge data pack --format webdataset`)")
        self.samples = int(meta["samples"])
        self.num_classes = int(meta.get("classes") or 0) if labelled else 0
        self.bgr, self.labelled, self.item = bgr, labelled, item

    def __len__(self) -> int:
        return self.samples

    def __getitem__(self, index: int):
        raise UserError("data.format=webdataset is streamed by the training engine and has no "
                        "random access; use format folder or recordio for this")

    def read(self, shards: list[str]) -> Iterator[dict]:
        """The raw samples of `shards`, in order."""
        from webdataset.tariterators import tarfile_samples

        return tarfile_samples([{"url": shard} for shard in shards])

    def decode(self, sample: dict):
        image, label = decode_sample(sample, self.bgr, self.labelled)
        return self.item(image, label) if self.item else (image, label)


def write_shards(out_dir: str | os.PathLike, items: Iterable[tuple[str, bytes, str, int]],
                 shard_size: int = 10000, num_classes: int | None = None) -> dict:
    """Write (key, encoded image, extension, label) items to `out_dir/shard-NNNNNN.tar`.

    Shards are written in a temporary folder and moved in at the end, so a failed run leaves
    the output folder as it was.
    """
    import webdataset as wds

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if list(out_dir.glob("shard-*.tar")):
        raise UserError(f"{out_dir} already holds shards; choose an empty folder")
    tmp = out_dir / f".tmp-shards-{os.getpid()}"
    tmp.mkdir()
    count, labels = 0, set()
    try:
        with wds.ShardWriter(str(tmp / "shard-%06d.tar"), maxcount=shard_size, verbose=0) as sink:
            for key, data, ext, label in items:
                sink.write({"__key__": key, ext: data, "cls": str(int(label)).encode()})
                count += 1
                labels.add(int(label))
        shards = sorted(p.name for p in tmp.glob("shard-*.tar"))
        meta = {"format": "lafs-edge webdataset v1", "samples": count,
                "classes": num_classes if num_classes is not None else len(labels), "shards": shards}
        (tmp / META).write_text(json.dumps(meta, indent=1) + "\n")
        for name in shards + [META]:
            os.replace(tmp / name, out_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta
