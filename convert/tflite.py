"""TFLite (LiteRT) through litert-torch, run with ai-edge-litert's Interpreter.

- Input NHWC (Android bitmaps), batch 1 (the Runtime feeds larger batches in chunks).
- fp32: litert-torch conversion of the decomposed graph, after folding the index arithmetic that
  depends on no input (the sampler's `arange`s): left alone it lowers to STABLEHLO_IOTA, which the
  LiteRT interpreter has no kernel for.
- fp16: the fp32 model with its weights cast to float16 (ai-edge-quantizer FLOAT_CASTING), the
  standard TFLite fp16 model that GPU delegates and fp16-capable CPUs run natively.
- int8: the PT2E flow (export -> prepare_pt2e with litert-torch's PT2EQuantizer, per-channel
  symmetric weights, static int8 activations -> calibration on real faces -> convert_pt2e), with
  the sensitive groups left in float (no annotation).
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import fx

from lafs_edge.convert import native_noise_filtered
from lafs_edge.convert.export import Converted, ExportModel
from lafs_edge.models import FaceModel


def export(model: FaceModel, folder: Path, precision: str, calib: np.ndarray | None,
           float_groups: list[str]) -> Converted:
    wrapped = ExportModel(model, "NHWC")
    example = wrapped.example(1)
    path = folder / "model.tflite"
    with native_noise_filtered(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        if precision == "int8":
            from lafs_edge.convert.quantize import float_paths

            assert calib is not None   # build_artifact: int8 needs calibration faces
            data = _convert_int8(wrapped, example, wrapped.to_layout(calib),
                                 float_paths(wrapped, float_groups))
        else:
            data = _convert_float(wrapped, example)
            if precision == "fp16":
                data = _cast_weights_fp16(data)
    path.write_bytes(data)
    size = model.image_size
    return Converted("model.tflite", [1, size, size, 3], layout="NHWC",
                     kept_float=list(float_groups) if precision == "int8" else [])


def _lower(module: torch.nn.Module, example: torch.Tensor) -> fx.GraphModule:
    """torch.export + litert-torch's decompositions, then fold input-independent index math."""
    from litert_torch import fx_infra

    program = torch.export.export(module, (example,))
    program = fx_infra.safe_run_decompositions(program, fx_infra.decomp.pre_convert_decomp(),
                                               can_skip=False)
    graph_module = program.module()
    fold_input_independent(graph_module)
    return graph_module


def _convert_float(wrapped: ExportModel, example: torch.Tensor) -> bytes:
    import litert_torch

    edge = litert_torch.convert(_lower(wrapped, example), (example,))
    return bytes(edge.model_content())


def _cast_weights_fp16(data: bytes) -> bytes:
    from ai_edge_quantizer import qtyping, quantizer
    from ai_edge_quantizer.algorithms.nonlinear_quantize import float_casting

    qt = quantizer.Quantizer(bytearray(data))
    for op in float_casting.SUPPORTED_WEIGHT_QUANT_OPS:
        qt.update_quantization_recipe(
            regex=".*", operation_name=op, algorithm_key=float_casting.ALGORITHM_KEY,
            op_config=qtyping.OpQuantizationConfig(
                weight_tensor_config=qtyping.TensorQuantizationConfig(
                    num_bits=16, dtype=qtyping.TensorDataType.FLOAT),
                compute_precision=qtyping.ComputePrecision.FLOAT, explicit_dequantize=True))
    return bytes(qt.quantize().quantized_model)


def _convert_int8(wrapped: ExportModel, example: torch.Tensor, calib: np.ndarray,
                  float_paths: list[str]) -> bytes:
    import litert_torch
    from litert_torch.quantize.pt2e_quantizer import get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = _scoped_quantizer(float_paths)
    quantizer.set_global(get_symmetric_quantization_config(is_per_channel=True))
    graph_module = torch.export.export(wrapped, (example,)).module()
    prepared = prepare_pt2e(graph_module, quantizer)
    with torch.no_grad():
        for i in range(len(calib)):
            prepared(torch.from_numpy(calib[i:i + 1]))
    quantized = convert_pt2e(prepared, fold_quantize=False)
    lowered = _lower(quantized, example)
    edge = litert_torch.convert(lowered, (example,), quant_config=QuantConfig(pt2e_quantizer=quantizer))
    return bytes(edge.model_content())


def _scoped_quantizer(float_paths: list[str]):
    """litert-torch's PT2EQuantizer, annotating every op outside `float_paths` (module paths;
    "path$" means only the ops directly in that module, not in its children).

    Its own `set_module_name` cannot express "float" (it rejects None) and its name filter
    mis-parses torch.export's `nn_module_stack` keys in torch 2.13 ("L__self__model.x" loses a
    character), so the filter here reads the module path from the stack's values instead."""
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer

    def outside_float(node: fx.Node) -> bool:
        paths = [path for path, _ in node.meta.get("nn_module_stack", {}).values()]
        innermost = paths[-1] if paths else ""
        return not any(innermost == f[:-1] if f.endswith("$") else
                       any(p == f or p.startswith(f + ".") for p in paths) for f in float_paths)

    class ScopedQuantizer(PT2EQuantizer):
        def _annotate_for_static_quantization_config(self, model):
            return self._annotate_all_static_patterns(model, self.global_config, outside_float)

    return ScopedQuantizer()


def fold_input_independent(graph_module: fx.GraphModule) -> int:
    """Evaluate every call whose inputs are all computed from nothing (no graph input, no
    parameter): `arange`, masks built from it... and store the results as buffers. Parameters are
    never folded, so quantization patterns (weight -> linear) stay intact. Returns how many."""
    graph = graph_module.graph
    values: dict[fx.Node, Any] = {}
    for node in graph.nodes:
        if node.op != "call_function" or not all(n in values for n in node.all_input_nodes):
            continue
        try:
            values[node] = node.target(*fx.node.map_arg(node.args, values.__getitem__),
                                       **fx.node.map_arg(node.kwargs, values.__getitem__))
        except Exception:  # an op that cannot run eagerly here stays in the graph
            continue
    folded = 0
    for node, value in values.items():
        if not isinstance(value, torch.Tensor) or all(user in values for user in node.users):
            continue
        name = f"_folded_constant_{folded}"
        graph_module.register_buffer(name, value.clone())
        with graph.inserting_before(node):
            constant = graph.get_attr(name)
        constant.meta = dict(node.meta)
        node.replace_all_uses_with(constant)
        folded += 1
    graph.eliminate_dead_code()
    graph.lint()
    graph_module.recompile()
    return folded
