"""One question, one answer: every entry point scores through `iis_hf.pipeline` and agrees.

The same model, data, concept bank, settings and seed must give the same IIS from the command line,
the Python pipeline, the evaluate metric's "representations" config and `IISTrainer.evaluate()`;
and a fine-tuned model's card, its iis.json and `iis-hf score` with the same settings must agree.
"""

from __future__ import annotations

import json
from pathlib import Path

import evaluate
import pytest
from conftest import make_image_dataset, tiny_image_processor
from datasets import DatasetDict, load_from_disk
from huggingface_hub import ModelCard

import iis_hf
from iis_hf.cli import main
from iis_hf.config import ConceptsConfig, HeadsConfig, ScoringConfig
from iis_hf.data import load_scoring_splits
from iis_hf.demo import image_classification_collator
from iis_hf.features import load_vision_model

REPO = Path(__file__).resolve().parents[1]
RATIOS = [0.0, 0.5, 0.9]
EPOCHS = 3


@pytest.fixture(scope="module")
def setting(tmp_path_factory, tiny_models):
    """A saved model, a one-split dataset on disk and a concept bank built once from the model."""
    root = tmp_path_factory.mktemp("one_number")
    dataset = root / "data"
    make_image_dataset(num_classes=3, per_class=84).save_to_disk(str(dataset))  # 20 % held out: 51 scored
    model_dir = tiny_models("vit")
    splits = load_scoring_splits(str(dataset), eval_fraction=0.2, seed=0)
    bank = iis_hf.ConceptBank.from_prototypes(
        load_vision_model(model_dir), splits.train, images_per_class=2, num_concepts=24, progress=False
    )
    bank.save_pretrained(root / "bank")
    return {
        "root": root,
        "dataset": str(dataset),
        "model": model_dir,
        "bank": str(root / "bank"),
        "splits": splits,
    }


def config(bank: str) -> ScoringConfig:
    return ScoringConfig(
        concepts=ConceptsConfig(concept_bank=bank),
        heads=HeadsConfig(sparsity_ratios=RATIOS, epochs=EPOCHS),
        progress=False,
    )


def test_cli_pipeline_metric_and_trainer_give_the_same_iis(setting, tmp_path, capsys):
    # 1. the command line
    out = tmp_path / "cli"
    ratios = [str(r) for r in RATIOS]
    code = main([
        "score", "--model", setting["model"], "--dataset", setting["dataset"], "--concept-bank", setting["bank"],
        "--sparsity-ratios", *ratios, "--epochs", str(EPOCHS), "--output-dir", str(out), "--no-progress",
    ])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    cli = json.loads((out / "iis.json").read_text())

    # 2. the Python pipeline
    splits = setting["splits"]
    pipeline = iis_hf.score_model(setting["model"], splits.train, splits.eval, config(setting["bank"]))

    # 3. the metric's "representations" config, on the features of the whole split: it holds out the
    # same stratified 20 % (iis_hf.splits.stratified_split, seed 0) as the command line did
    data = load_from_disk(setting["dataset"])
    features = iis_hf.extract_features(setting["model"], data, progress=False)
    metric = evaluate.load(str(REPO / "metrics" / "iis"), "representations", cache_dir=str(tmp_path / "m"))
    scores = metric.compute(
        predictions=features.features.numpy(),
        references=features.labels.numpy(),
        concept_bank=setting["bank"],
        sparsity_ratios=RATIOS,
        epochs=EPOCHS,
        eval_fraction=0.2,
        seed=0,
    )

    # 4. IISTrainer.evaluate(): features from its own evaluation loop, heads fitted by the pipeline
    processor = tiny_image_processor()
    trainer = iis_hf.IISTrainer(
        model=load_vision_model(setting["model"]),
        args=iis_hf.IISTrainingArguments(
            output_dir=str(tmp_path / "trainer"),
            per_device_eval_batch_size=64,
            report_to=[],
            use_cpu=True,
            disable_tqdm=True,
            seed=0,
            iis_concept_bank=setting["bank"],
            iis_eval_sparsity_ratios=RATIOS,
            iis_eval_epochs=EPOCHS,
        ),
        train_dataset=splits.train,
        eval_dataset=splits.eval,
        processing_class=processor,
        data_collator=image_classification_collator(processor),
    )
    trainer_iis = trainer.evaluate()["eval_iis"]

    values = {"cli": cli["iis"], "pipeline": pipeline.iis, "metric": scores["iis"], "trainer": trainer_iis}
    assert max(values.values()) - min(values.values()) <= 1e-6, values
    # and every output records the settings that make the number comparable
    assert (
        cli["settings"]["heads"]["sparsity_ratios"] == RATIOS and cli["settings"]["heads"]["epochs"] == EPOCHS
    )
    assert cli["settings"]["concepts"]["fingerprint"] == pipeline.settings["concepts"]["fingerprint"]
    assert trainer.last_iis_result.settings["heads"] == pipeline.settings["heads"]
    assert (
        cli["settings"]["data"]["num_train"] == pipeline.settings["data"]["num_train"] == 201
    )  # 252 images, 51 held out


def test_a_fine_tuned_models_card_iis_json_and_score_agree(setting, tmp_path, capsys):
    data = make_image_dataset(num_classes=3, per_class=10)
    split = data.train_test_split(test_size=0.3, seed=0, stratify_by_column="label")
    dataset = tmp_path / "data"
    DatasetDict(train=split["train"], validation=split["test"]).save_to_disk(str(dataset))
    out = tmp_path / "finetuned"
    code = main([
        "finetune", "--model_name_or_path", setting["model"], "--dataset_name", str(dataset),
        "--output_dir", str(out), "--do_train", "--do_eval", "--num_train_epochs", "1",
        "--per_device_train_batch_size", "8", "--use_cpu", "--report_to", "none", "--disable_tqdm", "true",
        "--iis_num_concepts", "20", "--iis_images_per_class", "2", "--iis_eval_epochs", str(EPOCHS), "--seed", "0",
    ])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    saved = json.loads((out / "iis.json").read_text())
    card = ModelCard.load(out / "README.md")
    card_iis = next(r for r in card.data.eval_results if r.metric_type == "iis")
    assert card_iis.dataset_split == "validation" and card_iis.metric_value == saved["iis"]

    score_dir = tmp_path / "score"
    code = main([
        "score", "--model", str(out), "--dataset", str(dataset), "--concept-bank", str(out),
        "--epochs", str(EPOCHS), "--output-dir", str(score_dir), "--no-progress",  # seed 0, as fine-tuned
    ])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    scored = json.loads((score_dir / "iis.json").read_text())
    assert abs(scored["iis"] - saved["iis"]) <= 1e-6, (scored["iis"], saved["iis"])
    assert scored["settings"]["concepts"]["fingerprint"] == saved["settings"]["concepts"]["fingerprint"]
