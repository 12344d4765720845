"""`lafs-edge eval --model MODEL --data PATH --protocol pairs|bin|ijb|kshot`.

MODEL: a checkpoint or a model name with shipped weights (PyTorch), or an exported artifact folder
(its own runtime, preprocessing and alignment template: what a device would score).

pairs: a labelled folder (ORL, Yale, ...): all genuine pairs and as many impostor pairs (seeded),
       10-fold accuracy, ROC AUC, TAR at FAR.
bin:   an InsightFace .bin pair set (LFW, CFP-FP, AgeDB-30).
ijb:   an IJB-B / IJB-C root (meta/ + loose_crop/): 1:1 template verification.
kshot: a labelled folder: enroll k per identity, rank-1/5 on the rest, open-set DIR at FAR with
       a fraction of identities held out as unknown.
Images that are not already model-sized (ORL 92x112, Yale 320x243) are letterboxed
(`lafs_edge.image_folders.to_112`): these sets have no landmarks to align with.
"""
from __future__ import annotations

import argparse
import json

from lafs_edge.commands.model_option import HELP
from lafs_edge.errors import UserError
from lafs_edge.commands.gallery_common import number

PROTOCOLS = ("pairs", "bin", "ijb", "kshot")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help=HELP)
    parser.add_argument("--data", required=True, help="labelled folder, .bin file or IJB root")
    parser.add_argument("--protocol", required=True, choices=PROTOCOLS)
    parser.add_argument("--list", help="list file selecting images of a labelled folder")
    parser.add_argument("--seed", type=int, default=0, help="seed for pairs / k-shot splits")
    parser.add_argument("--far", type=float, nargs="+", help="false-accept rates to report")
    parser.add_argument("--folds", type=number(2, 1000, integer=True), default=10, help="folds for pair accuracy")
    parser.add_argument("--max-genuine", type=number(1, 1e12, integer=True), help="cap on genuine pairs (pairs protocol)")
    parser.add_argument("--k", type=number(1, 1e6, integer=True), default=1, help="images enrolled per identity (kshot)")
    parser.add_argument("--unknown-fraction", type=float, default=0.25,
                        help="share of identities held out as unknown (kshot open set)")
    parser.add_argument("--flip", action="store_true", help="add the mirrored crop's embedding")
    parser.add_argument("--no-norm-score", action="store_true",
                        help="ijb: L2-normalise image features before pooling")
    parser.add_argument("--no-detector-score", action="store_true",
                        help="ijb: do not weight image features by the detector score")
    parser.add_argument("--batch-size", type=number(1, 65536, integer=True), default=64)
    parser.add_argument("--out", help="write the full report as JSON here")


def run(args: argparse.Namespace) -> int:
    from lafs_edge.commands.model_option import resolve_model

    if args.batch_size < 1:
        raise UserError(f"--batch-size must be positive, got {args.batch_size}")
    if args.folds < 2:
        raise UserError(f"--folds must be at least 2, got {args.folds}")
    if args.far and not all(0 < far <= 1 for far in args.far):
        raise UserError(f"--far values must be in (0, 1], got {args.far}")
    model = resolve_model(args.model).load()
    evaluate = {"pairs": _pairs, "bin": _bin, "ijb": _ijb, "kshot": _kshot}[args.protocol]
    report = {"model": str(args.model), "data": str(args.data), "protocol": args.protocol,
              **evaluate(model, args)}
    _print(report)
    if args.out:
        from lafs_edge.fileio import write_text_atomic

        write_text_atomic(args.out, json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


def _labelled(model, args):
    from lafs_edge.image_folders import to_112
    from lafs_edge.train.data.folders import LabelledFolder

    size = _input_side(model)

    def prepare(image):
        return image if image.shape[:2] == (size, size) else to_112(image, size)

    return LabelledFolder(args.data, transform=prepare, list_file=args.list)


def _input_side(model) -> int:
    """The square crop side the model takes (pairs and kshot letterbox to a square; .bin faces
    are square)."""
    from lafs_edge.runtime.embedder import Embedder

    if not isinstance(model, Embedder):
        return model.image_size
    width, height = model.crop_size
    if width != height:
        raise UserError(f"{model.name} takes {width}x{height} crops; eval needs a square input")
    return width


def _embed(model, images, args, normalize=True):
    from lafs_edge.runtime.embedder import Embedder, check_finite_embeddings
    from lafs_edge.train.evaluate.embedding import embed_images

    if isinstance(model, Embedder):
        rows = _embed_artifact(model, images, args.batch_size, args.flip, normalize)
    else:
        rows = embed_images(model, images, args.batch_size, flip=args.flip, normalize=normalize)
    return check_finite_embeddings(rows, str(args.model))


def _embed_artifact(embedder, images, batch_size: int, flip: bool, normalize: bool):
    """`embed_images` through an artifact's runtime: the mirrored crop's features added before
    any normalisation, as in PyTorch."""
    import itertools

    import numpy as np

    rows, images = [], iter(images)
    while batch := list(itertools.islice(images, batch_size)):
        crops = np.stack(batch)
        features = embedder.features(crops)
        rows.append(features + embedder.features(crops[:, :, ::-1]) if flip else features)
    out = np.concatenate(rows) if rows else np.zeros((0, embedder.embedding_dim), np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True) if normalize else out


def _pairs(model, args) -> dict:
    import numpy as np

    from lafs_edge.verification import DEFAULT_FARS, make_pairs, pair_scores, verification_report

    dataset = _labelled(model, args)
    labels = np.array(dataset.targets)
    first, second, issame = make_pairs(labels, args.seed, args.max_genuine)
    embeddings = _embed(model, (image for image, _ in dataset), args)
    report = verification_report(pair_scores(embeddings, first, second), issame,
                                 args.far or DEFAULT_FARS, args.folds)
    return {"images": len(dataset), "identities": dataset.num_classes, "seed": args.seed, **report}


def _bin(model, args) -> dict:
    import numpy as np

    from lafs_edge.train.data.recordio import decode_image
    from lafs_edge.train.evaluate.verification import load_bin
    from lafs_edge.verification import DEFAULT_FARS, pair_scores, verification_report

    images, issame = load_bin(args.data)
    size = _input_side(model)
    faces = (decode_image(data) for data in images)
    checked = (face if face.shape[:2] == (size, size) else _wrong_size(face, size) for face in faces)
    embeddings = _embed(model, checked, args)
    index = np.arange(issame.size)
    return verification_report(pair_scores(embeddings, 2 * index, 2 * index + 1), issame,
                               args.far or DEFAULT_FARS, args.folds)


def _wrong_size(face, size):
    raise UserError(f".bin holds {face.shape[1]}x{face.shape[0]} faces; the model takes {size}x{size}")


def _ijb(model, args) -> dict:
    from lafs_edge.train.evaluate.ijb import IJB_FARS, evaluate_ijb, read_meta

    meta = read_meta(args.data)
    raw = _embed(model, _ijb_faces(model, args.data, meta), args, normalize=False)
    return evaluate_ijb(raw, meta, norm_score=not args.no_norm_score,
                        detector_score=not args.no_detector_score, fars=args.far or IJB_FARS)


def _ijb_faces(model, root, meta):
    """IJB faces aligned for `model`: an artifact with its manifest's template, else ArcFace's."""
    from pathlib import Path

    from lafs_edge.image import read_image
    from lafs_edge.runtime.embedder import Embedder
    from lafs_edge.train.evaluate.ijb import aligned_faces

    if not isinstance(model, Embedder):
        return aligned_faces(root, meta, model.image_size)
    crops = Path(root) / "loose_crop"
    return (model.align(read_image(crops / name), [points])[0]
            for name, points in zip(meta.names, meta.landmarks))


def _kshot(model, args) -> dict:
    import numpy as np

    from lafs_edge.train.evaluate.kshot import identification_report, kshot_split

    dataset = _labelled(model, args)
    labels = np.array(dataset.targets)
    split = kshot_split(labels, args.k, args.unknown_fraction, args.seed)
    embeddings = _embed(model, (image for image, _ in dataset), args)
    report = identification_report(embeddings, labels, split, fars=args.far or (1e-2, 1e-1))
    return {"images": len(dataset), "identities": dataset.num_classes, "k": args.k,
            "unknown_fraction": args.unknown_fraction, "seed": args.seed, **report}


def _print(report: dict) -> None:
    print(f"{report['protocol']} on {report['data']} with {report['model']}")
    for key, value in report.items():
        if key in ("protocol", "data", "model", "fold_accuracies"):
            continue
        if isinstance(value, dict):  # tar_at_far / dir_at_far
            for far, entry in value.items():
                rate = entry.get("tar", entry.get("dir"))
                note = "" if entry["resolvable"] else "  (too few impostors to resolve this FAR)"
                print(f"  {key.split('_')[0].upper()} @ FAR {far}: {rate:.4f}{note}")
        elif isinstance(value, float):
            print(f"  {key}: {value:.4f}")
        else:
            print(f"  {key}: {value}")

