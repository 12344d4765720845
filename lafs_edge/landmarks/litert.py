"""Opening a TFLite file with LiteRT (`ai-edge-litert`), with a clear message when it is absent."""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager

from lafs_edge.errors import UserError


def load_interpreter(path: str | os.PathLike, num_threads: int = 2):
    import importlib.util

    if importlib.util.find_spec("ai_edge_litert") is None:   # not an interrupted import
        raise UserError("face detection needs LiteRT: pip install 'lafs-edge[export]' "
                        "(or pip install ai-edge-litert)")
    from ai_edge_litert.interpreter import Interpreter
    with _quiet_native_stderr():  # LiteRT's C++ logs "INFO: Created TensorFlow Lite XNNPACK ..."
        interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        interpreter.allocate_tensors()
    return interpreter


@contextmanager
def _quiet_native_stderr():
    """Silence file descriptor 2 (native libraries' logging) for the block; Python exceptions
    still propagate. Skipped when stderr has no descriptor (e.g. captured by a notebook)."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)
