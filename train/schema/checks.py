"""How the typed schema of the training configs is read and checked; the sections and stages
themselves are the sibling modules (shared.py, one file per stage; STAGES in __init__.py).

A field's annotation is the type of its value: `Literal[...]` lists the allowed strings,
`X | None` also allows null, `dict[str, Any]` is a free-form mapping (model.overrides), a
dataclass is a nested section. `Annotated` adds what a type cannot say: the numeric range
(`Range`, checked on every element of a list) and a list's length (`Length`, optionally a
[low, high] pair). The default values are not here but in the packaged YAML files
(`configs/engine.yaml` under `configs/<stage>.yaml`), where every key is commented.

`train.config` checks each value's type as a file or an override is merged (`Leaf.coerce`), then
the resolved config against the ranges (`resolve`): out-of-range values used to fail long after
the start (a negative batch size hung at step 0), unknown choices only deep inside a stage.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Iterable, Literal

from lafs_edge.errors import UserError


@dataclass(frozen=True)
class Range:
    """Numbers allowed, written "[low, high)": brackets closed, parentheses open."""
    interval: str

    def __contains__(self, value: float) -> bool:
        low_text, high_text = self.interval[1:-1].split(",")
        low, high = float(low_text), float(high_text)
        above = value >= low if self.interval[0] == "[" else value > low
        below = value <= high if self.interval[-1] == "]" else value < high
        return math.isfinite(value) and above and below


@dataclass(frozen=True)
class Length:
    """A list of exactly `count` numbers; `ordered`: a [low, high] pair with low <= high."""
    count: int
    ordered: bool = False


Seed = Annotated[int, Range("[0, 4294967295]")]
Count = Annotated[int, Range("[0, inf)")]
AtLeastOne = Annotated[int, Range("[1, inf)")]
Positive = Annotated[float, Range("(0, inf)")]
NonNegative = Annotated[float, Range("[0, inf)")]
Probability = Annotated[float, Range("[0, 1]")]
Fraction = Annotated[float, Range("(0, 1]")]
AreaPair = Annotated[list[float], Range("(0, 1]"), Length(2, ordered=True)]
PositivePair = Annotated[list[float], Range("(0, inf)"), Length(2, ordered=True)]
# brightness, contrast, saturation, hue
ColorJitter = Annotated[list[float], Range("[0, inf)"), Length(4)]
# a probability per view: global view 1, global view 2, local views
PerView = Annotated[list[float], Range("[0, 1]"), Length(3)]
UnitInterval = Annotated[float, Range("[0, 1]")]


@functools.cache
def fields_of(section: type) -> dict[str, Any]:
    """{key: resolved annotation} of a section, in declaration order."""
    hints = typing.get_type_hints(section, include_extras=True)
    return {f.name: hints[f.name] for f in dataclasses.fields(section)}


def is_section(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def is_free_form(hint: Any) -> bool:
    """A mapping that takes any key (model.overrides): files and overrides add to it."""
    return typing.get_origin(hint) is dict


@dataclass(frozen=True)
class Leaf:
    """What one setting accepts, read from its annotation."""
    kind: type                       # bool, int, float, str or list (of floats)
    nullable: bool = False
    choices: tuple[str, ...] = ()
    range: Range | None = None
    length: Length | None = None

    @staticmethod
    @functools.cache
    def of(hint: Any) -> Leaf:
        nullable = typing.get_origin(hint) in (typing.Union, types.UnionType)
        if nullable:
            (hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        marks: Iterable[Any] = ()
        if typing.get_origin(hint) is Annotated:
            hint, *marks = typing.get_args(hint)
        marks_by_type = {type(mark): mark for mark in marks}
        range_, length = marks_by_type.get(Range), marks_by_type.get(Length)
        if typing.get_origin(hint) is Literal:
            return Leaf(str, nullable, choices=typing.get_args(hint))
        if typing.get_origin(hint) is list:
            return Leaf(list, nullable, range=range_, length=length)
        return Leaf(hint, nullable, range=range_)

    def expects(self) -> str:
        if self.choices:
            text = f"one of {', '.join(self.choices)}"
        elif self.kind is list:
            text = f"a list of {self.length.count} numbers" if self.length else "a list of numbers"
        else:
            text = self.kind.__name__
        return f"{text} or null" if self.nullable else text

    def coerce(self, value: Any) -> Any:
        """`value` as this setting holds it (an int or a `1e-3` string stands for a float);
        ValueError when it is of another type."""
        if value is None and self.nullable:
            return None
        if self.choices:
            ok = isinstance(value, str) and value in self.choices
        elif self.kind is list:
            numbers = [_as_float(v) for v in value] if isinstance(value, list) else None
            ok = (numbers is not None and None not in numbers
                  and (self.length is None or len(numbers) == self.length.count))
            value = numbers if ok else value
        elif self.kind is float:
            ok = _as_float(value) is not None
            value = _as_float(value) if ok else value
        elif self.kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, self.kind)
        if not ok:
            raise ValueError(self.expects())
        return value

    def check_range(self, name: str, value: Any) -> None:
        """Every number finite and inside the range; a [low, high] pair in order."""
        if value is None or self.kind not in (int, float, list):
            return
        numbers = value if isinstance(value, list) else [value]
        interval = self.range or Range("(-inf, inf)")
        if any(v not in interval for v in numbers):
            raise UserError(f"config: {name} = {value!r} is out of range: must be "
                            f"{'each ' if isinstance(value, list) else ''}in {interval.interval}")
        if self.length and self.length.ordered and numbers[0] > numbers[1]:
            raise UserError(f"config: {name} = {value!r} must be a [low, high] pair with "
                            "low <= high")


def _as_float(value: Any) -> float | None:
    if isinstance(value, str):  # YAML 1.1 reads `1e-3` (no dot) as a string
        try:
            return float(value)
        except ValueError:
            return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def leaves(section: type, prefix: str = "") -> Iterable[tuple[str, Leaf]]:
    """(dotted key, Leaf) of every setting of a section or stage, free-form mappings excluded."""
    for key, hint in fields_of(section).items():
        if is_section(hint):
            yield from leaves(hint, f"{prefix}{key}.")
        elif not is_free_form(hint):
            yield f"{prefix}{key}", Leaf.of(hint)


def resolve(section: type, cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The merged config in the schema's key order, every key set and every number in range."""
    out: dict[str, Any] = {}
    for key, hint in fields_of(section).items():
        name = f"{prefix}{key}"
        if key not in cfg:  # the packaged engine.yaml and <stage>.yaml set every key
            raise UserError(f"config: {name} has no value (missing from the packaged defaults)")
        if is_section(hint):
            out[key] = resolve(hint, cfg[key], f"{name}.")
        else:
            if not is_free_form(hint):
                Leaf.of(hint).check_range(name, cfg[key])
            out[key] = cfg[key]
    return out
