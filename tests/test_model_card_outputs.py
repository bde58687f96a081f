"""What a fine-tuned model's card and logs say: one row per evaluation step, two head accuracies
that say which head they measure (issue 21, item 10)."""

from __future__ import annotations

import pytest
from trainer_utils import make_trainer

from iis_hf.model_card import HEAD_ACCURACIES_NOTE, evaluation_rows, training_section

# `Trainer.state.log_history` of two epochs with an evaluation each, then the train summary entry,
# then the `trainer.evaluate()` a script runs after `train()`: the saved model's evaluation at the
# last step, with another eval loss (the head was refitted).
HISTORY = [
    {"loss": 1.71, "epoch": 1.0, "step": 3},
    {"eval_loss": 1.5479, "eval_accuracy": 0.6667, "eval_iis": 0.39, "eval_model_head_accuracy_0.5": 0.3,
     "eval_iis_accuracy_0.5": 0.5, "epoch": 1.0, "step": 3},
    {"loss": 1.53, "epoch": 2.0, "step": 6},
    {"eval_loss": 1.4872, "eval_accuracy": 1.0, "eval_iis": 0.56, "eval_model_head_accuracy_0.5": 0.4,
     "eval_iis_accuracy_0.5": 0.6, "epoch": 2.0, "step": 6},
    {"train_runtime": 1.8, "train_loss": 1.62, "epoch": 2.0, "step": 6},
    {"eval_loss": 1.4799, "eval_accuracy": 1.0, "eval_iis": 0.56, "eval_model_head_accuracy_0.5": 0.6,
     "eval_iis_accuracy_0.5": 0.6, "epoch": 2.0, "step": 6},
]  # fmt: skip


def table_rows(section: str) -> list[str]:
    return [line for line in section.splitlines() if line.startswith("| ") and "---" not in line][1:]


def test_each_epoch_appears_once_in_the_training_table():
    rows, reevaluated = evaluation_rows(HISTORY)
    assert [r["eval_loss"] for r in rows] == [1.5479, 1.4872] and reevaluated
    section = training_section(None, HISTORY)
    body = table_rows(section)
    assert [line.split(" | ")[1] for line in body] == ["1", "2"]  # epochs, once each
    assert "1.4799" not in section  # the re-evaluation's loss is not a training row
    assert "evaluated again after training" in section
    assert HEAD_ACCURACIES_NOTE in section


def test_an_evaluation_only_history_keeps_its_row():
    history = [{"eval_loss": 0.5, "eval_accuracy": 0.9, "epoch": 0, "step": 0}]
    section = training_section(None, history)
    assert len(table_rows(section)) == 1 and "evaluated again" not in section
    assert HEAD_ACCURACIES_NOTE not in section  # no head accuracies logged: nothing to explain


def test_a_fine_tuned_card_lists_each_epoch_once_and_names_both_head_accuracies(tmp_path):
    trainer = make_trainer(
        tmp_path / "run", arch="vit", num_train_epochs=2, eval_strategy="epoch", logging_strategy="epoch"
    )
    trainer.train()
    metrics = trainer.evaluate()  # after training, as a script does: a second evaluation at the last step
    evaluations = [h for h in trainer.state.log_history if "eval_loss" in h]
    assert len(evaluations) == 3 and evaluations[-1]["step"] == evaluations[-2]["step"]

    # The two head accuracies say which head they measure.
    assert not [name for name in metrics if "interpretation_accuracy" in name]
    own = trainer.head_accuracies(*trainer.representations_of(trainer.eval_dataset))
    assert metrics["eval_model_head_accuracy_0.9"] == pytest.approx(own["0.9"])  # the model's own head
    fresh = dict(zip(trainer.last_iis_result.sparsity_ratios, trainer.last_iis_result.accuracies))
    assert metrics["eval_iis_accuracy_0.9"] == pytest.approx(fresh[0.9])  # heads fitted afresh for IIS

    trainer.save_model()
    trainer.create_model_card(dataset="colours", model_name="tiny-iis")
    card = (tmp_path / "run" / "README.md").read_text()
    training = card.split("## Training", 1)[1].split("## Framework", 1)[0]
    table = training.split("| training loss |", 1)[1].split("\n\n", 1)[0]
    epochs = [line.split(" | ")[1] for line in table.splitlines()[2:]]
    assert epochs == ["1", "2"], training
    assert HEAD_ACCURACIES_NOTE in card and "The head as trained along with the backbone" in card
