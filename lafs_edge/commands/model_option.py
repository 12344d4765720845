"""`--model`: one argument in every command, its kind told from what the value is.

    an exported artifact folder (it holds manifest.json; or that manifest.json itself)
    a checkpoint file (model.pt, as training writes it)
    a model name with shipped weights (`lafs-edge models` marks them "trained"); a name without
        trained weights is refused: its embeddings would mean nothing

The device commands (enroll, identify, adapt, demo, gallery import) run an artifact: a checkpoint
or a name is exported once into the cache (`lafs_edge.commands.artifacts`). embed and eval run either
form; verify and bench compare an artifact with its PyTorch source, so there it is a checkpoint or
a name.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lafs_edge.errors import UserError

HELP = ("an exported artifact folder, a checkpoint (model.pt) or a model name with shipped "
        "weights (`lafs-edge models`)")
PYTORCH_HELP = "a checkpoint (model.pt) or a model name with shipped weights (`lafs-edge models`)"


@dataclass(frozen=True)
class ModelSource:
    """What `--model` named: `path` is the artifact folder or the checkpoint file (a model name
    resolves to its shipped checkpoint)."""

    kind: str   # "artifact" or "checkpoint"
    path: Path

    def artifact(self) -> Path:
        """An artifact folder for the device runtime: this one, or the checkpoint's cached one."""
        if self.kind == "artifact":
            return self.path
        from lafs_edge.commands.artifacts import checkpoint_artifact

        return checkpoint_artifact(self.path)

    def load(self):
        """An `Embedder` for an artifact, the PyTorch model (eval mode) for a checkpoint."""
        if self.kind == "artifact":
            from lafs_edge.runtime.embedder import Embedder

            return Embedder.from_artifact(self.path)
        from lafs_edge.models import load_model

        return load_model(self.path)


def resolve_model(value: str, pytorch_only: bool = False) -> ModelSource:
    """`--model VALUE` -> ModelSource, or one UserError line saying what VALUE is not.
    `pytorch_only`: the command needs the PyTorch model, so an artifact is refused."""
    from lafs_edge.models import list_models
    from lafs_edge.models.pretrained import shipped, weights_file

    path = Path(value)
    if value in list_models():
        if value not in shipped():
            raise UserError(f"--model {value}: this model has no shipped weights (trained: "
                            f"{_trained_names()}); pass a checkpoint (model.pt) or an exported "
                            "artifact folder")
        return ModelSource("checkpoint", weights_file(value))
    if path.is_dir() and not (path / "manifest.json").is_file():
        raise UserError(f"--model {value}: a folder without manifest.json, not an exported "
                        "artifact (`lafs-edge export` makes one)")
    if path.is_dir() or (path.is_file() and path.suffix == ".json"):
        if pytorch_only:
            raise UserError(f"--model {value}: an exported artifact; this command compares with "
                            f"the PyTorch source, so --model must be {PYTORCH_HELP}")
        return ModelSource("artifact", path if path.is_dir() else path.parent)
    if path.is_file():
        return ModelSource("checkpoint", path)
    kinds = "a checkpoint file" if pytorch_only else "an artifact folder, a checkpoint file"
    raise UserError(f"--model {value}: not {kinds} or a model name with shipped weights "
                    f"({_trained_names()})")


def pytorch_source(value: str | None) -> str | None:
    """verify's and bench's `--model`: the checkpoint path to compare with, None when not given
    (the manifest's record is used)."""
    return None if value is None else str(resolve_model(value, pytorch_only=True).path)


def _trained_names() -> str:
    from lafs_edge.models.pretrained import shipped

    return ", ".join(sorted(shipped())) or "none installed"

