"""IISTrainer and IISModelForImageClassification: loss, scaling, saving, resuming, processes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import build_tiny_model, cpu_subprocess_env, tiny_image_processor, torchrun_two_processes
from hub_server import fake_hub_fixture  # noqa: F401  (the `hub` fixture)
from safetensors.torch import load_file
from trainer_utils import make_args, make_trainer, random_bank, splits
from transformers import (
    AutoModelForImageClassification,
    HfArgumentParser,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from iis_hf import IISModelForImageClassification, IISTrainer, IISTrainingArguments
from iis_hf.demo import image_classification_collator

REPO = Path(__file__).resolve().parents[1]


def pixel_batch(n=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=generator), torch.arange(n) % 3


def test_forward_returns_logits_interpretations_and_the_combined_loss():
    model = IISModelForImageClassification(build_tiny_model("vit"), random_bank(), [0.5, 0.9], iis_weight=0.3)
    pixels, labels = pixel_batch()
    out = model(pixel_values=pixels, labels=labels)
    assert out.logits.shape == (6, 3) and out.iis_logits.shape == (2, 6, 3)
    assert out.concept_activations.shape == (2, 6, 20) and out.representations.shape == (6, 32)
    backbone_cls = model.backbone.vit(pixels).last_hidden_state[:, 0]
    torch.testing.assert_close(out.representations, backbone_cls)
    expected_iis = (
        F.cross_entropy(out.iis_logits[0], labels) + F.cross_entropy(out.iis_logits[1], labels)
    ) / 2
    expected = F.cross_entropy(out.logits, labels) + 0.3 * expected_iis
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(out.iis_loss, expected_iis)
    # the interpretation logits are the stand-alone head's
    head = model.iis_head.head(0.9)
    torch.testing.assert_close(head(out.representations), out.iis_logits[1], rtol=1e-5, atol=1e-5)


def test_mismatched_bank_and_bad_arguments_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="dimension 16 but ViTForImageClassification gives 32"):
        IISModelForImageClassification(build_tiny_model("vit"), random_bank(dim=16))
    with pytest.raises(ValueError, match=r"outside \[0, 1\)"):
        make_args(tmp_path, iis_sparsity_ratios=[0.5, 1.0])
    with pytest.raises(ValueError, match=r"outside \[0, 1\)"):
        make_args(tmp_path, iis_eval_sparsity_ratios=[-0.1, 0.5])
    with pytest.raises(ValueError, match="--iis_weight must be a number >= 0"):
        make_args(tmp_path, iis_weight=-1)
    # a plain TrainingArguments is accepted (tests/test_dropin_peft.py); anything else is not
    with pytest.raises(TypeError, match="TrainingArguments or IISTrainingArguments"):
        IISTrainer(model=build_tiny_model("vit"), args={"output_dir": str(tmp_path)})


def plain_args(output_dir, **overrides):
    """TrainingArguments with the settings make_args uses, for a plain Trainer."""
    settings = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=8,
        learning_rate=1e-3,
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
    return TrainingArguments(**settings)


def test_dataset_without_labels_is_a_clear_error(tmp_path):
    train, _ = splits()
    processor = tiny_image_processor()

    def collate_without_labels(rows):
        return {
            "pixel_values": processor(images=[r["image"] for r in rows], return_tensors="pt")["pixel_values"]
        }

    trainer = IISTrainer(
        model=build_tiny_model("vit"),
        args=make_args(tmp_path, max_steps=1),
        train_dataset=train,
        data_collator=collate_without_labels,
        concept_bank=random_bank(),
    )
    with pytest.raises(ValueError, match="no 'labels'"):
        trainer.train()
    with pytest.raises(ValueError, match="need labels"):
        IISTrainer(
            model=build_tiny_model("vit"),
            args=make_args(tmp_path),
            train_dataset=train.remove_columns("label"),
            processing_class=processor,
        )


def test_arguments_parse_from_the_command_line_and_json(tmp_path):
    parser = HfArgumentParser(IISTrainingArguments)
    (args,) = parser.parse_args_into_dataclasses(
        [
            "--output_dir",
            str(tmp_path),
            "--iis_weight",
            "0.5",
            "--iis_sparsity_ratios",
            "0.5",
            "0.9",
            "--iis_concept_bank",
            "my/bank",
            "--use_cpu",
            "--report_to",
            "none",
        ]
    )
    assert (
        args.iis_weight == 0.5
        and args.iis_sparsity_ratios == [0.5, 0.9]
        and args.iis_concept_bank == "my/bank"
    )
    assert args.remove_unused_columns is False  # image datasets need their raw column
    assert json.loads(args.to_json_string())["iis_weight"] == 0.5
    path = tmp_path / "args.json"
    path.write_text(json.dumps({"output_dir": str(tmp_path), "iis_num_concepts": 7, "use_cpu": True}))
    (from_json,) = parser.parse_json_file(str(path))
    assert (
        from_json.iis_num_concepts == 7
        and from_json.iis_weight == 0.5
        and from_json.iis_sparsity_ratios == [0.5]  # the defaults finding 2 chose
    )


class GradientRecorder(TrainerCallback):
    def __init__(self):
        self.grads = None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def first_step_gradients(tmp_path, arch, batch, accumulation, bank):
    """Gradients of the first optimizer step, and the micro-batches (raw rows) that produced them."""
    train, _ = splits(per_class=4)
    recorder, micro_batches = GradientRecorder(), []
    trainer = make_trainer(
        tmp_path / f"{arch}-{batch}x{accumulation}",
        arch=arch,
        bank=bank,
        train=train.select(range(8)),
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        max_grad_norm=0.0,
        iis_weight=0.5,
        iis_refit_head=False,  # only the training step's micro-batches are recorded
    )
    collate = trainer.data_collator

    def recording_collate(rows):
        micro_batches.append(rows)
        return collate(rows)

    trainer.data_collator = recording_collate
    trainer.add_callback(recorder)
    trainer.train()
    return recorder.grads, micro_batches


def manual_gradients(arch, bank, micro_batches):
    """Reference: the mean over the accumulated micro-batches of each micro-batch's mean loss."""
    model = IISModelForImageClassification(build_tiny_model(arch), bank, [0.9], iis_weight=0.5).train()
    collate = image_classification_collator(tiny_image_processor())
    for rows in micro_batches:
        (model(**collate(rows)).loss / len(micro_batches)).backward()
    return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("arch", ["vit", "resnet"])
def test_gradient_accumulation_matches_one_big_batch(tmp_path, arch):
    """4 x 2 accumulated == the same 8 images in one batch (ResNet's batch norm aside: there the
    reference is the mean of the two micro-batch losses, which is what a batch of 8 means)."""
    bank = random_bank()
    accumulated, micro_batches = first_step_gradients(tmp_path, arch, 4, 2, bank)
    assert [len(rows) for rows in micro_batches] == [4, 4]
    reference = manual_gradients(arch, bank, micro_batches)
    for name, grad in reference.items():
        torch.testing.assert_close(accumulated[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    if arch == "vit":  # no batch statistics: 4 x 2 must equal 8 x 1 exactly
        single, _ = first_step_gradients(tmp_path, arch, 8, 1, bank)
        for name, grad in single.items():
            torch.testing.assert_close(accumulated[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_iis_weight_zero_reproduces_plain_trainer(tmp_path):
    train, _ = splits()
    processor = tiny_image_processor()
    args = dict(per_device_train_batch_size=6, max_steps=4, learning_rate=1e-3)
    plain = Trainer(
        model=build_tiny_model("vit"),
        args=plain_args(tmp_path / "plain", **args),
        train_dataset=train,
        data_collator=image_classification_collator(processor),
    )
    plain.train()
    iis = make_trainer(tmp_path / "iis", arch="vit", train=train, iis_weight=0.0, **args)
    iis.train()
    for name, value in plain.model.state_dict().items():
        torch.testing.assert_close(
            iis.iis_model.backbone.state_dict()[name], value, rtol=1e-5, atol=1e-6, msg=name
        )
    assert not torch.equal(
        plain.model.state_dict()["classifier.weight"],
        build_tiny_model("vit").state_dict()["classifier.weight"],
    )  # it did train


def test_training_logs_both_loss_parts_and_evaluates_iis(tmp_path):
    trainer = make_trainer(
        tmp_path,
        arch="vit",
        max_steps=4,
        logging_strategy="steps",
        logging_steps=2,
        iis_sparsity_ratios=[0.5, 0.9],
    )
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logs and all({"loss_classification", "loss_iis"} <= set(entry) for entry in logs)
    metrics = trainer.evaluate()
    expected = {
        "eval_accuracy",
        "eval_model_head_accuracy_0.5",
        "eval_model_head_accuracy_0.9",
        "eval_iis",
        "eval_iis_standard_accuracy",
        "eval_iis_accuracy_0",
        "eval_iis_accuracy_0.98",
    }
    assert expected <= set(metrics)
    assert 0 <= metrics["eval_iis"] <= 0.98 * 1.5
    assert trainer.last_iis_result.sparsity_ratios[-1] == 0.98
    off = make_trainer(tmp_path / "off", arch="vit", max_steps=1, iis_eval=False)
    assert "eval_iis" not in off.evaluate()


def final_state(trainer):
    return {k: v.detach().clone() for k, v in trainer.iis_model.state_dict().items()}


def test_resume_from_checkpoint_matches_an_uninterrupted_run(tmp_path):
    common = dict(arch="vit", per_device_train_batch_size=6, max_steps=6, save_strategy="steps", save_steps=3)
    full = make_trainer(tmp_path / "full", **common)
    full.train()
    expected = final_state(full)
    checkpoint = tmp_path / "full" / "checkpoint-3"
    assert (checkpoint / "iis_head.safetensors").exists() and (checkpoint / "optimizer.pt").exists()
    resumed = make_trainer(tmp_path / "resumed", **common)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    for name, value in expected.items():
        torch.testing.assert_close(final_state(resumed)[name], value, rtol=0, atol=1e-6, msg=name)
    assert not torch.equal(
        expected["iis_head.weight"], make_trainer(tmp_path / "x", **common).iis_model.iis_head.weight
    )


def test_saved_folder_loads_as_plain_backbone_and_as_iis_model(tmp_path):
    trainer = make_trainer(tmp_path / "run", arch="resnet", max_steps=2)
    trainer.train()
    trainer.save_model()
    out = tmp_path / "run"
    names = sorted(p.name for p in out.iterdir())
    for required in (
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "iis_head.safetensors",
        "iis_config.json",
        "concept_bank.safetensors",
        "concept_bank.json",
        "training_args.json",
    ):
        assert required in names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth"))]  # nothing pickled
    plain, info = AutoModelForImageClassification.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    reloaded = IISModelForImageClassification.from_pretrained(out)
    pixels, _ = pixel_batch()
    trained = trainer.iis_model.eval()
    with torch.no_grad():
        a, b = trained(pixel_values=pixels), reloaded(pixel_values=pixels)
        torch.testing.assert_close(plain.eval()(pixel_values=pixels).logits, a.logits)
    torch.testing.assert_close(a.logits, b.logits)
    torch.testing.assert_close(a.iis_logits, b.iis_logits)
    assert reloaded.iis_weight == trained.iis_weight and reloaded.sparsity_ratios == [0.9]


def test_corrupted_head_files_are_refused(tmp_path):
    model = IISModelForImageClassification(build_tiny_model("vit"), random_bank())
    model.save_pretrained(tmp_path)
    (tmp_path / "iis_head.pt").write_bytes(b"pickle")
    with pytest.raises(ValueError, match="pickle"):
        IISModelForImageClassification.from_pretrained(tmp_path)
    (tmp_path / "iis_head.pt").unlink()
    config = json.loads((tmp_path / "iis_config.json").read_text())
    (tmp_path / "iis_config.json").write_text(json.dumps({**config, "sparsity_ratios": "0.9"}))
    with pytest.raises(ValueError, match="sparsity_ratios"):
        IISModelForImageClassification.from_pretrained(tmp_path)
    (tmp_path / "iis_config.json").write_text(json.dumps(config))
    data = (tmp_path / "iis_head.safetensors").read_bytes()
    (tmp_path / "iis_head.safetensors").write_bytes(data[:100])
    with pytest.raises(ValueError, match="safetensors"):
        IISModelForImageClassification.from_pretrained(tmp_path)


def test_model_card_carries_iis_and_the_curve(tmp_path):
    trainer = make_trainer(tmp_path / "run", arch="vit", max_steps=2)
    trainer.train()
    metrics = trainer.evaluate()
    trainer.save_model()
    trainer.create_model_card(dataset="colours", model_name="tiny-iis")
    from huggingface_hub import ModelCard

    card = ModelCard.load(tmp_path / "run" / "README.md")
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert results["iis"] == pytest.approx(metrics["eval_iis"])
    assert results["accuracy"] == pytest.approx(metrics["eval_accuracy"])
    assert "iis-hf" in card.data.tags and card.data.model_name == "tiny-iis"
    assert "![IIS curve](iis_curve.png)" in card.text and (tmp_path / "run" / "iis_curve.png").exists()
    assert "IISModelForImageClassification.from_pretrained" in card.text


def test_bf16_on_cpu_with_a_resnet_backbone(tmp_path):
    trainer = make_trainer(
        tmp_path, arch="resnet", max_steps=2, bf16=True, logging_strategy="steps", logging_steps=1
    )
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    # what the head meets inside an autocast forward: ResNet's pooled features come out in bf16
    fresh = IISModelForImageClassification(build_tiny_model("resnet"), random_bank())
    pixels, labels = pixel_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fresh(pixel_values=pixels, labels=labels)
    assert out.representations.dtype == torch.bfloat16
    assert torch.isfinite(out.iis_logits).all() and torch.isfinite(out.loss)


def test_best_model_is_loaded_at_the_end_with_early_stopping(tmp_path):
    from transformers import EarlyStoppingCallback

    trainer = make_trainer(
        tmp_path,
        arch="vit",
        num_train_epochs=4,
        eval_strategy="epoch",
        save_strategy="epoch",
        load_best_model_at_end=True,
        metric_for_best_model="iis",
        greater_is_better=True,
        save_total_limit=2,
        iis_refit_head=False,  # the head must then be the best checkpoint's, untouched
    )
    trainer.add_callback(EarlyStoppingCallback(early_stopping_patience=1))
    trainer.train()
    best = Path(trainer.state.best_model_checkpoint)
    assert best.exists() and trainer.state.best_metric is not None
    head = load_file(str(best / "iis_head.safetensors"))
    torch.testing.assert_close(trainer.iis_model.iis_head.weight.detach(), head["weight"])


def test_two_processes_end_with_identical_weights_on_both_ranks(tmp_path):
    command = torchrun_two_processes(str(REPO / "tests" / "scripts" / "train_distributed.py"), str(tmp_path))
    proc = subprocess.run(
        command, env=cpu_subprocess_env(), capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "world 2" in proc.stdout
    rank0, rank1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    assert set(rank0) == set(rank1) and any(k.startswith("iis_head.") for k in rank0)
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    initial = IISModelForImageClassification(build_tiny_model("vit"), random_bank()).state_dict()
    assert not torch.equal(rank0["iis_head.weight"], initial["iis_head.weight"])  # the head trained
    assert not torch.equal(rank0["backbone.classifier.weight"], initial["backbone.classifier.weight"])


def test_push_to_hub_sends_backbone_head_bank_and_card(hub, tmp_path):
    trainer = make_trainer(
        tmp_path / "run",
        arch="vit",
        max_steps=2,
        eval_strategy="steps",
        eval_steps=2,
        push_to_hub=True,
        hub_model_id="user/iis-tiny",
    )
    trainer.train()
    metrics = trainer.evaluate()
    trainer.push_to_hub(dataset="colours")
    files = hub.files("user/iis-tiny")
    for name in (
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "iis_head.safetensors",
        "iis_config.json",
        "concept_bank.safetensors",
        "concept_bank.json",
        "iis_curve.png",
        "README.md",
    ):
        assert name in files, name
    assert files["iis_head.safetensors"] == (tmp_path / "run" / "iis_head.safetensors").read_bytes()
    card = files["README.md"].decode()
    assert (
        "type: iis" in card and f"{metrics['eval_iis']}"[:5] in card and "![IIS curve](iis_curve.png)" in card
    )
    assert 'IISModelForImageClassification.from_pretrained("user/iis-tiny")' in card
    assert hub.unhandled == []

    reloaded = IISModelForImageClassification.from_pretrained("user/iis-tiny")
    plain = AutoModelForImageClassification.from_pretrained("user/iis-tiny")
    pixels, _ = pixel_batch()
    with torch.no_grad():
        expected = trainer.iis_model.eval()(pixel_values=pixels)
        torch.testing.assert_close(reloaded(pixel_values=pixels).iis_logits, expected.iis_logits)
        torch.testing.assert_close(plain.eval()(pixel_values=pixels).logits, expected.logits)


def test_checkpoint_pushes_carry_the_head(hub, tmp_path):
    trainer = make_trainer(
        tmp_path / "run",
        arch="vit",
        max_steps=2,
        save_strategy="steps",
        save_steps=1,
        push_to_hub=True,
        hub_model_id="user/iis-ckpt",
        hub_strategy="every_save",
    )
    trainer.train()
    progress = [c for c in hub.commits("user/iis-ckpt") if c["message"].startswith("Training in progress")]
    assert progress, [c["message"] for c in hub.commits("user/iis-ckpt")]
    first = progress[0]["files"]
    for name in ("model.safetensors", "iis_head.safetensors", "iis_config.json", "concept_bank.safetensors"):
        assert name in first, (name, first)
    pushed = hub.files("user/iis-ckpt", revision=progress[0]["oid"])
    first_checkpoint = tmp_path / "run" / "checkpoint-1"  # the first save triggers the first push
    assert pushed["iis_head.safetensors"] == (first_checkpoint / "iis_head.safetensors").read_bytes()
