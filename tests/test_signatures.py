"""The public builders show every setting they take: keyword-only, typed, documented, read from the config.

`compute_iis` and `fit_heads` take each `HeadsConfig` field as a keyword, the concept-bank builders
each `ConceptsConfig` field they use; a field added to a config fails here until its builder takes
it. No signature hides its settings behind ``**kwargs``: the one catch-all left, ``**deprecated``,
accepts the old spellings only (with a FutureWarning) for one release.
"""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch

from iis_hf.concepts import ConceptBank
from iis_hf.concepts.bank import TEXT_CONCEPT_SETTINGS
from iis_hf.config import ConceptsConfig, ExtractionConfig, HeadsConfig, config_fields
from iis_hf.errors import IISError
from iis_hf.heads import fit_heads
from iis_hf.score import compute_iis

KEYWORD_ONLY = inspect.Parameter.KEYWORD_ONLY
# The ConceptsConfig fields no builder takes, and why: the kind is which builder is called, and a saved
# bank is read by `ConceptBank.from_pretrained`, not built.
NO_BUILDER = {"concept_kind", "concept_bank"}
PROTOTYPE_SETTINGS = ("images_per_class", "num_concepts")
# `from_text(words, clip_model, ...)`: its two leading arguments stay positional, as they always were.
POSITIONAL = {"clip_model"}


def parameters(function) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(function).parameters)


def docstring_args(function) -> str:
    doc = inspect.getdoc(function) or ""
    assert "Args:" in doc, function.__qualname__
    return doc[doc.index("Args:") :]


def assert_takes(function, names, positional=frozenset()) -> None:
    """Each of `names` is a typed parameter of `function` that defaults to None ("the config's value")
    and is named in its docstring's Args; keyword-only unless listed in `positional`."""
    params, args = parameters(function), docstring_args(function)
    for name in names:
        assert name in params, f"{function.__qualname__} does not take {name}="
        param = params[name]
        assert param.kind is KEYWORD_ONLY or name in positional, (function.__qualname__, name)
        assert param.default is None, (function.__qualname__, name, param.default)
        assert param.annotation is not inspect.Parameter.empty, (function.__qualname__, name)
        assert name in args, f"{function.__qualname__}'s docstring does not say what {name} is"


def catch_alls(function) -> list[str]:
    return [p.name for p in parameters(function).values() if p.kind is inspect.Parameter.VAR_KEYWORD]


@pytest.mark.parametrize("builder", [compute_iis, fit_heads])
def test_every_head_setting_is_a_keyword_of_the_head_builders(builder):
    assert_takes(builder, [f.name for f in config_fields(HeadsConfig)])
    assert catch_alls(builder) == ["deprecated"]


def test_every_concept_setting_is_a_keyword_of_one_bank_builder():
    names = {f.name for f in config_fields(ConceptsConfig)}
    taken = set(PROTOTYPE_SETTINGS) | set(TEXT_CONCEPT_SETTINGS) | POSITIONAL
    assert names == taken | NO_BUILDER, "a new ConceptsConfig field: give it to its builder, or to NO_BUILDER"
    assert_takes(ConceptBank.from_prototypes, ["images_per_class"])
    assert "num_concepts" in docstring_args(ConceptBank.from_prototypes)  # None: every prototype, not 200
    assert parameters(ConceptBank.from_prototypes)["num_concepts"].kind is KEYWORD_ONLY
    assert_takes(ConceptBank.from_text, [*TEXT_CONCEPT_SETTINGS, *POSITIONAL], positional=POSITIONAL)
    assert catch_alls(ConceptBank.from_prototypes) == []
    assert catch_alls(ConceptBank.from_text) == ["deprecated"]


def test_the_prototype_builder_takes_the_extraction_settings_it_uses():
    assert_takes(
        ConceptBank.from_prototypes, ["layer", "pooling", "batch_size", "precision", "preprocessing"]
    )
    assert {"layer", "pooling", "batch_size", "precision", "preprocessing"} <= {
        f.name for f in config_fields(ExtractionConfig)
    }


def test_help_shows_every_setting_and_no_hidden_keywords():
    text = inspect.signature(compute_iis).format() if hasattr(inspect.Signature, "format") else None
    text = text or str(inspect.signature(compute_iis))
    for f in config_fields(HeadsConfig):
        assert f"{f.name}: " in text
    assert "**kwargs" not in text and "**settings" not in text and "**deprecated" in text


def planted(n=60, dim=6, classes=3):
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % classes
    features = torch.randn(n, dim, generator=generator) + 3 * torch.nn.functional.one_hot(labels, dim)
    return features, labels, torch.randn(4, dim, generator=generator)


def test_a_keyword_overrides_only_what_it_names_and_none_keeps_the_config():
    features, labels, concepts = planted()
    config = HeadsConfig(sparsity_ratios=[0.0, 0.5], epochs=2, head_batch_size=16, head_precision="fp32")
    kept = compute_iis(features, labels, features, labels, concepts, config=config, progress=False)
    assert kept.settings["heads"]["epochs"] == 2 and kept.settings["heads"]["head_batch_size"] == 16
    changed = compute_iis(
        features, labels, features, labels, concepts, config=config, progress=False, head_batch_size=8
    )
    assert changed.settings["heads"]["head_batch_size"] == 8 and changed.settings["heads"]["epochs"] == 2


def test_the_old_spellings_still_work_with_a_future_warning_and_other_keywords_are_refused():
    features, labels, concepts = planted()
    common = dict(sparsity_ratios=[0.0, 0.5], epochs=1, progress=False)
    with pytest.warns(
        FutureWarning, match=r"compute_iis\(batch_size=\.\.\.\) is deprecated.*head_batch_size="
    ):
        result = compute_iis(features, labels, features, labels, concepts, batch_size=8, **common)
    assert result.settings["heads"]["head_batch_size"] == 8
    with (
        pytest.raises(IISError, match="got both batch_size= and head_batch_size="),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", FutureWarning)
        compute_iis(features, labels, features, labels, concepts, batch_size=8, head_batch_size=8, **common)
    with pytest.raises(IISError, match=r"unknown setting\(s\) head_weight_decay; the settings are"):
        compute_iis(features, labels, features, labels, concepts, head_weight_decay=0.1, **common)
    with pytest.warns(FutureWarning, match=r"fit_heads\(precision=\.\.\.\)"):
        fit = fit_heads(
            features, labels, features, labels, concepts, num_classes=3, precision="fp32", **common
        )
    assert fit.precision == "fp32"


def test_from_text_takes_projection_epochs_and_its_old_name_with_a_warning():
    with pytest.raises(IISError, match="projection_epochs must be an int >= 1"):
        ConceptBank.from_text(["red", "blue"], features=torch.zeros(4, 2), clip_similarities=torch.zeros(4, 2), projection_epochs=0)  # fmt: skip
    with (
        pytest.warns(FutureWarning, match=r"from_text\(epochs=\.\.\.\).*projection_epochs="),
        pytest.raises(IISError, match="projection_epochs must be an int >= 1"),
    ):
        ConceptBank.from_text(["red", "blue"], features=torch.zeros(4, 2), clip_similarities=torch.zeros(4, 2), epochs=0)  # fmt: skip
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['epoch'\]"):
        ConceptBank.from_text(["red"], features=torch.zeros(4, 2), epoch=5)


def test_the_top_level_exports_one_way_per_question_and_the_rest_from_its_module():
    import iis_hf

    assert set(iis_hf.__all__) == {
        "__version__", "score_model", "compute_iis", "inherent_interpretability_score", "extract_features",
        "ConceptBank", "InterpretationHead", "load_metric", "IISTrainer", "IISTrainingArguments",
        "IISModelForImageClassification", "compare_models", "ScoringConfig", "ExtractionConfig",
        "ConceptsConfig", "HeadsConfig", "IISResult", "IISError",
    }  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        for name in iis_hf.__all__:
            getattr(iis_hf, name)
    for name, module in iis_hf._MOVED.items():
        with pytest.warns(FutureWarning, match=rf"from iis_hf\.{module} import {name}`"):
            moved = getattr(iis_hf, name)
        assert moved is getattr(__import__(f"iis_hf.{module}", fromlist=[name]), name)
    with pytest.raises(AttributeError):
        iis_hf.no_such_name  # noqa: B018
