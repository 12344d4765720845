"""The export pipeline behind `lafs-edge export`: load the source once, calibrate once, measure
int8 sensitivity once, then build every requested artifact (temp folder -> rename) with its
manifest: hashes, threshold at FAR 1e-3 and parity on labelled faces."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lafs_edge.convert.data import FaceSet, load_faces
from lafs_edge.convert.export import Converted, build_artifact, check_replaceable, load_source
from lafs_edge.convert.manifest import make_manifest, threshold_at_far
from lafs_edge.convert.verify import require_labels, torch_embeddings, verify_artifact
from lafs_edge.errors import UserError
from lafs_edge.runtime.manifest import Manifest, write_manifest


def export_models(model_arg: str, targets: list[str], precision: str, out: str | Path,
                  calib: str | None = None, calib_count: int = 128, pairs: str | None = None,
                  pairs_count: int | None = None,
                  name: str | None = None, sampler: str | None = None,
                  overrides: dict[str, Any] | None = None,
                  random_init: bool = False) -> list[tuple[Path, Manifest]]:
    if name:   # refuse a clash before minutes of loading and converting
        for target in targets:
            check_replaceable(Path(out) / f"{name}-{target}-{precision}")
    model, source, checkpoint = load_source(model_arg, overrides, random_init=random_init)
    if sampler and not hasattr(model, "sampler"):
        raise UserError(f"--sampler applies to part fViT models, not {model.arch}")
    if hasattr(model, "sampler"):
        # Deploy the gather form unless asked otherwise, whatever the model trained with
        # (training may use grid_sample for speed: the two agree within 1e-5).
        setattr(model, "sampler", sampler or "gather")
    calib_faces = load_faces(calib, limit=calib_count) if calib else None
    pair_faces = _pair_faces(pairs, pairs_count, calib_faces)
    calib_input = calib_faces.model_input() if calib_faces is not None else None
    extra: dict[str, Any] = {"source": source}
    if getattr(model, "sampler", None):
        extra["sampler"] = model.sampler
    float_groups: list[str] = []
    if precision == "int8":
        from lafs_edge.convert.quantize import choose_float_groups

        if calib_input is None:
            raise UserError("int8 needs calibration faces: pass --calib DIR")
        sensitivity = choose_float_groups(model, calib_input)
        float_groups = sensitivity.float_groups
        extra["int8_sensitivity"] = sensitivity.to_dict()
    reference = torch_embeddings(model, pair_faces) if pair_faces is not None else None
    # Shipped weights carry the threshold measured for them (their model card); only faces the
    # user names with --pairs replace it (a calibration set is rarely a fair threshold set).
    from lafs_edge.models import checkpoint_threshold

    recommended = None if pairs or checkpoint is None else checkpoint_threshold(checkpoint)
    name = name or model.arch
    results = []
    for target in targets:
        def finish(tmp: Path, converted: Converted, target=target) -> None:
            manifest = make_manifest(name, target, precision, tmp, converted, model.embedding_dim,
                                     checkpoint, extra)
            write_manifest(manifest, tmp)
            if pair_faces is not None and reference is not None:
                _add_threshold_and_parity(manifest, tmp, model, pair_faces, reference,
                                          str(pairs or calib))
            if recommended is not None:
                manifest.threshold = recommended
                manifest.parity["threshold_from"] = "checkpoint (measured for these weights)"
            write_manifest(manifest, tmp)

        folder = Path(out) / f"{name}-{target}-{precision}"
        build_artifact(model, target, precision, folder, calib_input, float_groups, finish)
        from lafs_edge.runtime.manifest import read_manifest

        results.append((folder, read_manifest(folder)[0]))
    return results


def _pair_faces(pairs: str | None, count: int | None, calib_faces: FaceSet | None) -> FaceSet | None:
    if pairs:
        faces = load_faces(pairs, limit=count)
        require_labels(faces, "--pairs")
        return faces
    if calib_faces is not None and calib_faces.labels is not None:
        return calib_faces
    return None


def _add_threshold_and_parity(manifest: Manifest, folder: Path, model, faces: FaceSet,
                              reference: np.ndarray, data: str) -> None:
    report, embeddings = verify_artifact(folder, manifest, model, faces, reference)
    source = "runtime"
    if embeddings is None:  # Core ML off macOS: the PyTorch embeddings stand in
        embeddings, source = reference, "pytorch"
    assert faces.labels is not None   # require_labels / _pair_faces: labelled faces only
    manifest.threshold = threshold_at_far(embeddings, faces.labels)
    report.update({"data": data, "threshold_from": source})
    manifest.parity.update(report)
