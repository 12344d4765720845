"""lafs_edge.convert: export to deployment formats (see export.py and pipeline.py).

Importing it quiets third-party lines the converters print on every normal run and that say
nothing to a user: torchao's and coremltools' "Failed to load" notes about optional native
kernels this machine does not need (CUDA sm_90a, mxfp8, macOS-only Core ML) and torch's
deprecation of a call inside torchao's import. Their other warnings and errors stay visible.
The C++ lines of the TFLite conversion are filtered where it runs (`native_noise_filtered`)."""
import logging
import os
import sys
import tempfile
from contextlib import contextmanager
from typing import Iterator

# Lines TensorFlow/LiteRT's C++ code writes to the process's stderr during a TFLite export: INFO
# notes (oneDNN is on, the model's op count, the CPU delegate) and absl's preamble before them.
NATIVE_NOISE = ("All log messages before absl::InitializeLog()", "oneDNN custom operations",
                "Estimated count of arithmetic ops", "Created TensorFlow Lite XNNPACK delegate")


class _DropOptionalKernelNotes(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Failed to load")


class _DropPytreeEnumNote(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "register_constant() on Enum subclasses is deprecated" not in record.getMessage()


for _name in ("torchao", "coremltools"):
    logging.getLogger(_name).addFilter(_DropOptionalKernelNotes())
logging.getLogger("torch.utils._pytree").addFilter(_DropPytreeEnumNote())


@contextmanager
def native_noise_filtered() -> Iterator[None]:
    """What native code writes to the stderr file descriptor in the block is held back, then
    written out without the `NATIVE_NOISE` lines: a real warning or error still shows."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode(errors="replace").splitlines()
            kept = [line for line in lines if not any(noise in line for noise in NATIVE_NOISE)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
