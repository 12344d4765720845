"""OpenVINO IR through `openvino.convert_model`; fp16 = weights compressed to fp16 at save;
int8 = NNCF post-training quantization on real aligned faces, with the groups that
`quantize.choose_float_groups` found sensitive left in float (NNCF ignored scope)."""
from __future__ import annotations

import contextlib
import io
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from lafs_edge.convert.export import Converted, ExportModel, fuse_batchnorm
from lafs_edge.models import FaceModel


def export(model: FaceModel, folder: Path, precision: str, calib: np.ndarray | None,
           float_groups: list[str]) -> Converted:
    import openvino as ov

    wrapped = ExportModel(fuse_batchnorm(model), "NCHW")
    size = model.image_size
    kept_float: list[str] = []
    with quiet():
        ov_model = to_openvino(wrapped, size)
        if precision == "int8":
            from lafs_edge.convert.quantize import float_paths

            assert calib is not None   # build_artifact: int8 needs calibration faces
            ov_model = nncf_quantize(ov_model, wrapped, calib, float_paths(wrapped, float_groups))
            kept_float = list(float_groups)
    ov.save_model(ov_model, str(folder / "model.xml"), compress_to_fp16=precision == "fp16")
    return Converted("model.xml", [-1, 3, size, size], weights_file="model.bin",
                     kept_float=kept_float)


@contextlib.contextmanager
def quiet():
    """Tracer warnings and NNCF's progress bars are noise on a command line."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def to_openvino(wrapped: ExportModel, size: int):
    import openvino as ov

    with torch.no_grad():
        ov_model = ov.convert_model(wrapped, example_input=wrapped.example(2),
                                    input=[("images", ov.PartialShape([-1, 3, size, size]), ov.Type.f32)])
    ov_model.outputs[0].get_tensor().set_names({"embedding"})
    return ov_model


def ignored_patterns(groups: list[str]) -> list[str]:
    """Module paths of the wrapped model -> regexes over OpenVINO node names, which the
    TorchScript frontend writes as `__module.<path>/aten::op/Type` ("path$": own ops only)."""
    return [rf"__module\.{re.escape(g[:-1])}/.*" if g.endswith("$") else rf"__module\.{re.escape(g)}[./].*"
            for g in groups]


def nncf_quantize(ov_model, wrapped: ExportModel, calib: np.ndarray, float_paths: list[str]):
    import nncf

    dataset = nncf.Dataset([calib[i:i + 1] for i in range(len(calib))])
    model_type = nncf.ModelType.TRANSFORMER if wrapped.is_part_vit else None
    ignored = nncf.IgnoredScope(patterns=ignored_patterns(float_paths), validate=False)
    return nncf.quantize(ov_model, dataset, subset_size=len(calib), model_type=model_type,
                         ignored_scope=ignored, preset=nncf.QuantizationPreset.MIXED)
