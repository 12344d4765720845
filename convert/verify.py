"""Parity of an artifact with its PyTorch source on real aligned faces.

The artifact runs through the device path (`Embedder`: preprocessing from the manifest, then the
runtime), the source model in PyTorch eager on the same crops. Reported: mean and min cosine
between the two embeddings, the max absolute error of the L2-normalised embeddings, and 10-fold
verification accuracy on pairs built from the labels (every genuine pair, as many impostors) for
both. Core ML cannot predict off macOS: there the converted program itself is checked.
"""
from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lafs_edge.convert.data import FaceSet
from lafs_edge.errors import UserError
from lafs_edge.runtime.manifest import Manifest

# precision -> (statistic, minimum cosine)
COSINE_LIMITS = {"fp32": ("mean_cosine", 0.9999), "fp16": ("mean_cosine", 0.999),
                 "int8": ("mean_cosine", 0.99)}
MIN_COSINE_LIMITS = {"fp32": 0.9999, "fp16": 0.999}  # fp32/fp16: every face, not just the mean
MAX_ACCURACY_DROP = 0.01


def normalise(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def torch_embeddings(model: torch.nn.Module, faces: FaceSet, batch: int = 64) -> np.ndarray:
    inputs = faces.model_input()
    with torch.inference_mode():
        rows = [model(torch.from_numpy(inputs[i:i + batch])).numpy() for i in range(0, len(inputs), batch)]
    return normalise(np.concatenate(rows))


def runtime_embeddings(folder: Path, faces: FaceSet) -> np.ndarray:
    from lafs_edge.runtime.embedder import Embedder

    return Embedder.from_artifact(folder).embed_crops(faces.images)


def verification_accuracy(embeddings: np.ndarray, labels: np.ndarray) -> float:
    from lafs_edge.verification import kfold_accuracy, make_pairs, pair_scores

    first, second, issame = make_pairs(labels, seed=0)
    return kfold_accuracy(pair_scores(embeddings, first, second), issame)["accuracy"]


def compare(artifact: np.ndarray, reference: np.ndarray, labels: np.ndarray | None) -> dict[str, Any]:
    cos = np.einsum("ij,ij->i", artifact, reference)
    # Centred on the PyTorch mean embedding: the face-specific part. A weakly trained model whose
    # embeddings all point one way has cosine ~1 whatever the artifact does; this one still tells.
    centre = reference.mean(0)
    centred = np.einsum("ij,ij->i", normalise(artifact - centre), normalise(reference - centre))
    report: dict[str, Any] = {"faces": int(len(cos)), "mean_cosine": float(cos.mean()),
                              "min_cosine": float(cos.min()),
                              "max_abs_error": float(np.abs(artifact - reference).max()),
                              "centred_mean_cosine": float(centred.mean()),
                              "mean_pairwise_cosine": float(_mean_pairwise(reference))}
    if labels is not None:
        report["accuracy"] = verification_accuracy(artifact, labels)
        report["accuracy_pytorch"] = verification_accuracy(reference, labels)
    return report


def _mean_pairwise(embeddings: np.ndarray) -> float:
    """Mean cosine between different faces: near 1 means the model barely tells faces apart."""
    n = len(embeddings)
    total = embeddings.sum(0)
    return (float(total @ total) - n) / max(n * (n - 1), 1)


def failures(report: dict[str, Any], precision: str) -> list[str]:
    """Human-readable reasons this parity report fails the thresholds (empty: it passes)."""
    problems = []
    stat, limit = COSINE_LIMITS[precision]
    if report[stat] < limit:
        problems.append(f"{stat} {report[stat]:.6f} < {limit} ({precision})")
    if precision in MIN_COSINE_LIMITS and report["min_cosine"] < MIN_COSINE_LIMITS[precision]:
        problems.append(f"min_cosine {report['min_cosine']:.6f} < {MIN_COSINE_LIMITS[precision]} ({precision})")
    if "accuracy" in report:
        drop = report["accuracy_pytorch"] - report["accuracy"]
        if drop > MAX_ACCURACY_DROP:
            problems.append(f"verification accuracy drops {100 * drop:.2f} points (> 1)")
    return problems


def can_predict(manifest: Manifest) -> bool:
    return manifest.target != "coreml" or platform.system() == "Darwin"


def inspect_coreml(folder: Path, manifest: Manifest) -> dict[str, Any]:
    """Check a Core ML program without running it: I/O names and shapes, ops, weights, metadata."""
    import coremltools as ct

    spec = ct.utils.load_spec(str(folder / manifest.model_file))
    inputs = {i.name: list(i.type.multiArrayType.shape) for i in spec.description.input}
    outputs = {o.name: list(o.type.multiArrayType.shape) for o in spec.description.output}
    ops: dict[str, int] = {}
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            for op in block.operations:
                ops[op.type] = ops.get(op.type, 0) + 1
    metadata = dict(spec.description.metadata.userDefined)
    problems = []
    if inputs != {manifest.input.name: list(manifest.input.shape)}:
        problems.append(f"inputs {inputs} != manifest {manifest.input.name} {manifest.input.shape}")
    if list(outputs) != [manifest.output["name"]]:
        problems.append(f"outputs {list(outputs)} != manifest {manifest.output['name']}")
    if metadata.get("embedding_dim") != str(manifest.embedding_dim):
        problems.append(f"metadata embedding_dim {metadata.get('embedding_dim')} != {manifest.embedding_dim}")
    if metadata.get("precision") != manifest.precision:
        problems.append(f"metadata precision {metadata.get('precision')} != {manifest.precision}")
    quantized_ops = sum(n for op, n in ops.items() if op.startswith("constexpr_"))
    if manifest.precision == "int8" and quantized_ops == 0:
        problems.append("int8 program has no constexpr dequantize ops (weights not quantized)")
    if manifest.precision == "fp32" and "cast" in ops and _has_fp16(spec):
        problems.append("fp32 program computes in fp16")
    if not spec.mlProgram.functions:
        problems.append("not an ML program")
    return {"inputs": inputs, "outputs": outputs, "ops": ops, "metadata": metadata,
            "quantized_weight_ops": quantized_ops, "problems": problems,
            "spec_version": int(spec.specificationVersion)}


def _has_fp16(spec) -> bool:
    from coremltools.proto import MIL_pb2

    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            for op in block.operations:
                for output in op.outputs:
                    if output.type.tensorType.dataType == MIL_pb2.FLOAT16:
                        return True
    return False


def verify_artifact(folder: Path, manifest: Manifest, model: torch.nn.Module, faces: FaceSet,
                    reference: np.ndarray | None = None) -> tuple[dict[str, Any], np.ndarray | None]:
    """(parity report, the artifact's L2-normalised embeddings or None when it cannot run here);
    `reference` = the PyTorch embeddings when already computed."""
    if reference is None:
        reference = torch_embeddings(model, faces)
    if not can_predict(manifest):
        program = inspect_coreml(folder, manifest)
        return {"numeric": f"skipped: Core ML prediction needs macOS (this is {platform.system()})",
                "program": program, "failures": program["problems"]}, None
    embeddings = runtime_embeddings(folder, faces)
    report = compare(embeddings, reference, faces.labels)
    report["failures"] = failures(report, manifest.precision)
    return report, embeddings


def require_labels(faces: FaceSet, what: str) -> np.ndarray:
    if faces.labels is None:
        raise UserError(f"{what} needs labelled faces (identity folders or NAME.condition files)")
    return faces.labels
