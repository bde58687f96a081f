"""Every public default that mirrors a setting reads that setting's one default.

A default written twice drifts: the model's loss ratios were once (0.9,) while the Trainer's were
(0.5,), and `iis_model_from_heads` weighed the loss 1.0 against the documented 0.5. Each signature
below is pinned to the constant or config field it must agree with.
"""

from __future__ import annotations

import dataclasses
import inspect

from iis_hf.config import (
    DEFAULT_IIS_WEIGHT,
    DEFAULT_LOSS_SPARSITY_RATIOS,
    DEFAULT_SPARSITY_RATIOS,
    ConceptsConfig,
    HeadsConfig,
    ScoringConfig,
    config_fields,
)


def default_of(function, name):
    return inspect.signature(function).parameters[name].default


def field_defaults(config: type) -> dict:
    return {
        f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        for f in config_fields(config)
    }


def test_the_loss_defaults_agree_between_the_model_the_explainer_the_head_config_and_the_trainer():
    from iis_hf.explain import iis_model_from_heads
    from iis_hf.modeling import IISModelForImageClassification
    from iis_hf.modeling.head_config import IISHeadConfig
    from iis_hf.training.arguments import IISTrainingArguments

    model_init = IISModelForImageClassification.__init__
    assert tuple(default_of(model_init, "sparsity_ratios")) == DEFAULT_LOSS_SPARSITY_RATIOS
    assert default_of(model_init, "iis_weight") == DEFAULT_IIS_WEIGHT
    assert default_of(iis_model_from_heads, "iis_weight") == DEFAULT_IIS_WEIGHT
    assert {f.name: f for f in dataclasses.fields(IISHeadConfig)}["iis_weight"].default == DEFAULT_IIS_WEIGHT
    trainer = {f.name: f for f in dataclasses.fields(IISTrainingArguments)}
    assert trainer["iis_weight"].default == DEFAULT_IIS_WEIGHT
    assert tuple(trainer["iis_sparsity_ratios"].default_factory()) == DEFAULT_LOSS_SPARSITY_RATIOS


def test_compute_iis_and_fit_heads_default_to_the_heads_config():
    """Their head settings are `HeadsConfig`'s (config=None is `HeadsConfig()`), and their seed is the
    scoring seed's default."""
    from iis_hf.heads import fit_heads
    from iis_hf.score import compute_iis

    for function in (compute_iis, fit_heads):
        assert default_of(function, "config") is None
        assert default_of(function, "seed") == field_defaults(ScoringConfig)["seed"]
    assert default_of(compute_iis, "progress") == field_defaults(ScoringConfig)["progress"]
    assert field_defaults(HeadsConfig)["sparsity_ratios"] == list(DEFAULT_SPARSITY_RATIOS)


def test_every_trainer_argument_that_mirrors_a_setting_has_its_default():
    from iis_hf.training.arguments import (
        CONCEPTS_PREFIX,
        EVAL_PREFIX,
        TRAINER_CONCEPT_SETTINGS,
        IISTrainingArguments,
    )

    trainer = {f.name: f for f in dataclasses.fields(IISTrainingArguments)}

    def trainer_default(name):
        f = trainer[name]
        return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default

    for name, default in field_defaults(HeadsConfig).items():
        expected = [default] if name == "learning_rate" else default  # one value or a grid: a list there
        assert trainer_default(EVAL_PREFIX + name) == expected, name
    concepts = field_defaults(ConceptsConfig)
    for name in TRAINER_CONCEPT_SETTINGS:
        assert trainer_default(CONCEPTS_PREFIX + name) == concepts[name], name
