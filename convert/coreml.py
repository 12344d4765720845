"""Core ML ML program (.mlpackage) through coremltools, deployment target iOS 16 / macOS 13.

fp32 and fp16 set the program's compute precision; int8 is the fp16 program with its weights
linearly quantized to int8 per output channel (coremltools.optimize.coreml): Core ML's
weight-compression path, activations stay fp16, so no calibration data is involved.
Converting works on Linux; predicting needs macOS (see `lafs-edge verify`).
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from lafs_edge import __version__
from lafs_edge.convert.export import Converted, ExportModel
from lafs_edge.models import FaceModel

DEPLOYMENT_TARGET = "iOS16"


def export(model: FaceModel, folder: Path, precision: str, calib: np.ndarray | None,
           float_groups: list[str]) -> Converted:
    import coremltools as ct

    wrapped = ExportModel(model, "NCHW")
    example = wrapped.example(1)
    size = model.image_size
    with torch.no_grad():
        traced = torch.jit.trace(wrapped, example)
    _register_missing_ops()
    compute = ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16
    with _quiet():
        mlmodel = ct.convert(traced, inputs=[ct.TensorType(name="images", shape=tuple(example.shape))],
                             outputs=[ct.TensorType(name="embedding")], convert_to="mlprogram",
                             compute_precision=compute,
                             minimum_deployment_target=getattr(ct.target, DEPLOYMENT_TARGET))
        if precision == "int8":
            mlmodel = _int8_weights(mlmodel)
    mlmodel.author = "lafs-edge"
    mlmodel.version = __version__
    mlmodel.short_description = (f"{getattr(model, 'arch', type(model).__name__)} face embedding: "
                                 f"aligned {size}x{size} RGB in [-1, 1] -> "
                                 f"{model.embedding_dim}-d (L2-normalise before comparing)")
    mlmodel.user_defined_metadata.update({"precision": precision, "layout": "NCHW", "color": "RGB",
                                          "embedding_dim": str(model.embedding_dim)})
    mlmodel.save(str(folder / "model.mlpackage"))
    return Converted("model.mlpackage", [1, 3, size, size],
                     details={"deployment_target": DEPLOYMENT_TARGET})


_REGISTERED = False


def _register_missing_ops() -> None:
    """`addcmul` (the sampler's coordinate arithmetic) has no coremltools converter: add one,
    input + value * tensor1 * tensor2, from MIL ops every deployment target has."""
    global _REGISTERED
    if _REGISTERED:
        return
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch.ops import _get_inputs
    from coremltools.converters.mil.frontend.torch.torch_op_registry import register_torch_op

    @register_torch_op
    def addcmul(context, node):
        inputs = _get_inputs(context, node)
        base, first, second = inputs[:3]
        product = mb.mul(x=first, y=second)
        if len(inputs) > 3 and inputs[3] is not None and float(inputs[3].val) != 1.0:
            product = mb.mul(x=product, y=np.float32(inputs[3].val))
        context.add(mb.add(x=base, y=product, name=node.name))

    _REGISTERED = True


def _int8_weights(mlmodel):
    import coremltools.optimize.coreml as cto

    config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(
        mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=512))
    return cto.linear_quantize_weights(mlmodel, config=config)


@contextlib.contextmanager
def _quiet():
    """coremltools prints progress bars and version warnings (torch newer than it was tested with)."""
    logger = logging.getLogger("coremltools")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
