"""`lafs-edge data pack SRC --format recordio|webdataset --out DIR`: a labelled image folder (or a
list file over it) -> InsightFace RecordIO (train.rec/.idx/property) or WebDataset tar shards."""
from __future__ import annotations

import argparse

from lafs_edge.errors import UserError
from lafs_edge.commands.gallery_common import number


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="labelled folder: one sub-folder per identity, or flat "
                                    "IDENTITY.condition files (Yale)")
    parser.add_argument("--format", required=True, choices=["recordio", "webdataset"])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--list", help="list file (e.g. from `data kshot`) selecting the images")
    parser.add_argument("--to-112", action="store_true",
                        help="letterbox each image to 112x112 (for landmark-less tight crops)")
    parser.add_argument("--encoding", choices=["jpg", "png"], default="jpg",
                        help="image encoding inside the records (png is lossless)")
    parser.add_argument("--quality", type=number(0, 100, integer=True), default=95, help="JPEG quality")
    parser.add_argument("--shard-size", type=number(1, 1e9, integer=True), default=10000, help="samples per tar shard")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    if not 1 <= args.quality <= 100:
        raise UserError(f"--quality must be 1..100, got {args.quality}")
    if args.shard_size < 1:
        raise UserError(f"--shard-size must be positive, got {args.shard_size}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} already exists and is a file; give a folder (created if missing)")
    if args.format == "recordio" and (out / "train.rec").exists():
        raise UserError(f"{out / 'train.rec'} exists; choose another --out")
    created = not out.exists()
    try:
        return _pack(args, out)
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()   # ours and empty: a failed run leaves nothing behind
        raise


def _pack(args: argparse.Namespace, out) -> int:
    from lafs_edge.image_folders import to_112
    from lafs_edge.train.data.folders import LabelledFolder
    from lafs_edge.train.data.recordio import write_insightface_rec
    from lafs_edge.train.data.webdataset import write_shards

    dataset = LabelledFolder(args.src, transform=to_112 if args.to_112 else None,
                             list_file=args.list)
    order = sorted(range(len(dataset)), key=lambda i: (dataset.samples[i][1], str(dataset.samples[i][0])))
    first_shape = dataset[order[0]][0].shape

    def encoded():
        for i in order:
            image, label = dataset[i]
            yield encode_image(image, args.encoding, args.quality), label, i

    if args.format == "recordio":
        info = write_insightface_rec(out, ((data, label) for data, label, _ in encoded()),
                                     len(order), dataset.num_classes, image_size=first_shape[:2])
    else:
        keys = _sample_keys(dataset)
        info = write_shards(out, ((keys[i], data, args.encoding, label)
                                  for data, label, i in encoded()),
                            shard_size=args.shard_size, num_classes=dataset.num_classes)
        info = {"images": info["samples"], "identities": info["classes"],
                "shards": len(info["shards"])}
    details = ", ".join(f"{k} {v}" for k, v in info.items())
    print(f"packed {details} ({args.format}, {args.encoding}) into {out}")
    return 0


def encode_image(rgb, encoding: str, quality: int) -> bytes:
    import cv2

    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if encoding == "jpg" else []
    ok, buf = cv2.imencode(f".{encoding}", rgb[:, :, ::-1], params)
    if not ok:
        raise UserError(f"could not encode an image as {encoding}")
    return buf.tobytes()


def _sample_keys(dataset) -> list[str]:
    """Tar member stems: the relative path without dots or slashes (webdataset splits on dots)."""
    keys = []
    for path, _ in dataset.samples:
        rel = path.relative_to(dataset.root).as_posix() if path.is_relative_to(dataset.root) else path.name
        keys.append(rel.replace(".", "_").replace("/", "__"))
    return keys
