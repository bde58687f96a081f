"""Drop-in means drop-in (issue 21, item 2): IISTrainer takes a plain `TrainingArguments`, and a LoRA run
with a new classifier reopens from its folder: `from_pretrained`, `ConceptClassifier` / `explain_prediction`
and `iis-hf explain` all predict what the trained model in memory predicts."""

from __future__ import annotations

import json

import pytest
import torch
import transformers as tf
from conftest import build_tiny_model, make_image_dataset, save_tiny_model, tiny_image_processor
from trainer_utils import random_bank, splits

from iis_hf import IISModelForImageClassification, IISTrainer, IISTrainingArguments
from iis_hf.cli import main
from iis_hf.demo import image_classification_collator
from iis_hf.explain import ConceptClassifier, explain_prediction

NEW_LABELS = ["ant", "bee", "cat", "dog"]  # the base model's head has 3 classes; the LoRA run trains 4


def plain_args(output_dir, **overrides) -> tf.TrainingArguments:
    """What a plain Trainer script passes (remove_unused_columns=False, as transformers' image tutorial)."""
    settings = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        num_train_epochs=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        logging_strategy="no",
        seed=0,
        data_seed=0,
        remove_unused_columns=False,
    )
    settings.update(overrides)
    return tf.TrainingArguments(**settings)


FAST_IIS = {"iis_eval_epochs": 2, "iis_refit_head": False}


def trainer_for(model, args, train, **kwargs) -> IISTrainer:
    processor = tiny_image_processor()
    return IISTrainer(
        model,
        args=args,
        train_dataset=train,
        processing_class=processor,
        data_collator=image_classification_collator(processor),
        concept_bank=random_bank(),
        **kwargs,
    )


def pixels(rows) -> torch.Tensor:
    return tiny_image_processor()([row["image"] for row in rows], return_tensors="pt")["pixel_values"]


@torch.no_grad()
def outputs_of(model: IISModelForImageClassification, batch: torch.Tensor):
    model.eval()
    out = model(pixel_values=batch)
    return out.logits, out.iis_logits


# ---------------------------------------------------------------- 1. a plain TrainingArguments
def test_plain_training_arguments_train_and_the_saved_folder_reopens(tmp_path):
    train, evaluation = splits()
    args = plain_args(tmp_path / "out", lr_scheduler_type="cosine", max_steps=3)
    trainer = trainer_for(build_tiny_model("vit"), args, train, iis_args={"iis_weight": 0.3, **FAST_IIS})
    assert isinstance(trainer.args, IISTrainingArguments)
    assert trainer.args.iis_weight == 0.3 and trainer.iis_model.iis_weight == 0.3  # from iis_args
    assert trainer.args.iis_sparsity_ratios == [0.5]  # an IIS setting not given: its default
    assert trainer.args.lr_scheduler_type == args.lr_scheduler_type and trainer.args.max_steps == 3
    assert trainer.args.remove_unused_columns is False and trainer.args.ddp_find_unused_parameters is False
    before = {k: v.clone() for k, v in trainer.iis_model.backbone.state_dict().items()}
    trainer.train()
    assert trainer.state.global_step == 3
    after = trainer.iis_model.backbone.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it trained
    trainer.save_model()
    reopened = IISModelForImageClassification.from_pretrained(tmp_path / "out")
    batch = pixels(evaluation)
    for mine, theirs in zip(outputs_of(trainer.iis_model, batch), outputs_of(reopened, batch)):
        torch.testing.assert_close(mine, theirs)
    saved = json.loads((tmp_path / "out" / "training_args.json").read_text())
    assert saved["iis_weight"] == 0.3 and saved["max_steps"] == 3


def test_from_training_arguments_keeps_every_field_and_checks_iis_args(tmp_path):
    args = plain_args(
        tmp_path, eval_strategy="steps", eval_steps=2, hub_token="secret", ddp_find_unused_parameters=True
    )
    built = IISTrainingArguments.from_training_arguments(args)
    for field in tf.TrainingArguments.__dataclass_fields__.values():
        if field.init:
            assert getattr(built, field.name) == getattr(args, field.name), field.name
    assert built.iis_weight == IISTrainingArguments(output_dir=str(tmp_path)).iis_weight
    with pytest.raises(TypeError, match="unknown IIS setting 'iis_wieght'"):
        IISTrainingArguments.from_training_arguments(args, {"iis_wieght": 0.3})
    with pytest.raises(TypeError, match="'learning_rate' is a TrainingArguments field"):
        IISTrainingArguments.from_training_arguments(args, {"learning_rate": 0.3})
    with pytest.raises(ValueError, match="iis_weight must be"):
        IISTrainingArguments.from_training_arguments(args, {"iis_weight": -1.0})
    with pytest.raises(ValueError, match="in one place"):
        IISTrainingArguments.from_training_arguments(built, {"iis_weight": 0.3})
    with pytest.raises(TypeError, match="TrainingArguments or IISTrainingArguments"):
        IISTrainer(build_tiny_model("vit"), args={"output_dir": str(tmp_path)})


# ---------------------------------------------------------------- 2. LoRA with a new classifier
def lora_with_new_classifier(base: str, modules_to_save=("classifier",)):
    """The PEFT recipe for new labels: a base model given the new id2label, then LoRA on its attention."""
    peft = pytest.importorskip("peft")
    model = tf.AutoModelForImageClassification.from_pretrained(
        base,
        id2label=dict(enumerate(NEW_LABELS)),
        label2id={name: i for i, name in enumerate(NEW_LABELS)},
        ignore_mismatched_sizes=True,
    )
    # ViT's attention projections: q_proj/v_proj in transformers 5, query/value in 4.x
    config = peft.LoraConfig(
        r=4, target_modules=["q_proj", "v_proj", "query", "value"], modules_to_save=list(modules_to_save)
    )
    return peft.get_peft_model(model, config)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """A LoRA + new-classifier run trained and saved by IISTrainer: (trainer, folder, evaluation rows)."""
    root = tmp_path_factory.mktemp("lora")
    base = save_tiny_model(root / "base", "vit", num_labels=3)
    data = make_image_dataset(num_classes=len(NEW_LABELS), per_class=6)
    split = data.train_test_split(test_size=0.25, seed=0, stratify_by_column="label")
    args = plain_args(root / "out", num_train_epochs=2)
    trainer = trainer_for(
        lora_with_new_classifier(base), args, split["train"], iis_args={"iis_eval_epochs": 2}
    )
    trainer.train()  # with the default refit of the head
    trainer.save_model()
    return trainer, root / "out", split["test"]


def test_a_lora_folder_with_a_new_classifier_reopens_with_from_pretrained(lora_run):
    trainer, folder, evaluation = lora_run
    assert (folder / "adapter_config.json").is_file() and not (folder / "config.json").exists()
    reopened = IISModelForImageClassification.from_pretrained(folder)
    assert reopened.config.num_labels == len(NEW_LABELS)
    assert [reopened.config.id2label[i] for i in range(len(NEW_LABELS))] == NEW_LABELS
    batch = pixels(evaluation)
    for mine, theirs in zip(outputs_of(trainer.iis_model, batch), outputs_of(reopened, batch)):
        torch.testing.assert_close(mine, theirs)


def test_a_lora_folder_saved_before_the_labels_were_recorded_still_reopens(lora_run, tmp_path):
    """An adapter folder whose iis_config.json has no id2label: the head's class count sizes the base."""
    import shutil

    trainer, folder, evaluation = lora_run
    old = shutil.copytree(folder, tmp_path / "old")
    config = json.loads((old / "iis_config.json").read_text())
    config.pop("id2label", None), config.pop("label2id", None)
    (old / "iis_config.json").write_text(json.dumps(config))
    reopened = IISModelForImageClassification.from_pretrained(old)
    assert reopened.config.num_labels == len(NEW_LABELS)
    batch = pixels(evaluation)
    torch.testing.assert_close(outputs_of(trainer.iis_model, batch)[0], outputs_of(reopened, batch)[0])


def test_a_lora_folder_reopens_as_a_concept_classifier_and_explains_the_same(lora_run):
    trainer, folder, evaluation = lora_run
    images = [row["image"] for row in evaluation]
    in_memory = ConceptClassifier(trainer.iis_model.eval(), image_processor=tiny_image_processor())
    reopened = ConceptClassifier(str(folder))
    assert reopened.id2label == NEW_LABELS
    for mine, theirs in zip(in_memory(images, top_k=2), reopened(images, top_k=2)):
        assert [p["label"] for p in mine] == [p["label"] for p in theirs]
        assert [p["score"] for p in mine] == pytest.approx([p["score"] for p in theirs], abs=1e-5)
    mine, theirs = explain_prediction(in_memory, images[0]), explain_prediction(str(folder), images[0])
    assert theirs.label == mine.label and theirs.logit == pytest.approx(mine.logit, abs=1e-5)


def test_iis_hf_explain_reopens_a_lora_folder(lora_run, tmp_path, capsys):
    trainer, folder, evaluation = lora_run
    image, figure = tmp_path / "x.png", tmp_path / "y.png"
    evaluation[0]["image"].save(image)
    expected = explain_prediction(
        ConceptClassifier(trainer.iis_model.eval(), image_processor=tiny_image_processor()), str(image)
    )
    capsys.readouterr()
    code = main(["explain", "--model", str(folder), "--image", str(image), "--output", str(figure), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert figure.is_file()
    report = json.loads(captured.out)
    assert report["label"] == expected.label and report["logit"] == pytest.approx(expected.logit, abs=1e-5)


def test_a_new_classifier_the_adapter_does_not_save_is_a_clear_error(tmp_path):
    """Without modules_to_save the trained classifier is not in the folder: refuse, never a random one."""
    base = save_tiny_model(tmp_path / "base", "vit", num_labels=3)
    model = IISModelForImageClassification(lora_with_new_classifier(base, modules_to_save=()), random_bank())
    model.save_pretrained(tmp_path / "out")
    with pytest.raises(
        ValueError, match=r"does not fit the adapter: \['classifier.bias', 'classifier.weight'\]"
    ):
        IISModelForImageClassification.from_pretrained(tmp_path / "out")
