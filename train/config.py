"""Training configs: the packaged defaults, then YAML files, then `key=value` overrides.

    cfg = load_config("supervised", ["my_run.yaml"], ["optim.lr=5e-4", "model.arch=part_fvit_small"])

The defaults are `train/configs/engine.yaml` (seed, optimizer and trainer settings shared by
every stage) under `train/configs/<stage>.yaml`, which keeps only what differs. Every key and
its type come from the stage's schema (train/schema/, a file per stage), so a typo fails at
once instead of being silently ignored; only free-form mappings (`model.overrides`) accept new keys. Values on
the command line are parsed as YAML (`1e-3` is a float, `[0.4, 1.0]` a list, `null` None) and
checked against the key's type, and a choice against its allowed values, as each file or
override is merged; the resolved config then against every numeric range (a negative batch size
used to hang at step 0 and a zero one to divide by zero, long after the command started). It is
a plain nested dict holding every key, written next to a run's outputs (`save_config`), as
dinov2 does, so a run can be repeated exactly with `--config OUTPUT_DIR/config.yaml`.
"""
from __future__ import annotations

import copy
import difflib
import os
from pathlib import Path
from typing import Any, Iterable

import yaml

from lafs_edge.errors import UserError
from lafs_edge.fileio import write_text_atomic
from lafs_edge.train.schema import stage_schema
from lafs_edge.train.schema.checks import Leaf, fields_of, is_free_form, is_section, resolve

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def packaged_config(name: str) -> Path:
    """A config shipped with the package (`supervised`, `supervised_smoke`, ...)."""
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
        raise UserError(f"no packaged config {name!r}; packaged: {known}")
    return path


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load, but a key twice in one mapping is an error: YAML would keep the last silently,
    so a second `optim:` section would drop the first one's settings."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping (line "
                    f"{seen[key].start_mark.line + 1} and {key_node.start_mark.line + 1})",
                    key_node.start_mark)
            seen[key] = key_node
        return super().construct_mapping(node, deep)


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file() and not path.suffix and (CONFIG_DIR / f"{path}.yaml").is_file():
        path = CONFIG_DIR / f"{path}.yaml"  # `--config supervised_smoke` names a packaged file
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config must be a mapping of keys, got {type(data).__name__}")
    return data


def load_config(stage: str, files: Iterable[str | os.PathLike] = (),
                overrides: Iterable[str] = ()) -> dict[str, Any]:
    """engine.yaml <- the stage's file <- each file in order <- each `dotted.key=value` override."""
    schema = stage_schema(stage)
    cfg: dict[str, Any] = {}
    for path in (packaged_config("engine"), packaged_config(stage), *files):
        merge(cfg, read_yaml(path), str(path), schema)
    for item in overrides:
        key, value = parse_override(item)
        merge(cfg, nest(key, value), "command line", schema)
    return resolve(schema, cfg)


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


def merge(cfg: dict[str, Any], update: dict[str, Any], source: str, section: type,
          prefix: str = "") -> None:
    """Merge `update` into `cfg` in place, refusing keys the schema lacks and values of another
    type; a free-form mapping (model.overrides) takes any key."""
    fields = fields_of(section)
    for key, value in update.items():
        name = f"{prefix}{key}"
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            raise UserError(f"{source}: unknown config key {name!r}{hint}")
        field_type = fields[key]
        if is_section(field_type) or is_free_form(field_type):
            if not isinstance(value, dict):
                raise UserError(f"{source}: {name} is a section; set its keys ({name}.KEY=...)")
            node = cfg.setdefault(key, {})
            if is_section(field_type):
                merge(node, value, source, field_type, prefix=f"{name}.")
            else:
                node.update(copy.deepcopy(value))
            continue
        try:
            cfg[key] = Leaf.of(field_type).coerce(value)
        except ValueError as e:
            raise UserError(f"{source}: {name} expects {e}, got {value!r}") from None


def save_config(cfg: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write the resolved config atomically (the record of what a run used)."""
    path = Path(path)
    write_text_atomic(path, yaml.safe_dump(cfg, sort_keys=False))
    return path
