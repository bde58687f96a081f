"""Versioned records: iis.json, a card's metric args and a saved head config, read as this version.

Every record iis-hf writes carries `schema_version` (`SCHEMA_VERSION`); one without it was written
before records were versioned: version 1. Reading an older record renames its old keys
(`RENAMED_KEYS`) and fills in, explicitly, what that version ran but did not record (`filled_in`
lists each key so filled), so that `iis-hf compare` never guesses: a setting that two results must
share and that a record neither records nor could be filled in with is unknown, and compare refuses.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from ..errors import IISError

# What prepared a result's images (`iis_hf.pipeline.score_models` records it): the image processor's
# backend ("pil" or "torchvision") and the versions of torch, transformers and torchvision. It is not
# a setting one chooses, so no schema version fills it in: a record without it (every record written
# before it was recorded, and scores of features extracted elsewhere, as the Trainer's) reads as
# `UNKNOWN_BACKEND`, and `iis_hf.compare` refuses to rank an unknown backend beside a known one.
ENVIRONMENT_KEY = "environment"
BACKEND_KEY = "image_processor_backend"
UNKNOWN_BACKEND = "unknown"

SCHEMA_VERSION = 2  # 2: one name per setting (head_batch_size, ...); 1: every record without the key
SCHEMA_KEY = "schema_version"
FILLED_KEY = "filled_in"  # the "part.key" settings reading an older record filled in
CONVERGED_STEP_KEYS = ("min_steps", "max_steps", "patience")

# The keys records up to a version named a setting by, per part of the record's settings.
RENAMED_KEYS: dict[int, dict[str, dict[str, str]]] = {
    1: {"heads": {"batch_size": "head_batch_size", "precision": "head_precision"}},
}
# What a record of a version may lack, with the value that version always ran: extraction before
# `preprocessing` existed prepared every image with the model's processor.
VERSION_DEFAULTS: dict[int, dict[str, dict[str, Any]]] = {
    1: {"extraction": {"preprocessing": "processor"}},
}


def record_version(record: Mapping[str, Any], where: str = "the record") -> int:
    """A record's schema version (1 when it has none); a newer one than this iis-hf reads is refused."""
    version = record.get(SCHEMA_KEY, 1)
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= SCHEMA_VERSION:
        raise IISError(
            f"{where} has {SCHEMA_KEY} {version!r}; this iis-hf reads versions 1 to {SCHEMA_VERSION}: "
            "upgrade iis-hf"
        )
    return version


def upgrade_settings(settings: Mapping[str, Any], version: int) -> tuple[dict[str, Any], list[str]]:
    """A result's `settings` (parts "heads", "extraction", ...) of schema `version` as this version's,
    and the "part.key" settings filled in (`VERSION_DEFAULTS`, and the converged step budget a
    recipe-1 record never had: None, not applicable to heads trained a fixed number of epochs)."""
    upgraded = copy.deepcopy(dict(settings))
    filled: list[str] = []
    for old in range(version, SCHEMA_VERSION):
        for part, renames in RENAMED_KEYS.get(old, {}).items():
            values = upgraded.get(part)
            if isinstance(values, dict):
                upgraded[part] = {renames.get(k, k): v for k, v in values.items()}
        for part, defaults in VERSION_DEFAULTS.get(old, {}).items():
            values = upgraded.get(part)
            if isinstance(values, dict) and values:  # a part the record keeps at all
                for key, value in defaults.items():
                    if key not in values:
                        values[key] = value
                        filled.append(f"{part}.{key}")
    heads = upgraded.get("heads")
    if version < SCHEMA_VERSION and isinstance(heads, dict) and is_recipe_one(heads):
        for key in CONVERGED_STEP_KEYS:
            if key not in heads:
                heads[key] = None
                filled.append(f"heads.{key}")
    return upgraded, filled


def is_recipe_one(heads: Mapping[str, Any], protocol: str | None = None) -> bool:
    """Whether recorded head settings are of the first converged recipe (no `recipe_version`: heads
    trained a fixed 30 epochs, before `min_steps`, `max_steps` and `patience` existed)."""
    return (protocol or heads.get("protocol")) == "converged" and "recipe_version" not in heads


def upgrade_result_record(data: Mapping[str, Any], where: str = "iis.json") -> dict[str, Any]:
    """An iis.json record (`IISResult.to_dict`) of any version as this version's, with `filled_in`."""
    version = record_version(data, where)
    record = dict(data)
    if version < SCHEMA_VERSION:
        record["settings"], filled = upgrade_settings(record.get("settings") or {}, version)
        record[FILLED_KEY] = sorted({*(record.get(FILLED_KEY) or []), *filled})
    record[SCHEMA_KEY] = SCHEMA_VERSION
    return record


def upgrade_card_args(args: Mapping[str, Any], where: str = "the model card") -> dict[str, Any]:
    """A card's IIS metric args (head settings flat, extraction nested) of any version as this one's."""
    version = record_version(args, where)
    record = dict(args)
    if version < SCHEMA_VERSION:
        heads = {k: v for k, v in record.items() if not isinstance(v, (dict, list)) or k == "learning_rate"}
        settings, filled = upgrade_settings(
            {"heads": heads, "extraction": dict(record.get("extraction") or {})}, version
        )
        for old in RENAMED_KEYS.get(1, {}).get("heads", {}):
            record.pop(old, None)
        record.update(settings["heads"])
        if record.get("extraction"):
            record["extraction"] = settings["extraction"]
        record[FILLED_KEY] = sorted(filled)
    record[SCHEMA_KEY] = SCHEMA_VERSION
    return record


def recorded_backend(settings: Mapping[str, Any] | None) -> str:
    """The image-processor backend a result's `settings` record ("pil", "torchvision", a custom
    processor's class name), or `UNKNOWN_BACKEND` for a record that does not say it."""
    environment = (settings or {}).get(ENVIRONMENT_KEY)
    backend = environment.get(BACKEND_KEY) if isinstance(environment, Mapping) else None
    return backend if isinstance(backend, str) and backend else UNKNOWN_BACKEND
