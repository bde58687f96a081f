"""IISTrainer's paper-configuration options: a warm-started head, refreshed concepts, concepts sized
by the representation width, any loss ratio, and Trainer's label smoothing and `compute_loss_func`."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from conftest import build_tiny_model, tiny_image_processor
from trainer_utils import make_args, make_trainer, random_bank, splits
from transformers import HfArgumentParser, Trainer, TrainerCallback, TrainingArguments

from iis_hf import ConceptBank, IISModelForImageClassification, IISTrainer, IISTrainingArguments
from iis_hf.config import HeadsConfig, validate_sparsity_ratios
from iis_hf.demo import image_classification_collator
from iis_hf.heads import InterpretationHeads, fit_heads
from iis_hf.training.trainer import ConceptRefresh, concept_count, rebuilt_bank

WIDTH = 32  # the tiny ViT's hidden size: its representation width D


def auto_trainer(output_dir, train=None, evaluation=None, **overrides) -> IISTrainer:
    """An IISTrainer that builds its own ('auto') prototype concepts with the starting backbone."""
    processor = tiny_image_processor()
    if train is None:
        train, evaluation = splits()
    return IISTrainer(
        model=build_tiny_model("vit"),
        args=make_args(output_dir, **overrides),
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=processor,
        data_collator=image_classification_collator(processor),
    )


def batch_of(rows) -> dict[str, torch.Tensor]:
    return image_classification_collator(tiny_image_processor())(list(rows))


def plain_args(output_dir, **overrides) -> TrainingArguments:
    """TrainingArguments with the settings `make_args` uses, for a plain Trainer."""
    settings = dict(
        output_dir=str(output_dir), per_device_train_batch_size=8, learning_rate=1e-3, save_strategy="no",
        report_to=[], use_cpu=True, disable_tqdm=True, logging_strategy="no", seed=0, data_seed=0,
        remove_unused_columns=False,
    )  # fmt: skip
    settings.update(overrides)
    return TrainingArguments(**settings)


# ---------------------------------------------------------------- the arguments
def test_the_new_arguments_default_to_the_earlier_behaviour_and_parse_from_the_command_line(tmp_path):
    args = make_args(tmp_path)
    assert (args.iis_head_init, args.iis_concept_refresh_epochs, args.iis_concepts_per_feature) == (
        "random",
        None,
        None,
    )
    parser = HfArgumentParser(IISTrainingArguments)
    (parsed,) = parser.parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--use_cpu", "--report_to", "none", "--iis_head_init", "warm",
         "--iis_concept_refresh_epochs", "0.5", "--iis_concepts_per_feature", "0.25",
         "--iis_sparsity_ratios", "0.1"]
    )  # fmt: skip
    assert parsed.iis_head_init == "warm" and parsed.iis_concept_refresh_epochs == 0.5
    assert parsed.iis_concepts_per_feature == 0.25 and parsed.iis_sparsity_ratios == [0.1]
    saved = json.loads(parsed.to_json_string())
    assert saved["iis_head_init"] == "warm" and saved["iis_concepts_per_feature"] == 0.25
    with pytest.raises(SystemExit):  # argparse refuses a choice it does not know
        parser.parse_args_into_dataclasses(["--output_dir", str(tmp_path), "--iis_head_init", "cold"])


@pytest.mark.parametrize(
    "settings, name",
    [
        ({"iis_head_init": "cold"}, "iis_head_init"),
        ({"iis_concept_refresh_epochs": 0}, "iis_concept_refresh_epochs"),
        ({"iis_concept_refresh_epochs": float("nan")}, "iis_concept_refresh_epochs"),
        ({"iis_concepts_per_feature": -0.5}, "iis_concepts_per_feature"),
        ({"iis_concepts_per_feature": True}, "iis_concepts_per_feature"),
        ({"iis_concepts_per_feature": 0.5, "iis_concept_bank": "my/bank"}, "iis_concepts_per_feature"),
    ],
)
def test_bad_values_are_a_value_error_naming_the_argument(tmp_path, settings, name):
    with pytest.raises(ValueError, match=name):
        make_args(tmp_path, **settings)


# ---------------------------------------------------------------- a warm-started head
class HeadAtStart(TrainerCallback):
    """The head's state when training begins, i.e. before the first optimisation step."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.state = {k: v.detach().clone() for k, v in model.iis_head.state_dict().items()}


def accuracy(head, features, labels) -> float:
    with torch.no_grad():
        return float((head.eval()(features)[0].argmax(-1) == labels).double().mean())


def test_a_warm_head_starts_as_accurate_as_a_head_fitted_afresh_and_a_resumed_run_keeps_its_own(tmp_path):
    train, evaluation = splits(per_class=12)
    settings = dict(
        iis_head_init="warm", max_steps=2, iis_eval_epochs=10, iis_refit_head=False, save_strategy="steps",
        save_steps=1,
    )  # fmt: skip
    trainer = make_trainer(tmp_path / "warm", train=train, evaluation=evaluation, **settings)
    random_head = {k: v.clone() for k, v in trainer.iis_model.iis_head.state_dict().items()}
    train_x, train_y = trainer.representations_of(train)  # the starting backbone's features
    eval_x, eval_y = trainer.representations_of(evaluation)
    start = HeadAtStart()
    trainer.add_callback(start)
    trainer.train()
    assert not torch.equal(start.state["weight"], random_head["weight"])
    warm = InterpretationHeads(random_bank(), 3, [0.9])
    warm.load_state_dict(start.state)
    # a head fitted afresh on the same features with the same recipe (refit_head's)
    recipe = HeadsConfig(sparsity_ratios=[0.9], epochs=10)  # the protocol's own selection, as refit_head
    fresh = fit_heads(
        train_x, train_y, eval_x, eval_y, random_bank(), num_classes=3, config=recipe, seed=0, device="cpu",
        progress=False,
    ).heads  # fmt: skip
    assert abs(accuracy(warm, train_x, train_y) - accuracy(fresh, train_x, train_y)) <= 0.02

    resumed = make_trainer(tmp_path / "resumed", train=train, evaluation=evaluation, **settings)
    resumed.warm_start_head = lambda: pytest.fail("a resumed run takes its head from the checkpoint")
    resumed.train(resume_from_checkpoint=str(tmp_path / "warm" / "checkpoint-1"))
    final = trainer.iis_model.state_dict()
    assert all(torch.equal(v, final[k]) for k, v in resumed.iis_model.state_dict().items())


# ---------------------------------------------------------------- refreshed concepts
def state_of(trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.iis_model.state_dict().items()}


class BankAtStart(TrainerCallback):
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.vectors = model.concept_bank.vectors.clone()


def test_refreshes_fall_where_training_passes_a_multiple_of_the_period():
    calls = []
    refresh = ConceptRefresh(0.5, lambda: calls.append(state.epoch))
    state = SimpleNamespace(epoch=None)
    refresh.on_train_begin(None, state, None)
    for step in range(1, 8):  # 3 steps an epoch
        state.epoch = step / 3
        refresh.on_step_end(None, state, None)
    assert calls == [2 / 3, 1.0, 5 / 3, 2.0]
    resumed = ConceptRefresh(0.5, lambda: calls.append(("again", state.epoch)))
    state.epoch = 1.0  # resumed from a checkpoint saved right after the refresh at epoch 1
    resumed.on_train_begin(None, state, None)
    state.epoch = 4 / 3
    resumed.on_step_end(None, state, None)
    assert calls[-1] == 2.0  # no second refresh for epoch 1


def test_refreshed_concepts_follow_the_backbone_are_saved_and_resume_bit_for_bit(tmp_path):
    # 18 training rows in batches of 6: 3 steps an epoch; refreshes at steps 3 and 6, checkpoint at 4
    settings = dict(
        per_device_train_batch_size=6, max_steps=6, learning_rate=1e-2, iis_concept_refresh_epochs=1,
        save_strategy="steps", save_steps=4,
    )  # fmt: skip
    train, evaluation = splits()
    full = auto_trainer(tmp_path / "full", train, evaluation, **settings)
    start = full.iis_model.concept_bank
    full.train()
    bank = full.iis_model.concept_bank
    assert bank.num_concepts == start.num_concepts and bank.names == start.names  # the same parts
    assert not torch.equal(bank.vectors, start.vectors)  # embedded by the backbone that moved
    assert bank.provenance["refreshed_at_step"] == 6
    assert torch.equal(full.iis_model.iis_head.concepts.vectors, bank.vectors)  # the head projects onto it
    # a deterministic function of the backbone: built again from the final backbone, it is the same
    again = rebuilt_bank(start, full.iis_model.backbone, train, tiny_image_processor(), full.args)
    assert torch.equal(again.vectors, bank.vectors)

    checkpoint = tmp_path / "full" / "checkpoint-4"
    at_step_3 = ConceptBank.from_pretrained(checkpoint)
    assert at_step_3.provenance["refreshed_at_step"] == 3 and not torch.equal(
        at_step_3.vectors, start.vectors
    )
    full.save_model()
    assert torch.equal(ConceptBank.from_pretrained(tmp_path / "full").vectors, bank.vectors)
    reloaded = IISModelForImageClassification.from_pretrained(tmp_path / "full")
    assert torch.equal(reloaded.iis_head.concepts.vectors, bank.vectors)

    resumed = auto_trainer(tmp_path / "resumed", train, evaluation, **settings)
    loaded = BankAtStart()
    resumed.add_callback(loaded)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert torch.equal(loaded.vectors, at_step_3.vectors)  # the checkpoint's bank, not the starting one
    expected, final = state_of(full), state_of(resumed)
    assert set(final) == set(expected)
    assert all(torch.equal(final[k], expected[k]) for k in expected), [
        k for k in expected if not torch.equal(final[k], expected[k])
    ]
    assert torch.equal(resumed.iis_model.concept_bank.vectors, bank.vectors)
    assert resumed.iis_model.concept_bank.provenance["refreshed_at_step"] == 6


def test_a_refresh_needs_a_prototype_bank(tmp_path):
    with pytest.raises(ValueError, match="iis_concept_refresh_epochs rebuilds prototype concepts"):
        make_trainer(tmp_path, iis_concept_refresh_epochs=1)  # a bank of random vectors has no recipe


# ---------------------------------------------------------------- the number of concepts
def test_concepts_per_feature_sizes_the_auto_bank_by_the_representation_width(tmp_path):
    trainer = auto_trainer(tmp_path, iis_concepts_per_feature=0.25, iis_num_concepts=20, max_steps=1)
    bank = trainer.iis_model.concept_bank
    assert bank.dim == WIDTH and bank.num_concepts == round(0.25 * WIDTH) == 8  # not iis_num_concepts
    assert trainer.iis_model.iis_head.num_concepts == 8
    assert bank.provenance["num_concepts_per_feature"] == 0.25
    assert bank.provenance["representation_dim"] == WIDTH
    trainer.save_model()
    assert json.loads((tmp_path / "concept_bank.json").read_text())["num_concepts"] == 8
    assert json.loads((tmp_path / "iis_config.json").read_text())["num_concepts"] == 8
    assert concept_count(0.01, WIDTH) == 2 and concept_count(1.5, WIDTH) == 48  # at least 2


# ---------------------------------------------------------------- any loss ratio
@pytest.mark.parametrize("ratios", [[0.1], [0.1, 0.5, 0.9]])
def test_any_loss_ratio_list_with_0_1_trains_saves_and_reloads(tmp_path, ratios):
    assert validate_sparsity_ratios(ratios) == ratios
    trainer = make_trainer(tmp_path, iis_sparsity_ratios=ratios, max_steps=2, iis_eval=False)
    trainer.train()
    metrics = trainer.evaluate()
    assert {f"eval_model_head_accuracy_{r:g}" for r in ratios} <= set(metrics)
    trainer.save_model()
    reloaded = IISModelForImageClassification.from_pretrained(tmp_path)
    assert reloaded.sparsity_ratios == ratios
    pixels = batch_of(splits()[1])["pixel_values"]
    probabilities = reloaded.predict_from_concepts(pixels, sparsity_ratio=0.1)
    torch.testing.assert_close(probabilities.sum(-1), torch.ones(len(pixels)))


# ---------------------------------------------------------------- Trainer's loss options
def plain_and_iis(tmp_path, iis_weight: float, **overrides):
    """An IISTrainer and a plain Trainer over the same backbone (so the same logits)."""
    iis = make_trainer(tmp_path / "iis", iis_weight=iis_weight, **overrides)
    plain = Trainer(model=iis.iis_model.backbone, args=plain_args(tmp_path / "plain", **overrides))
    return iis, plain


@pytest.mark.parametrize("num_items", [None, 24])
def test_label_smoothing_makes_the_classification_term_a_plain_trainers_loss(tmp_path, num_items):
    iis, plain = plain_and_iis(tmp_path, iis_weight=0.0, label_smoothing_factor=0.1)
    inputs = batch_of(splits()[0].select(range(8)))
    items = None if num_items is None else torch.tensor(num_items)
    model = iis.iis_model.eval()
    with torch.no_grad():
        model.backbone.classifier.weight.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(0))
        ours, outputs = iis.compute_loss(model, dict(inputs), return_outputs=True, num_items_in_batch=items)
        theirs = plain.compute_loss(model.backbone, dict(inputs), num_items_in_batch=items)
        unsmoothed = F.cross_entropy(outputs.logits, inputs["labels"], reduction="sum") / (num_items or 8)
    assert abs(float(ours) - float(theirs)) <= 1e-6
    assert abs(float(ours) - float(unsmoothed)) * (num_items or 8) > 0.1  # confident logits: smoothing counts
    # the interpretation term is smoothed alike: CE with label_smoothing, averaged over the ratios
    model.iis_weight = 0.5
    with torch.no_grad():
        total, outputs = iis.compute_loss(model, dict(inputs), return_outputs=True, num_items_in_batch=items)
    heads = [
        F.cross_entropy(logits, inputs["labels"], label_smoothing=0.1, reduction="sum")
        for logits in outputs.iis_logits
    ]
    expected = float(theirs) + 0.5 * float(sum(heads) / len(heads)) / (num_items or 8)
    assert abs(float(total) - expected) <= 1e-6


def test_label_smoothing_at_iis_weight_zero_trains_as_a_plain_trainer(tmp_path):
    train, _ = splits()
    collate = image_classification_collator(tiny_image_processor())
    settings = dict(per_device_train_batch_size=6, max_steps=3, label_smoothing_factor=0.1)
    plain = Trainer(
        model=build_tiny_model("vit"),
        args=plain_args(tmp_path / "plain", **settings),
        train_dataset=train,
        data_collator=collate,
    )
    plain.train()
    iis = make_trainer(tmp_path / "iis", train=train, iis_weight=0.0, iis_refit_head=False, **settings)
    iis.train()
    for name, value in plain.model.state_dict().items():
        torch.testing.assert_close(
            iis.iis_model.backbone.state_dict()[name], value, rtol=1e-5, atol=1e-6, msg=name
        )


def test_compute_loss_func_is_called_as_trainer_calls_it_and_its_value_is_the_classification_term(
    tmp_path,
):
    calls = []

    def compute_loss_func(outputs, labels, num_items_in_batch=None):
        calls.append((outputs.logits.shape, labels.shape, num_items_in_batch))
        return (
            3.0
            * F.cross_entropy(outputs.logits, labels, reduction="sum")
            / (num_items_in_batch or len(labels))
        )

    train, evaluation = splits()
    processor = tiny_image_processor()
    trainer = IISTrainer(
        model=build_tiny_model("vit"),
        args=make_args(
            tmp_path, per_device_train_batch_size=6, gradient_accumulation_steps=2, max_steps=1, iis_weight=0.0,
            iis_refit_head=False,
        ),
        train_dataset=train,
        processing_class=processor,
        data_collator=image_classification_collator(processor),
        concept_bank=random_bank(),
        compute_loss_func=compute_loss_func,
    )  # fmt: skip
    trainer.train()
    assert len(calls) == 2  # one per micro-batch of the accumulated step
    assert all(shape == (6, 3) and int(items) == 12 for shape, _, items in calls)  # the accumulated count
    inputs = batch_of(evaluation)
    model = trainer.iis_model.eval()
    with torch.no_grad():
        loss, outputs = trainer.compute_loss(model, dict(inputs), return_outputs=True)
        expected = compute_loss_func(outputs, inputs["labels"])
    assert len(calls) == 4 and torch.equal(loss, expected)  # its value, unchanged at iis_weight=0
