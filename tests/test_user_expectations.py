"""What a user reading the README expects, held: issue 21's findings 3, 7, 8 and 9.

3. `iis-hf compare` ranks only what is comparable: a card whose IIS was measured with a concept bank
   that other weights embedded (a fine-tuned model scored during training with its starting
   backbone's concepts) is refused next to fresh scores, in one line naming the difference.
7. A concept bank of fewer than 2 concepts is refused at scoring, with the fix.
8. `accelerate launch --cpu --num_processes 2` starts one process: the run says so.
9. Messages name settings as Python keywords (``epochs=``); on the command line they are flags.
"""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path
from types import SimpleNamespace

import evaluate
import pytest
import torch
from conftest import make_image_dataset, tiny_image_processor

from iis_hf import cli, pipeline
from iis_hf.compare import check_comparable, expected_result, read_card_result
from iis_hf.concepts import ConceptBank
from iis_hf.config import ConceptsConfig, HeadsConfig, ScoringConfig
from iis_hf.data import load_scoring_splits
from iis_hf.features import extract_features, load_vision_model
from iis_hf.model_card import iis_model_card, weights_fingerprint
from iis_hf.modeling import IISModelForImageClassification
from iis_hf.pipeline import build_concepts, score_representations
from iis_hf.score import IISResult, WeakProbeWarning, warn_if_probe_is_weak
from iis_hf.training import finetune

METRIC_DIR = Path(__file__).resolve().parents[1] / "metrics" / "iis"
RATIOS = ["0", "0.5", "0.9"]
FAST = ["--epochs", "3", "--num-concepts", "20", "--images-per-class", "2", "--sparsity-ratios", *RATIOS]


def fast_config() -> ScoringConfig:
    """What `FAST` on the command line sets."""
    return ScoringConfig(
        concepts=ConceptsConfig(num_concepts=20, images_per_class=2),
        heads=HeadsConfig(epochs=3, sparsity_ratios=[float(r) for r in RATIOS]),
        progress=False,
    )


@pytest.fixture(scope="module")
def saved_dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "colours"
    make_image_dataset(num_classes=3, per_class=8).save_to_disk(str(path))
    return str(path)


def error_lines(err: str, command: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith(f"iis-hf {command}: error:")]


# ---------------------------------------------------------------------------- 3. comparable means comparable
def fine_tuned(model):
    """The starting weights moved a little, as fine-tuning moves them."""
    tuned = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in tuned.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return tuned


def trainer_card(folder: Path, model, bank: ConceptBank, splits, config: ScoringConfig) -> str:
    """`model` saved with the card IISTrainer writes: IIS measured as `IISTrainer.measure_iis`
    measures it (features of `model`, the trainer's bank, no word on which weights are scored)."""
    train = extract_features(model, splits.train, progress=False)
    evaluation = extract_features(model, splits.eval, progress=False)
    result = score_representations(
        train.features, train.labels, evaluation.features, evaluation.labels, bank, config, num_classes=3
    )
    result.settings["data"].update(splits.settings())
    model.save_pretrained(folder)
    tiny_image_processor().save_pretrained(folder)
    card = iis_model_card(
        IISModelForImageClassification(model, bank, [0.9]),
        model_name=folder.name,
        result=result,
        dataset=splits.settings()["dataset"],
        dataset_split=splits.settings()["eval_split"],
    )
    card.save(folder / "README.md")
    return str(folder)


def test_a_card_whose_bank_the_starting_backbone_embedded_is_refused_next_to_a_fresh_score(
    tiny_models, saved_dataset, tmp_path, capsys, monkeypatch
):
    splits = load_scoring_splits(saved_dataset)
    config = fast_config()
    start = load_vision_model(tiny_models("vit"))
    tuned = fine_tuned(start)
    assert weights_fingerprint(tuned) != weights_fingerprint(start)
    starting_bank = build_concepts(start, splits.train, config)  # what IISTrainer embeds at step 0
    assert starting_bank.provenance["embedded_by"] == weights_fingerprint(start)
    card = trainer_card(tmp_path / "trained", tuned, starting_bank, splits, config)

    def must_not_run(*args, **kwargs):
        raise AssertionError("scored although the card's bank came from another backbone")

    monkeypatch.setattr(pipeline, "score_models", must_not_run)
    capsys.readouterr()
    out_dir = tmp_path / "board"
    command = ["compare", "--model", f"fresh={card}", f"trained=card:{card}", "--dataset", saved_dataset]
    code = cli.main([*command, "--output-dir", str(out_dir), *FAST, "--quiet"])
    err = capsys.readouterr().err
    lines = error_lines(err, "compare")
    assert code == 2 and len(lines) == 1 and err.count("\n") == 1, err
    # the one difference, named: who embedded the bank
    assert "concepts: embedded by: 'another backbone (" in lines[0], lines[0]
    assert "(trained) vs 'the scored model' (the models to score)" in lines[0]
    assert "heads recipe" not in lines[0] and "data:" not in lines[0] and "number" not in lines[0]
    assert not out_dir.exists()

    # the same weights with a bank they embedded themselves are comparable with a fresh score
    own = trainer_card(tmp_path / "own", tuned, build_concepts(tuned, splits.train, config), splits, config)
    check_comparable(
        {"own": read_card_result(own, saved_dataset), "fresh": expected_result(config, splits.settings())}
    )


def test_a_score_records_who_embedded_its_bank_with_which_data_and_seed(tiny_models, saved_dataset):
    splits = load_scoring_splits(saved_dataset)
    config = fast_config()
    model = load_vision_model(tiny_models("vit"))
    bank = build_concepts(model, splits.train, config)
    features = extract_features(model, splits.train, progress=False)
    for scored, own in ((weights_fingerprint(model), True), (weights_fingerprint(fine_tuned(model)), False)):
        result = score_representations(
            features.features, features.labels, features.features, features.labels, bank, config,
            scored_weights=scored,
        )  # fmt: skip
        provenance = result.settings["concepts"]["provenance"]
        assert provenance["embedded_by"] == weights_fingerprint(model)
        assert provenance["embedded_by_scored_model"] is own
        assert provenance["seed"] == config.seed and provenance["dataset_fingerprint"]
        assert provenance["model"] == tiny_models("vit")


# ---------------------------------------------------------------------------- 7. fewer than 2 concepts
def one_word_bank(dim: int = 8) -> ConceptBank:
    """A text bank whose cutoffs left one word of three."""
    state = {"weight": torch.randn(1, dim), "mean": torch.zeros(1), "std": torch.ones(1)}
    return ConceptBank(
        vectors=None, names=["red"], kind="text", projection_state=state, provenance={"num_words": 3}
    )


def test_a_one_concept_bank_is_refused_at_scoring_with_the_keywords_to_change():
    features = torch.randn(40, 8)
    labels = torch.arange(40) % 2
    with pytest.raises(ValueError) as caught:
        score_representations(features, labels, features, labels, one_word_bank(), fast_config())
    message = str(caught.value)
    assert "\n" not in message and "keeps 1 of 3 words ('red')" in message
    for keyword in ("clip_cutoff=", "interpretability_cutoff=", "concept_file="):
        assert keyword in message, message


def test_a_text_bank_left_with_one_word_is_refused_on_the_command_line_naming_the_settings(
    tiny_models, saved_dataset, tmp_path, capsys
):
    from test_text_concepts import save_tiny_clip

    words = tmp_path / "words.txt"
    words.write_text("red\n", encoding="utf-8")
    out_dir = tmp_path / "out"
    code = cli.main(
        ["score", "--model", tiny_models("vit"), "--dataset", saved_dataset, "--output-dir", str(out_dir),
         "--concept-kind", "text", "--concept-file", str(words), "--clip-model", save_tiny_clip(tmp_path / "clip"),
         "--clip-cutoff", "-1", "--interpretability-cutoff", "-1", "--projection-epochs", "20",
         "--epochs", "2", "--sparsity-ratios", "0", "0.5", "--no-progress"]
    )  # fmt: skip
    err = capsys.readouterr().err
    lines = error_lines(err, "score")
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "keeps 1 of 1 words ('red')" in lines[0]
    # each setting by its one name, whose flag is that name with dashes (--clip-cutoff, ...)
    for name in ("clip_cutoff", "interpretability_cutoff", "concept_file"):
        assert name in lines[0], lines[0]
    assert "drop every concept" not in err  # refused before the heads
    assert not out_dir.exists()


# ---------------------------------------------------------------------------- 8. one process where several were asked for
ACCELERATE_CPU_LAUNCH = {"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}


def test_accelerate_launch_cpu_with_two_processes_is_said_to_train_alone(
    tiny_models, tmp_path, monkeypatch, caplog
):
    """What `accelerate launch --cpu --num_processes 2` gives the script: one process, with
    ACCELERATE_USE_CPU and MASTER_ADDR/MASTER_PORT but no WORLD_SIZE (its simple launcher)."""
    for name, value in ACCELERATE_CPU_LAUNCH.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    args = ["--model_name_or_path", tiny_models("vit"), "--dataset_name", str(tmp_path / "nothing")]
    args += ["--output_dir", str(tmp_path / "out"), "--use_cpu", "--report_to", "none"]
    with caplog.at_level(logging.WARNING, logger="iis_hf.training.finetune"), pytest.raises(ValueError):
        finetune.main(args)  # stops at the missing dataset, after the launch was looked at
    said = [r.getMessage() for r in caplog.records if "started this process alone" in r.getMessage()]
    assert len(said) == 1 and "\n" not in said[0], caplog.text
    assert "--multi_gpu --num_processes N" in said[0] and "torchrun" in said[0]


def test_a_launch_size_the_process_did_not_see_is_said_and_a_real_one_is_not():
    alone, shared = SimpleNamespace(world_size=1), SimpleNamespace(world_size=2)
    said = finetune.warn_if_launched_alone(alone, {"WORLD_SIZE": "2"})
    assert said is not None and "WORLD_SIZE=2" in said and "trains alone" in said
    assert "LOCAL_WORLD_SIZE=4" in finetune.warn_if_launched_alone(alone, {"LOCAL_WORLD_SIZE": "4"})
    assert finetune.warn_if_launched_alone(shared, {"WORLD_SIZE": "2", **ACCELERATE_CPU_LAUNCH}) is None
    assert finetune.warn_if_launched_alone(alone, {"WORLD_SIZE": "1"}) is None
    assert finetune.warn_if_launched_alone(alone, {"ACCELERATE_USE_CPU": "True"}) is None  # one asked for


# ---------------------------------------------------------------------------- 9. one name in Python, its flag on the command line
def test_a_settings_error_is_one_line_naming_its_flag_by_the_one_rule(tmp_path, capsys):
    """The config's error names its field; the command line names the flag spelled from it (no
    rewriting of the message's text): ``--head-batch-size``, ``--learning-rate``."""
    for flag, value, line in (
        ("--head-batch-size", "0", "--head-batch-size must be an int >= 1, got 0"),
        ("--learning-rate", "-1", "--learning-rate must be a finite number > 0, got -1.0"),
    ):
        code = cli.main(
            ["score", "--model", "m", "--dataset", "d", "--output-dir", str(tmp_path / "o"), flag, value]
        )
        assert code == 2 and error_lines(capsys.readouterr().err, "score") == [f"iis-hf score: error: {line}"]


def weak_probe_result() -> IISResult:
    return IISResult(iis=0.6, standard_accuracy=0.5, accuracies=[0.75, 0.5], sparsity_ratios=[0.0, 0.5])


def test_warnings_name_settings_by_their_one_name_and_the_command_line_leaves_them_as_they_are():
    with pytest.warns(WeakProbeWarning) as python:
        warn_if_probe_is_weak(weak_probe_result())
    assert "(probe_min_steps=)" in str(python[0].message) and "(learning_rate=)" in str(python[0].message)
    shown = warnings.showwarning
    with pytest.raises(SystemExit):
        cli.main(["score", "--help"])
    assert warnings.showwarning is shown  # the command line never replaces how warnings are shown
    assert not hasattr(cli, "in_flags") and not hasattr(cli, "warnings_in_flags")


def test_the_classifier_config_gives_no_probe_advice():
    """Its A0 is the classifier's accuracy: there is no probe to train longer, no epochs= to raise."""
    metric = evaluate.load(str(METRIC_DIR), "classifier", sparsity_ratios=[0.0, 0.5])
    with pytest.warns(WeakProbeWarning) as caught:
        metric.compute(
            predictions=[0, 1, 0, 0],
            references=[0, 1, 2, 2],
            head_predictions=[[0, 0], [1, 1], [2, 2], [2, 0]],
        )
    text = str(caught[0].message)
    assert "'classifier' config" in text and "classifier's own predictions" in text
    assert "linear probe" not in text and "epochs=" not in text, text
