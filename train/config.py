"""Training configs: a stage's packaged defaults, then YAML files, then `key=value` overrides.

    cfg = load_config("supervised", ["my_run.yaml"], ["optim.lr=5e-4", "model.arch=part_fvit_small"])

Every key must already exist in the stage's defaults (`train/configs/<stage>.yaml`), so a typo
fails at once instead of being silently ignored; only mappings whose default is `{}` (such as
`model.overrides`) accept new keys. Values on the command line are parsed as YAML (`1e-3` is a
float, `[0.4, 1.0]` a list, `null` None) and checked against the default's type. The resolved
config is written next to a run's outputs (`save_config`), as dinov2 does, so a run can be
repeated exactly with `--config OUTPUT_DIR/config.yaml`.
"""
from __future__ import annotations

import contextlib
import copy
import difflib
import os
from pathlib import Path
from typing import Any, Iterable

import yaml

from ..errors import UserError
from ..fileio import write_text_atomic

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def packaged_config(name: str) -> Path:
    """A config shipped with the package (`supervised`, `supervised_smoke`, ...)."""
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
        raise UserError(f"no packaged config {name!r}; packaged: {known}")
    return path


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file() and not path.suffix and (CONFIG_DIR / f"{path}.yaml").is_file():
        path = CONFIG_DIR / f"{path}.yaml"  # `--config supervised_smoke` names a packaged file
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config must be a mapping of keys, got {type(data).__name__}")
    return data


def load_config(stage: str, files: Iterable[str | os.PathLike] = (),
                overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Stage defaults <- each file in order <- each `dotted.key=value` override."""
    cfg = read_yaml(packaged_config(stage))
    free_form = set(empty_sections(cfg))
    for path in files:
        merge(cfg, read_yaml(path), str(path), free_form)
    for item in overrides:
        key, value = parse_override(item)
        merge(cfg, nest(key, value), "command line", free_form)
    return cfg


def empty_sections(cfg: dict[str, Any], prefix: str = "") -> Iterable[str]:
    """Dotted names of the mappings that are `{}` in the defaults: they accept any key."""
    for key, value in cfg.items():
        if isinstance(value, dict):
            if not value:
                yield f"{prefix}{key}"
            yield from empty_sections(value, f"{prefix}{key}.")


def parse_override(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise UserError(f"bad override {item!r}: expected dotted.key=value (e.g. optim.lr=1e-3)")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text  # an unparseable value stays a string; the type check below reports it
    return key.strip(), value


def nest(dotted: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    node = out
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return out


def merge(base: dict[str, Any], update: dict[str, Any], source: str,
          free_form: set[str] = frozenset(), prefix: str = "") -> None:
    """Merge `update` into `base` in place, refusing unknown keys and mismatched types."""
    for key, value in update.items():
        name = f"{prefix}{key}"
        if prefix.rstrip(".") in free_form:
            base[key] = copy.deepcopy(value)
            continue
        if key not in base:
            close = difflib.get_close_matches(str(key), [str(k) for k in base], n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            raise UserError(f"{source}: unknown config key {name!r}{hint}")
        default = base[key]
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise UserError(f"{source}: {name} is a section; set its keys ({name}.KEY=...)")
            merge(default, value, source, free_form, prefix=f"{name}.")
        else:
            base[key] = check_type(name, default, value, source)


def check_type(name: str, default: Any, value: Any, source: str) -> Any:
    """Keep the default's type: an int may stand for a float, None may replace anything."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        if isinstance(value, str):  # YAML 1.1 reads `1e-3` (no dot) as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise UserError(f"{source}: {name} expects {type(default).__name__} "
                        f"(default {default!r}), got {value!r}")
    return value


def save_config(cfg: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write the resolved config atomically (the record of what a run used)."""
    path = Path(path)
    write_text_atomic(path, yaml.safe_dump(cfg, sort_keys=False))
    return path
