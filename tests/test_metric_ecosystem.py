"""The IIS evaluate module among Hugging Face's conventions: inside a plain `Trainer`, in
`evaluate.combine` with accuracy, loaded offline without noise, and published as a Space."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import re
import textwrap
from pathlib import Path

import evaluate
import pytest

import iis_hf

REPO = Path(__file__).resolve().parents[1]
METRIC_DIR = REPO / "metrics" / "iis"

# A stand-in for evaluate-metric/accuracy (the Hub's canonical module cannot be downloaded offline):
# the same inputs (int32 predictions and references) and the same output key.
ACCURACY = textwrap.dedent(
    """
    import datasets
    import evaluate


    class Accuracy(evaluate.Metric):
        def _info(self):
            features = {"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}
            return evaluate.MetricInfo(
                description="accuracy", citation="", inputs_description="", features=datasets.Features(features)
            )

        def _compute(self, predictions, references):
            return {"accuracy": sum(int(p == r) for p, r in zip(predictions, references)) / len(references)}
    """
)


class EvaluateLog(logging.Handler):
    """evaluate's loggers do not propagate to the root logger: listen to them directly."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_a_plain_trainer_logs_every_iis_key_whole(tmp_path, caplog):
    import torch
    from conftest import build_tiny_model, make_image_dataset, tiny_image_processor
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from iis_hf.demo import image_classification_collator

    data = make_image_dataset(num_classes=3, per_class=90)  # 270 rows: 54 scored (the config needs 50)
    processor = tiny_image_processor()
    model = build_tiny_model("resnet")
    model.config.output_hidden_states = True  # the representation reaches compute_metrics
    iis = iis_hf.load_metric("representations", cache_dir=str(tmp_path / "metric"))
    ratios = [0.0, 0.5, 0.9]

    def keep_prediction_and_representation(outputs, labels):  # Trainer's preprocess_logits_for_metrics
        logits, hidden_states = outputs
        return logits.argmax(-1), hidden_states[-1].mean(dim=(2, 3))  # ResNet's pooled representation

    def compute_metrics(eval_pred):
        predicted, features = eval_pred.predictions
        labels = eval_pred.label_ids
        bank = iis_hf.ConceptBank.from_prototypes(
            trainer.model,
            data,
            image_processor=processor,
            images_per_class=2,
            num_concepts=12,
            progress=False,
        )  # concepts embedded by the model being evaluated
        scores = iis.compute(
            predictions=features, references=labels, concept_bank=bank, epochs=3, sparsity_ratios=ratios
        )
        return {"accuracy": float((predicted == labels).mean()), **scores}

    class Logged(TrainerCallback):
        """What TensorBoardCallback does with each value: numbers are scalars, strings text; anything
        else is dropped with "Trainer is attempting to log a value of ... of type <class 'list'>"."""

        def __init__(self):
            self.logs: list[dict] = []
            self.dropped: list[str] = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.logs.append(dict(logs))
            self.dropped.extend(k for k, v in logs.items() if not isinstance(v, (int, float, str)))

    callback = Logged()
    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=str(tmp_path / "run"),
            per_device_eval_batch_size=16,
            report_to=[],
            use_cpu=True,
            disable_tqdm=True,
            remove_unused_columns=False,
        ),
        eval_dataset=data,
        data_collator=image_classification_collator(processor),
        compute_metrics=compute_metrics,
        preprocess_logits_for_metrics=keep_prediction_and_representation,
        callbacks=[callback],
    )
    with caplog.at_level(logging.WARNING):
        metrics = trainer.evaluate()
    expected = {
        "eval_iis",
        "eval_iis_standard_accuracy",
        "eval_iis_ci_low",
        "eval_iis_ci_high",
        "eval_accuracy",
    }
    expected |= {f"eval_iis_accuracy_{r:g}" for r in ratios}
    logged = callback.logs[-1]
    assert expected <= set(logged), sorted(expected - set(logged))
    assert callback.dropped == [] and "attempting to log" not in caplog.text
    assert all(isinstance(logged[k], float) and logged[k] == metrics[k] for k in expected)
    assert torch.isfinite(torch.tensor([logged[k] for k in expected])).all()


def test_evaluate_combine_with_accuracy(tmp_path):
    (tmp_path / "accuracy").mkdir()
    (tmp_path / "accuracy" / "accuracy.py").write_text(ACCURACY)
    accuracy = evaluate.load(str(tmp_path / "accuracy"), cache_dir=str(tmp_path / "cache"))
    iis = iis_hf.load_metric("classifier", sparsity_ratios=[0.0, 0.5], cache_dir=str(tmp_path / "cache"))
    metrics = evaluate.combine([accuracy, iis])
    # predictions are shared (the classifier's labels); the heads' labels are IIS's own input column
    for predicted, labels, heads in [([0, 1], [0, 1], [[0, 0], [1, 1]]), ([2, 1], [2, 2], [[2, 0], [1, 1]])]:
        metrics.add_batch(predictions=predicted, references=labels, head_predictions=heads)
    results = metrics.compute()
    assert results == pytest.approx(
        {
            "accuracy": 0.75,
            "iis": (0.75 / 0.75 + 0.5 / 0.75)
            / 2
            * 0.5,  # A(0) = 3/4, A(0.5) = 2/4, A0 = the classifier's 3/4
            "iis_standard_accuracy": 0.75,
            "iis_accuracy_0": 0.75,
            "iis_accuracy_0.5": 0.5,
            "iis_ci_low": results["iis_ci_low"],
            "iis_ci_high": results["iis_ci_high"],
            "iis_valid": 1.0,
        }
    )
    with pytest.raises(ValueError, match="'classifier' config"):
        iis_hf.load_metric().compute(
            predictions=[[0, 0]], references=[0], standard_accuracy=1.0, head_predictions=[[0, 0]]
        )


def test_loading_by_path_is_offline_and_quiet(tmp_path):
    handler = EvaluateLog()
    logger = logging.getLogger("evaluate")
    logger.addHandler(handler)
    try:
        metric = iis_hf.load_metric(cache_dir=str(tmp_path))
    finally:
        logger.removeHandler(handler)
    assert metric.compute(predictions=[[0, 0], [1, 1]], references=[0, 1], standard_accuracy=1.0, sparsity_ratios=[0, 0.5])["iis"] == 0.5  # fmt: skip
    noise = [m for m in handler.messages if "Hugging Face Hub" in m or "cached version" in m]
    assert noise == [], noise


def test_the_metric_folder_is_a_publishable_space():
    readme = (METRIC_DIR / "README.md").read_text()
    header = readme.split("---")[1]
    gradio = pytest.importorskip("gradio")
    assert re.search(r"^sdk: gradio$", header, re.M) and re.search(r"^app_file: app.py$", header, re.M)
    assert re.search(rf"^sdk_version: {re.escape(gradio.__version__)}$", header, re.M), "the tested gradio"
    # every requirement is pinned, to the version the tests run with here
    pins = [
        line
        for line in (METRIC_DIR / "requirements.txt").read_text().splitlines()
        if line and line[0] not in "#-"
    ]
    assert pins
    for line in pins:
        name, _, version = line.partition("==")
        assert version, f"{line!r} is not pinned"
        assert importlib.metadata.version(name) == version, line
    assert "not on PyPI" in readme and "not on PyPI" in (METRIC_DIR / "requirements.txt").read_text()
    # app.py loads the module beside it (no placeholder Hub id) and its widget computes the example
    source = (METRIC_DIR / "app.py").read_text()
    assert "iis-hf/iis" not in source and "<user>" not in source
    spec = importlib.util.spec_from_file_location("iis_space_app", METRIC_DIR / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    assert Path(app.metric.__module__.replace(".", "/")).name == "iis"
    assert app.compute(app.EXAMPLE, app.EXAMPLE_RATIOS)["iis"] == 0.3125
    assert isinstance(app.build(), gradio.Blocks)
