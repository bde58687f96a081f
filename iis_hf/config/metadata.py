"""The machinery of a setting: its metadata (`setting`), the one validator that checks every field
from it (`check_settings`), the rule that spells its flag (`setting_flag`), and the old names a
renamed setting is still accepted by for one release (`RENAMED`).

The configs themselves are declared in `iis_hf.config`, which re-exports all of this.
"""

from __future__ import annotations

import functools
import inspect
import math
import types
import typing
import warnings
from collections.abc import Callable, Iterable
from dataclasses import Field, asdict, dataclass, fields
from typing import Any, get_type_hints

from ..errors import IISError

# ---------------------------------------------------------------------------- field metadata
# What a field says about comparing two results (its metadata "compare"):
SAME = "same"  # recorded with every result, and two results must share it to be ranked together
RECORDED = "recorded"  # recorded with every result, but results may differ in it (more seeds: less noise)
NOT_RECORDED = None  # where or how fast the work runs, not what it measures


@dataclass(frozen=True)
class Bounds:
    """The range a number setting allows, with each end inclusive or exclusive (None: unbounded)."""

    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False

    def contains(self, value: float) -> bool:
        low, high = self.minimum, self.maximum
        above = low is None or (value > low if self.exclusive_minimum else value >= low)
        below = high is None or (value < high if self.exclusive_maximum else value <= high)
        return above and below

    def describe(self, noun: str) -> str:
        """'an int >= 1', 'a number in (0, 1]', 'a finite number > 0': what an error says is allowed."""
        low, high = self.minimum, self.maximum
        if low is not None and high is not None:
            left, right = "(" if self.exclusive_minimum else "[", ")" if self.exclusive_maximum else "]"
            return f"{noun} in {left}{low:g}, {high:g}{right}"
        if low is not None:
            return f"{noun} {'>' if self.exclusive_minimum else '>='} {low:g}"
        if high is not None:
            return f"{noun} {'<' if self.exclusive_maximum else '<='} {high:g}"
        return noun


def setting_flag(f: Field) -> str:
    """The rule that spells every flag: ``--`` + the field name with dashes; ``--no-`` before it for a
    bool that is on by default (``--no-progress``)."""
    return ("--no-" if f.default is True else "--") + f.name.replace("_", "-")


# ---------------------------------------------------------------------------- the one validator
def check_settings(config: Any) -> None:
    """Check (and normalise) every `setting` field of `config` from its metadata: the one place a
    value is validated, so that every entry point refuses the same values with the same message."""
    owner = type(config).__name__
    for f in config_fields(type(config)):
        value = getattr(config, f.name)
        if value is None and f.default is None:
            continue  # an optional setting left unset
        checked = _checked_value(owner, f, field_type(type(config), f.name), value)
        if checked is not value:
            setattr(config, f.name, checked)


def _checked_value(owner: str, f: Field, annotation: Any, value: Any) -> Any:
    """`value` of field `f` checked against its metadata and annotation (an IISError names the field,
    the bad value and what is allowed), normalised where the field says how."""
    if f.metadata.get("check") is not None:
        return f.metadata["check"](value)
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        _refuse(owner, f, f"one of {', '.join(map(repr, choices))}", value)
    scalar, is_list = _number_type(annotation)
    if scalar is None:
        return value
    values = list(value) if is_list and isinstance(value, (list, tuple)) else [value]
    if not values:
        raise IISError(f"{owner}.{f.name} needs at least one value", field=f.name, owner=owner)
    for item in values:
        _check_number(owner, f, scalar, item)
    if is_list and isinstance(value, (list, tuple)):  # one value or a grid: a grid of one is the value
        return [scalar(v) for v in values] if len(values) > 1 else scalar(values[0])
    return value


def _number_type(annotation: Any) -> tuple[type | None, bool]:
    """(int or float, whether a list of them is allowed) for a number setting, (None, False) otherwise."""
    parts = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    is_list = any(typing.get_origin(p) is list for p in parts)
    scalars = [p for p in parts if p in (int, float)]
    return (scalars[0] if scalars else None), is_list


def _check_number(owner: str, f: Field, scalar: type, value: Any) -> None:
    bounds = f.metadata.get("bounds") or Bounds()
    noun = "an int" if scalar is int else "a finite number" if bounds.maximum is None else "a number"
    wrong_type = isinstance(value, bool) or not isinstance(value, (int,) if scalar is int else (int, float))
    if wrong_type or not math.isfinite(value) or not bounds.contains(value):
        _refuse(owner, f, bounds.describe(noun), value)


def _refuse(owner: str, f: Field, allowed: str, value: Any) -> None:
    optional = " (or None)" if f.default is None else ""
    why = f": {f.metadata['why']}" if f.metadata.get("why") else ""
    raise IISError.invalid(owner, f.name, f"must be {allowed}{optional}, got {value!r}{why}")


# ---------------------------------------------------------------------------- one name per setting
# Settings renamed so that the field, the flag, the record and the keyword share one name; the old
# Python spellings work for one release, with a FutureWarning (CHANGELOG.md lists them).
RENAMED: dict[str, dict[str, str]] = {
    "ConceptsConfig": {"kind": "concept_kind", "bank": "concept_bank"},
    "HeadsConfig": {"batch_size": "head_batch_size", "precision": "head_precision"},
    "ConceptBank.from_text": {"epochs": "projection_epochs"},  # a keyword, not a field: no attribute
}


def renamed_settings(
    kind: type | str, settings: dict[str, Any], where: str, stacklevel: int = 4
) -> dict[str, Any]:
    """`settings` with the old names of `kind`'s fields (`RENAMED`) replaced by the new ones, each
    with a FutureWarning naming the new one; an IISError when both spellings are given."""
    renamed = RENAMED.get(kind if isinstance(kind, str) else kind.__name__, {})
    if not any(k in renamed for k in settings):
        return settings
    upgraded = {}
    for key, value in settings.items():
        new = renamed.get(key)
        if new is not None:
            if new in settings:
                raise IISError(f"{where}() got both {key}= and {new}=: pass {new}= alone", field=new)
            warnings.warn(
                f"{where}({key}=...) is deprecated and will be removed in the next release: use {new}=",
                FutureWarning,
                stacklevel=stacklevel,
            )
        upgraded[new or key] = value
    return upgraded


def accepts_old_names(cls: type) -> type:
    """Let `cls(...)` take the old names of its renamed fields (with a FutureWarning), and read them as
    deprecated attributes, for one release."""
    init = vars(cls)["__init__"]  # the one @dataclass wrote

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **settings: Any) -> None:
        init(self, *args, **renamed_settings(cls, settings, cls.__name__, stacklevel=3))

    def old_attribute(old: str, new: str) -> property:
        def read(self: Any) -> Any:
            warnings.warn(f"{cls.__name__}.{old} is deprecated: use .{new}", FutureWarning, stacklevel=2)
            return getattr(self, new)

        return property(read)

    cls.__init__ = __init__  # type: ignore[misc]
    for old, new in RENAMED[cls.__name__].items():
        setattr(cls, old, old_attribute(old, new))
    return cls


class Config:
    """Checks, JSON round trip and recorded settings shared by the config dataclasses (from field metadata)."""

    def __post_init__(self) -> None:
        check_settings(self)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        data = renamed_settings(cls, dict(data), cls.__name__, stacklevel=3)
        if unknown := sorted(set(data) - known):
            raise IISError(f"unknown {cls.__name__} settings {unknown}; known: {sorted(known)}")
        return cls(**data)

    def recorded(self) -> dict[str, Any]:
        """The settings a result records (fields whose metadata says `SAME` or `RECORDED`)."""
        settings = {}
        for f in fields(self):  # type: ignore[arg-type]
            applies = f.metadata.get("recorded_if")
            if f.metadata.get("compare") is not NOT_RECORDED and (applies is None or applies(self)):
                settings[f.name] = getattr(self, f.name)
        return settings

    @classmethod
    def shared_fields(cls) -> tuple[str, ...]:
        """The fields two results must share to be ranked together (metadata "compare" is `SAME`)."""
        return tuple(f.name for f in fields(cls) if f.metadata.get("compare") == SAME)  # type: ignore[arg-type]


def with_keywords(function: Callable[..., Any], keywords: Iterable[str]) -> Callable[..., Any]:
    """`function` (which takes ``**settings``) with a signature that names each of `keywords`
    (keyword-only, default None): introspection shows the settings a generated entry point takes."""
    signature = inspect.signature(function)
    kept = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    added = [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=None) for k in keywords]
    function.__signature__ = signature.replace(parameters=[*kept, *added])  # type: ignore[attr-defined]
    return function


def config_fields(config: type) -> tuple[Field, ...]:
    """The settings of a config class that an entry point exposes (those declared with `setting`)."""
    return tuple(f for f in fields(config) if "help" in f.metadata)


def field_type(config: type, name: str) -> Any:
    """The resolved annotation of `config.name` (annotations are strings under postponed evaluation)."""
    return get_type_hints(config)[name]
