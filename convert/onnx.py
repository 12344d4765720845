"""ONNX through torch.onnx (the dynamo exporter), with a dynamic batch dimension. BatchNorm is
folded into the convolutions before export (lossless in eval mode), so the graph has the
Conv-activation chain of a deployed MobileFaceNet rather than Conv-BatchNormalization pairs
that each runtime must fold again (or, in some, runs as separate ops)."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import torch

from lafs_edge.convert.export import Converted, ExportModel, fuse_batchnorm
from lafs_edge.models import FaceModel

OPSET = 18


def export(model: FaceModel, folder: Path, precision: str, calib: np.ndarray | None,
           float_groups: list[str]) -> Converted:
    wrapped = ExportModel(fuse_batchnorm(model), "NCHW")
    path = folder / "model.onnx"
    export_onnx(wrapped, path)
    size = model.image_size
    return Converted("model.onnx", [-1, 3, size, size], details={"opset": OPSET})


def export_onnx(wrapped: ExportModel, path: Path) -> None:
    batch = torch.export.Dim("batch", min=1, max=1024)
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints progress lines
        torch.onnx.export(wrapped, (wrapped.example(2),), str(path), input_names=["images"],
                          output_names=["embedding"], dynamic_shapes={"images": {0: batch}},
                          dynamo=True, opset_version=OPSET, external_data=False)
