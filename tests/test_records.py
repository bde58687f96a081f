"""One name per setting, and versioned records: old spellings and old files still read, with what
was filled in said, and compare refusing what an old record cannot say.

Why: renaming a setting must not silently break code or records written before it, and a result
written before a setting existed must never rank silently beside one that uses it.
"""

from __future__ import annotations

import json

import pytest

from iis_hf.compare import check_comparable
from iis_hf.config import (
    SCHEMA_VERSION,
    ConceptsConfig,
    ExtractionConfig,
    HeadsConfig,
    with_settings,
)
from iis_hf.errors import IISError
from iis_hf.score import IISResult


def record(heads: dict, extraction: dict | None = None, **top) -> dict:
    """An iis.json record as `IISResult.to_dict` writes it (this version unless `top` says otherwise)."""
    result = IISResult(
        iis=0.7,
        standard_accuracy=0.9,
        accuracies=[0.9, 0.6],
        sparsity_ratios=[0.0, 0.9],
        settings={
            "heads": heads,
            "extraction": ExtractionConfig().recorded() if extraction is None else extraction,
            "concepts": {"kind": "prototype-patches", "num_concepts": 200},
        },
    )
    return json.loads(json.dumps({**result.to_dict(), **top}))


def version_one(data: dict) -> dict:
    """`data` as an iis-hf before records were versioned wrote it: no schema_version, old key names."""
    old = {k: v for k, v in data.items() if k != "schema_version"}
    heads = dict(old["settings"]["heads"])
    heads["batch_size"] = heads.pop("head_batch_size")
    old["settings"] = {**old["settings"], "heads": heads}
    return old


# ---------------------------------------------------------------------------- one name per setting
def test_the_old_python_spellings_work_with_a_future_warning_naming_the_new_one():
    with pytest.warns(FutureWarning, match="use head_batch_size="):
        assert HeadsConfig(batch_size=32).head_batch_size == 32
    with pytest.warns(FutureWarning, match="use head_precision="):
        assert HeadsConfig(precision="fp32").head_precision == "fp32"
    with pytest.warns(FutureWarning, match="use concept_kind="):
        assert ConceptsConfig(kind="cluster").concept_kind == "cluster"
    with pytest.warns(FutureWarning, match="use concept_bank="):
        assert ConceptsConfig(bank="a/bank").concept_bank == "a/bank"
    with pytest.warns(
        FutureWarning, match=r"compute_iis\(batch_size=...\) is deprecated.*use head_batch_size="
    ):
        assert with_settings(None, HeadsConfig, {"batch_size": 8}, "compute_iis").head_batch_size == 8
    with pytest.warns(FutureWarning, match=r"\.head_batch_size"):
        assert HeadsConfig().batch_size == 1024  # the old attribute, read for one release
    with pytest.raises(IISError, match="both batch_size= and head_batch_size="):
        HeadsConfig(batch_size=8, head_batch_size=16)


def test_a_bad_value_names_the_field_the_value_and_the_allowed_range():
    with pytest.raises(IISError, match=r"^HeadsConfig.head_batch_size must be an int >= 1, got 0$") as caught:
        HeadsConfig(head_batch_size=0)
    assert (caught.value.field, caught.value.problem) == ("head_batch_size", "must be an int >= 1, got 0")
    with pytest.raises(IISError, match=r"holdout_fraction must be a number in \(0, 1\), got 1.0"):
        HeadsConfig(holdout_fraction=1.0)
    with pytest.raises(IISError, match=r"num_workers must be an int >= 0 \(or None\), got -1"):
        ExtractionConfig(num_workers=-1)
    with pytest.raises(IISError, match=r"clip_cutoff must be a finite number, got nan"):
        ConceptsConfig(clip_cutoff=float("nan"))
    assert HeadsConfig(learning_rate=[0.1, 0.01]).learning_rate == [0.1, 0.01]


# ---------------------------------------------------------------------------- versioned records
def test_every_record_carries_its_schema_version():
    from iis_hf.model_card import iis_metric_args
    from iis_hf.modeling.head_config import IISHeadConfig

    data = record(HeadsConfig(sparsity_ratios=[0.0, 0.9]).recorded())
    assert data["schema_version"] == SCHEMA_VERSION and "filled_in" not in data
    assert iis_metric_args(IISResult.from_dict(data))["schema_version"] == SCHEMA_VERSION
    head = IISHeadConfig(sparsity_ratios=[0.5], num_classes=2, num_concepts=4).to_dict()
    assert head["schema_version"] == SCHEMA_VERSION
    del head["schema_version"]  # a file written before: version 1, read as this version
    assert IISHeadConfig.from_dict(head).schema_version == SCHEMA_VERSION
    with pytest.raises(IISError, match="schema_version 99"):
        IISResult.from_dict({**data, "schema_version": 99})


def test_an_old_record_is_read_with_its_old_names_mapped_and_what_was_filled_in_said():
    new = record(HeadsConfig(sparsity_ratios=[0.0, 0.9]).recorded())
    extraction = {k: v for k, v in new["settings"]["extraction"].items() if k != "preprocessing"}
    old = version_one(record(new["settings"]["heads"], extraction))
    read = IISResult.from_dict(old)
    assert read.schema_version == SCHEMA_VERSION
    assert read.settings["heads"]["head_batch_size"] == 1024 and "batch_size" not in read.settings["heads"]
    assert read.settings["extraction"]["preprocessing"] == "processor"  # what version 1 always ran
    assert read.filled_in == ["extraction.preprocessing"]
    assert read.to_dict()["filled_in"] == ["extraction.preprocessing"]  # and saving it says so
    check_comparable({"old": read, "new": IISResult.from_dict(new)})  # filled in: they rank together


def test_compare_refuses_an_old_record_that_does_not_say_a_setting_that_matters():
    new = record(HeadsConfig(sparsity_ratios=[0.0, 0.9]).recorded())
    heads = {k: v for k, v in new["settings"]["heads"].items() if k != "lr_decay"}
    old = IISResult.from_dict(version_one(record(heads)))
    old.metadata["model"] = "runs/old/iis.json"
    with pytest.raises(ValueError, match=r"the record of old \(runs/old/iis.json, schema version 2\) does not say its heads setting 'lr_decay'") as refused:  # fmt: skip
        check_comparable({"old": old, "new": IISResult.from_dict(new)})
    assert "\n" not in str(refused.value)
    # a setting that does not apply to how a result was measured is not asked for
    holdout = HeadsConfig(sparsity_ratios=[0.0, 0.9], model_selection="holdout").recorded()
    assert "holdout_fraction" in holdout and "holdout_fraction" not in new["settings"]["heads"]
    check_comparable(
        {"a": IISResult.from_dict(new), "b": IISResult.from_dict(record(dict(new["settings"]["heads"])))}
    )
