"""`open_runtime(artifact_dir)`: load an exported model in the runtime its manifest names.

    runtime = open_runtime("artifacts/part_fvit_tiny-openvino-int8")
    embeddings = runtime.run(batch)   # float32, already normalised, in manifest.input.layout

`run` returns raw embeddings (B, embedding_dim), not L2-normalised; the Embedder
(`lafs_edge.runtime.embedder`) adds preprocessing, batching and normalisation on top.
The model file's sha256 is checked against the manifest before anything is loaded, so a
corrupted or swapped file never produces silently wrong embeddings.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Callable

import numpy as np

from lafs_edge.errors import UserError
from lafs_edge.runtime.manifest import Manifest, read_manifest
from lafs_edge.hashing import sha256_file

# target -> module in lafs_edge.runtime with `load(model_path, manifest, threads) -> callable`
BACKENDS = {"onnx": "onnxruntime", "openvino": "openvino", "tflite": "litert",
            "coreml": "coreml", "pytorch": "pytorch"}


class Runtime:
    """One loaded artifact. `run(batch)` accepts any batch size: a model exported with a fixed
    batch (manifest input.shape[0] > 0) is fed in chunks of that size, the last chunk padded."""

    def __init__(self, manifest: Manifest, folder: Path, infer: Callable[[np.ndarray], np.ndarray],
                 threads: int | None):
        self.manifest, self.folder, self.threads = manifest, folder, threads
        self._infer = infer
        first = manifest.input.shape[0]
        self.fixed_batch = int(first) if isinstance(first, int) and first > 0 else None

    @property
    def target(self) -> str:
        return self.manifest.target

    def run(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        expected = list(self.manifest.input.shape[1:])
        if batch.ndim != 4 or list(batch.shape[1:]) != expected:
            raise UserError(f"{self.target} runtime: expected input (B, {', '.join(map(str, expected))})"
                            f" in {self.manifest.input.layout}, got {tuple(batch.shape)}")
        if self.fixed_batch is None or len(batch) == self.fixed_batch:
            return self._check(self._infer(batch), len(batch))
        rows = []
        for start in range(0, len(batch), self.fixed_batch):
            chunk = batch[start:start + self.fixed_batch]
            pad = self.fixed_batch - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), np.float32)])
            rows.append(self._infer(chunk)[:len(chunk) - pad])
        return self._check(np.concatenate(rows), len(batch))

    def _check(self, out: np.ndarray, count: int) -> np.ndarray:
        out = np.asarray(out, dtype=np.float32).reshape(count, -1)
        if out.shape[1] != self.manifest.embedding_dim:
            raise UserError(f"{self.target} model returned {out.shape[1]} values per face, "
                            f"manifest says embedding_dim {self.manifest.embedding_dim}")
        return out


def open_runtime(artifact: str | os.PathLike, threads: int | None = None,
                 verify_sha256: bool = True) -> Runtime:
    """Artifact folder (or its manifest.json) -> Runtime. `threads`: CPU threads (None: all)."""
    manifest, folder = read_manifest(artifact)
    model_path = folder / manifest.model_file
    if verify_sha256:
        check_files(manifest, folder)
    backend = importlib.import_module(f".{BACKENDS[manifest.target]}", __package__)
    return Runtime(manifest, folder, backend.load(model_path, manifest, threads), threads)


def check_files(manifest: Manifest, folder: Path) -> None:
    """The model (and weights) files exist and match the manifest's sha256."""
    pairs: list[tuple[str, str | None]] = [(manifest.model_file, manifest.model_sha256)]
    if manifest.weights_file:
        pairs.append((manifest.weights_file, manifest.weights_sha256))
    for name, expected in pairs:
        path = folder / name
        if not path.exists():
            raise UserError(f"artifact file missing: {path}")
        actual = sha256_path(path)
        if expected and actual != expected:
            raise UserError(f"{path}: sha256 {actual[:12]}... does not match the manifest "
                            f"({expected[:12]}...); the artifact is corrupted or was modified")


def sha256_path(path: Path) -> str:
    """sha256 of a file, or of a folder (Core ML .mlpackage) as the hash of its files' hashes."""
    if path.is_file():
        return sha256_file(path)
    import hashlib

    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        digest.update(sha256_file(file).encode())
    return digest.hexdigest()


def require(package: str, target: str):
    """Import a runtime package or explain which extra installs it."""
    import importlib.util

    if importlib.util.find_spec(package) is None:   # only a missing package is a missing extra
        raise UserError(f"the {target} runtime needs `{package}`: pip install 'lafs-edge[export]'")
    try:
        return importlib.import_module(package)
    except ImportError as e:   # installed but broken (a missing native library, say)
        raise UserError(f"the {target} runtime `{package}` is installed but cannot be imported "
                        f"({str(e).splitlines()[0][:200]})") from None
