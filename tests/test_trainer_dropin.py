"""IISTrainer as a drop-in for Trainer: the same metrics contract, predictions, PEFT, any classifier,
pipelines, a head that trains as a head, and a refitted saved head."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers as tf
from conftest import build_tiny_model, tiny_image_processor
from trainer_utils import make_trainer, random_bank, splits

from iis_hf import IISModelForImageClassification


def tiny_swiftformer():
    torch.manual_seed(0)
    config = tf.SwiftFormerConfig(
        depths=[1, 1, 1, 1], embed_dims=[8, 16, 24, 32], num_labels=3, image_size=32
    )
    return tf.SwiftFormerForImageClassification(config)


def tiny_deit_with_teacher():
    torch.manual_seed(0)
    config = tf.DeiTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=3,
    )  # fmt: skip
    return tf.DeiTForImageClassificationWithTeacher(config)


# ---------------------------------------------------------------- the metrics contract
def test_compute_metrics_is_called_once_with_the_eval_prediction_a_plain_trainer_builds(tmp_path):
    calls = []

    def compute_metrics(prediction):
        calls.append(prediction)
        return {"mine": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}

    trainer = make_trainer(tmp_path, include_for_metrics=["inputs"])
    trainer.compute_metrics = compute_metrics
    metrics = trainer.evaluate()
    assert len(calls) == 1
    (prediction,) = calls
    _, evaluation = splits()
    assert prediction.predictions.shape == (len(evaluation), 3)  # the backbone's logits, one array
    assert prediction.inputs is not None and prediction.inputs.shape[0] == len(evaluation)
    assert metrics["eval_mine"] == pytest.approx(metrics["eval_accuracy"])  # ours and theirs agree
    assert "eval_iis" in metrics and "eval_model_head_accuracy_0.9" in metrics


def test_batch_eval_metrics_works(tmp_path):
    seen = []

    def compute_metrics(prediction, compute_result: bool):
        seen.append(prediction.predictions.shape[0])
        return {"rows": float(sum(seen))} if compute_result else {}

    trainer = make_trainer(tmp_path, batch_eval_metrics=True, per_device_eval_batch_size=2)
    trainer.compute_metrics = compute_metrics
    metrics = trainer.evaluate()
    assert metrics["eval_rows"] == len(splits()[1]) and len(seen) > 1 and "eval_iis" in metrics


def test_predict_gives_the_backbone_logits_and_the_interpretation_logits_separately(tmp_path):
    trainer = make_trainer(tmp_path)
    _, evaluation = splits()
    output = trainer.predict(evaluation)
    assert output.predictions.shape == (len(evaluation), 3)
    assert np.argmax(output.predictions, -1).shape == (len(evaluation),)
    interpretation = trainer.interpretation_logits(evaluation)
    assert interpretation.shape == (len(evaluation), 1, 3)  # one loss ratio (0.9)
    probabilities = trainer.predict_from_concepts(evaluation)  # as the model gives them, for one ratio
    assert probabilities.shape == (len(evaluation), 3)
    assert np.allclose(probabilities.sum(-1), 1.0, atol=1e-5)
    assert np.array_equal(probabilities.argmax(-1), interpretation[:, 0].argmax(-1))


# ---------------------------------------------------------------- the head trains as a head
def test_the_head_has_its_own_learning_rate_and_no_weight_decay(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=1, learning_rate=5e-5, weight_decay=0.05)
    trainer.create_optimizer()
    head = {id(p) for p in trainer.iis_model.iis_head.parameters()}
    groups = [g for g in trainer.optimizer.param_groups if any(id(p) in head for p in g["params"])]
    assert len(groups) == 1 and {id(p) for p in groups[0]["params"]} == head
    assert groups[0]["lr"] == 1e-2 and groups[0]["weight_decay"] == 0.0
    others = [g for g in trainer.optimizer.param_groups if g is not groups[0]]
    assert all(g["lr"] == 5e-5 for g in others) and any(g["weight_decay"] == 0.05 for g in others)


def test_the_saved_head_is_as_accurate_as_a_head_fitted_afresh_on_the_final_features(tmp_path):
    train, evaluation = splits(per_class=16)
    trainer = make_trainer(
        tmp_path, train=train, evaluation=evaluation, num_train_epochs=2, iis_eval_epochs=10
    )
    trainer.train()
    saved = trainer.saved_head_accuracy["accuracies"]["0.9"]
    eval_x, eval_y = trainer.representations_of(evaluation)
    assert trainer.head_accuracies(eval_x, eval_y)["0.9"] == pytest.approx(saved)  # the model carries it
    assert set(trainer.saved_head_accuracy["trained_head_accuracies"]) == {"0.9"}
    # a head fitted afresh on the final features by the scoring pipeline (what eval_iis measures)
    fresh = trainer.evaluate()["eval_iis_accuracy_0.9"]
    assert abs(fresh - saved) <= 0.02
    trainer.save_model()
    reloaded = IISModelForImageClassification.from_pretrained(tmp_path)
    with torch.no_grad():
        logits = reloaded.iis_head(eval_x)
    assert float((logits[0].argmax(-1) == eval_y).double().mean()) == pytest.approx(saved)


# ---------------------------------------------------------------- pre-wrapped models
def test_arguments_win_over_a_pre_wrapped_models_weight_and_a_ratio_conflict_is_an_error(tmp_path):
    wrapped = IISModelForImageClassification(build_tiny_model("vit"), random_bank(), [0.9], iis_weight=1.0)
    trainer = make_trainer(tmp_path, model=wrapped, iis_weight=0.1)
    assert trainer.iis_model.iis_weight == 0.1
    other = IISModelForImageClassification(build_tiny_model("vit"), random_bank(), [0.5])
    with pytest.raises(ValueError, match=r"head has ratios \[0\.5\] but iis_sparsity_ratios is \[0\.9\]"):
        make_trainer(tmp_path, model=other)


# ---------------------------------------------------------------- any image classifier
@pytest.mark.parametrize(
    "build", [tiny_swiftformer, tiny_deit_with_teacher], ids=["swiftformer", "deit-teacher"]
)
def test_classifiers_without_a_classifier_attribute_wrap_and_train(tmp_path, build):
    trainer = make_trainer(tmp_path, model=build(), max_steps=2, iis_refit_head=False)
    before = trainer.iis_model.iis_head.weight.detach().clone()
    trainer.train()
    assert not torch.equal(before, trainer.iis_model.iis_head.weight.detach())
    assert "eval_iis" in trainer.evaluate()


def test_a_named_representation_module_is_the_documented_hook(tmp_path):
    model = tiny_swiftformer()
    wrapped = IISModelForImageClassification(model, random_bank(), [0.9], representation_module="dist_head")
    assert wrapped.head_config.representation_module == "dist_head"
    with pytest.raises(ValueError, match="representation_module='nope' is not a submodule"):
        IISModelForImageClassification(model, random_bank(), [0.9], representation_module="nope")


# ---------------------------------------------------------------- the ecosystem
def test_the_saved_model_works_in_an_image_classification_pipeline(tmp_path):
    from transformers import pipeline

    trainer = make_trainer(tmp_path, max_steps=1, iis_refit_head=False)
    trainer.train()
    trainer.save_model()
    model = IISModelForImageClassification.from_pretrained(tmp_path)
    classify = pipeline(
        "image-classification", model=model, image_processor=tiny_image_processor(), device="cpu"
    )
    _, evaluation = splits()
    predictions = classify([row["image"] for row in evaluation], top_k=2)
    assert len(predictions) == len(evaluation) and len(predictions[0]) == 2
    logits = model(
        pixel_values=tiny_image_processor()(evaluation[0]["image"], return_tensors="pt")["pixel_values"]
    ).logits
    assert predictions[0][0]["label"] == model.config.id2label[int(logits.argmax())]


def test_a_peft_lora_model_resumes_and_loads_the_best_checkpoint(tmp_path):
    peft = pytest.importorskip("peft")

    def lora():
        # ViT's attention projections: q_proj/v_proj in transformers 5, query/value in 4.x
        config = peft.LoraConfig(
            r=4, target_modules=["q_proj", "v_proj", "query", "value"], modules_to_save=["classifier"]
        )
        return peft.get_peft_model(build_tiny_model("vit"), config)

    common = dict(
        eval_strategy="epoch", save_strategy="epoch", metric_for_best_model="iis", iis_refit_head=False
    )
    trainer = make_trainer(tmp_path, model=lora(), num_train_epochs=2, load_best_model_at_end=True, **common)
    trainer.train()
    best = trainer.state.best_model_checkpoint
    assert best is not None
    adapter = peft.utils.load_peft_weights(best, device="cpu")
    state = peft.get_peft_model_state_dict(trainer.iis_model.backbone)
    assert adapter.keys() == state.keys() and all(torch.equal(adapter[k], state[k]) for k in adapter)
    resumed = make_trainer(tmp_path, model=lora(), num_train_epochs=3, **common)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step > trainer.state.global_step


# ---------------------------------------------------------------- resume after a kill
def test_a_killed_fine_tuning_with_augmentation_resumes_bit_for_bit(tmp_path):
    """The fine-tuning run's crops and flips draw from Python's `random`, which Trainer checkpoints and
    restores: a run killed mid-epoch and resumed ends with the weights of an uninterrupted one."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from conftest import cpu_subprocess_env
    from safetensors.torch import load_file

    script = Path(__file__).parent / "scripts" / "train_killable.py"
    env = {**cpu_subprocess_env(), "IIS_TEST_AUGMENT": "1", "OMP_NUM_THREADS": "1"}

    def run(out, mode):
        done = subprocess.run(
            [sys.executable, str(script), str(out), mode],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]

    run(tmp_path / "full", "full")
    out = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, str(script), str(out), "slow"], env=env, stderr=subprocess.PIPE
    )
    deadline = time.time() + 240
    while not (out / "checkpoint-4" / "trainer_state.json").exists():
        assert process.poll() is None and time.time() < deadline, "checkpoint-4 never appeared"
        time.sleep(0.1)
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)
    assert not (out / "final.safetensors").exists()
    run(out, "resume")
    expected, final = load_file(tmp_path / "full" / "final.safetensors"), load_file(out / "final.safetensors")
    assert set(final) == set(expected) and all(torch.equal(final[k], expected[k]) for k in expected)
