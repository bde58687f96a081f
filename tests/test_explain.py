"""Predictions from interpretations (`ConceptClassifier`) and their explanations (`explain`, `iis-hf explain`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import build_tiny_model, make_image_dataset, tiny_image_processor
from PIL import Image

from iis_hf import ConceptBank, IISModelForImageClassification, compute_iis, extract_features
from iis_hf.cli import main
from iis_hf.explain import ConceptClassifier, Explanation, explain, iis_model_from_heads

RATIOS = (0.0, 0.5, 0.9)


@pytest.fixture(scope="module")
def data():
    return make_image_dataset(num_classes=3, per_class=10)


@pytest.fixture(scope="module")
def prototype_model(data):
    """An IIS model over prototype concepts (with thumbnails), heads at three ratios."""
    torch.manual_seed(0)
    backbone = build_tiny_model("vit")
    bank = ConceptBank.from_prototypes(
        backbone,
        data,
        image_processor=tiny_image_processor(),
        images_per_class=2,
        num_concepts=24,
        progress=False,
    )
    model = IISModelForImageClassification(backbone, bank, RATIOS).eval()
    with torch.no_grad():  # random heads would do for the arithmetic; make the weights less uniform
        model.iis_head.weight.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(1))
    return model


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory, prototype_model):
    folder = tmp_path_factory.mktemp("iis") / "model"
    prototype_model.save_pretrained(folder)
    tiny_image_processor().save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def text_setup(data):
    """A text bank (similarities by construction: one word per colour) and heads from compute_iis."""
    backbone = build_tiny_model("vit")
    features = extract_features(backbone, data, image_processor=tiny_image_processor(), progress=False)
    labels = features.labels.numpy()
    sims = np.stack([0.18 + 0.14 * (labels == c) for c in range(3)], axis=1)
    sims = sims + np.random.default_rng(0).normal(0, 0.005, sims.shape)
    bank = ConceptBank.from_text(
        ["red", "green", "blue"], None, features=features.features, clip_similarities=sims, progress=False
    )
    result = compute_iis(
        features.features,
        features.labels,
        features.features,
        features.labels,
        bank,
        sparsity_ratios=[0.0, 0.5],
        epochs=30,
        return_heads=True,
        progress=False,
    )
    return backbone, bank, result, features


def pixels(images):
    return tiny_image_processor()(images=images, return_tensors="pt")["pixel_values"]


# ---------------------------------------------------------------------------- explanations
@pytest.mark.parametrize("ratio", RATIOS)
def test_contributions_sum_to_the_interpretation_logit_minus_the_bias(prototype_model, data, ratio):
    image = data[4]["image"]
    explanation = explain(
        prototype_model, image, sparsity_ratio=ratio, image_processor=tiny_image_processor()
    )
    # The decomposition itself (float64 arithmetic: equal up to the last bits).
    assert abs(sum(explanation.contributions) - (explanation.logit - explanation.bias)) < 1e-9
    assert len(explanation.contributions) == 24

    # ... and it is the model's own prediction, computed independently through its forward.
    index = RATIOS.index(ratio)
    with torch.no_grad():
        output = prototype_model(pixel_values=pixels([image]))
    logits = output.iis_logits[index, 0]
    assert explanation.index == int(logits.argmax())
    assert explanation.logit == pytest.approx(float(logits[explanation.index]), abs=1e-5)
    assert explanation.bias == pytest.approx(
        float(prototype_model.iis_head.bias[index, explanation.index].detach())
    )
    assert explanation.probability == pytest.approx(
        float(prototype_model.predict_from_concepts(pixels([image]), ratio)[0, explanation.index]), abs=1e-5
    )
    activations = output.concept_activations[index, 0]
    weights = prototype_model.iis_head.weight[index, explanation.index].detach()
    np.testing.assert_allclose(
        explanation.contributions, (activations * weights).detach().double().numpy(), atol=1e-6
    )
    assert explanation.num_active == int((activations != 0).sum()) == 24 - (int(24 * ratio) + 1)

    # The listed concepts: the active ones with the largest |contribution|, each activation x weight.
    listed = explanation.concepts
    assert len(listed) == min(8, explanation.num_active)
    assert [abs(c.contribution) for c in listed] == sorted(
        (abs(c.contribution) for c in listed), reverse=True
    )
    assert abs(listed[-1].contribution) >= max(
        abs(v) for i, v in enumerate(explanation.contributions) if i not in {c.index for c in listed}
    )
    for c in listed:
        assert c.contribution == pytest.approx(c.activation * c.weight, abs=1e-12)
        assert c.name == prototype_model.concept_bank.names[c.index]
        assert c.source == prototype_model.concept_bank.sources[c.index] and c.thumbnail.shape == (3, 32, 32)
    assert explanation.other_contribution == pytest.approx(
        sum(explanation.contributions) - sum(c.contribution for c in listed), abs=1e-9
    )


def test_the_explanation_is_json_ready_and_readable(prototype_model, data):
    explanation = explain(prototype_model, data[0]["image"], top_k=3, image_processor=tiny_image_processor())
    payload = json.loads(json.dumps(explanation.to_dict()))
    assert payload["label"] == explanation.label == prototype_model.config.id2label[explanation.index]
    assert payload["concept_kind"] == "prototype-patches" and payload["sparsity_ratio"] == 0.9
    # At the default ratio 0.9 only 24 - (int(24 * 0.9) + 1) = 2 concepts are active: both are listed.
    assert payload["num_active"] == 2 and len(payload["concepts"]) == 2
    assert set(payload["concepts"][0]) == {
        "index",
        "name",
        "activation",
        "weight",
        "contribution",
        "source",
        "activation_sign",
        "weight_sign",
        "relation",
        "label",
    }
    assert payload["concepts"][0]["source"]["box"] and len(payload["contributions"]) == 24
    assert sum(p["score"] for p in payload["top_predictions"]) == pytest.approx(1.0, abs=1e-6)
    summary = explanation.summary()
    assert explanation.label in summary and payload["concepts"][0]["name"] in summary


def check_png(path, min_width=800, min_height=300):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.load()
        width, height = image.size
        pixels = np.asarray(image.convert("RGB"))
    assert width >= min_width and height >= min_height
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # a picture, not a blank canvas
    return pixels


def test_the_figure_is_a_png_for_prototype_and_text_concepts(tmp_path, prototype_model, data, text_setup):
    explanation = explain(prototype_model, data[12]["image"], image_processor=tiny_image_processor())
    explanation.plot(tmp_path / "prototype.png")
    check_png(tmp_path / "prototype.png")

    backbone, bank, result, _features = text_setup
    classifier = ConceptClassifier.from_heads(
        backbone, result, bank, image_processor=tiny_image_processor(), id2label=["red", "green", "blue"]
    )
    text = explain(classifier, data[25]["image"], sparsity_ratio=0.0)
    text.plot(tmp_path / "figures" / "text.png")  # missing folders are created
    check_png(tmp_path / "figures" / "text.png")
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["text.png"]  # no temporary left
    assert text.concept_kind == "text" and {c.name for c in text.concepts} <= {"red", "green", "blue"}
    assert all(c.thumbnail is None for c in text.concepts)


def test_a_ratio_without_a_head_and_bad_arguments_are_refused(prototype_model, data):
    with pytest.raises(
        ValueError, match=r"no interpretation head for sparsity ratio 0\.3.*\[0\.0, 0\.5, 0\.9\]"
    ):
        explain(prototype_model, data[0]["image"], sparsity_ratio=0.3, image_processor=tiny_image_processor())
    with pytest.raises(ValueError, match="top_k"):
        explain(prototype_model, data[0]["image"], top_k=0, image_processor=tiny_image_processor())
    with pytest.raises(ValueError, match="one image"):
        explain(prototype_model, [data[0]["image"]], image_processor=tiny_image_processor())


def test_an_undecodable_image_is_named(tmp_path, prototype_model):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    classifier = ConceptClassifier(prototype_model, tiny_image_processor())
    with pytest.raises(ValueError, match=r"image file '.*broken\.png' is not an image Pillow can read"):
        explain(classifier, str(broken))
    with pytest.raises(ValueError, match=r"image file '.*broken\.png' is not an image Pillow can read"):
        classifier([str(broken)])
    with pytest.raises(ValueError, match=r"image file .*missing\.png.* does not exist"):
        classifier(str(tmp_path / "missing.png"))


# ---------------------------------------------------------------------------- predictions
def test_predictions_come_from_the_interpretation_head(tmp_path, prototype_model, data):
    classifier = ConceptClassifier(prototype_model, tiny_image_processor())
    images = [data[i]["image"] for i in (0, 11, 22)]
    probabilities = prototype_model.predict_from_concepts(pixels(images), 0.5)
    predictions = classifier(images, sparsity_ratio=0.5, top_k=2)
    assert len(predictions) == 3 and all(len(p) == 2 for p in predictions)
    for row, probs in zip(predictions, probabilities):
        best = probs.topk(2)
        assert [p["label"] for p in row] == [prototype_model.config.id2label[int(i)] for i in best.indices]
        np.testing.assert_allclose([p["score"] for p in row], best.values.numpy(), atol=1e-5)
    # Not the backbone's own classifier: with a head that ignores the concepts, the bias decides.
    biased = IISModelForImageClassification(prototype_model.backbone, prototype_model.concept_bank, (0.5,))
    with torch.no_grad():
        biased.iis_head.weight.zero_()
        biased.iis_head.bias.copy_(torch.tensor([[0.0, 0.0, 5.0]]))
    assert {p[0]["label"] for p in ConceptClassifier(biased, tiny_image_processor())(images)} == {"LABEL_2"}

    # One image gives one list; paths and a Dataset work; the default head is the last ratio.
    single = classifier(images[1])
    assert isinstance(single, list) and isinstance(single[0], dict) and len(single) == 3
    assert single == classifier(images[1], sparsity_ratio=0.9)
    path = tmp_path / "one.png"
    images[1].save(path)
    from_path = classifier(str(path))
    assert [p["label"] for p in from_path] == [p["label"] for p in single]
    from_dataset = classifier(data.select([0, 11, 22]), sparsity_ratio=0.5, top_k=2)
    assert [[p["label"] for p in row] for row in from_dataset] == [
        [p["label"] for p in row] for row in predictions
    ]
    with pytest.raises(ValueError, match="top_k"):
        classifier(images, top_k=0)
    with pytest.raises(TypeError, match="IISModelForImageClassification"):
        ConceptClassifier(prototype_model.backbone)


def test_a_classifier_from_compute_iis_heads(tmp_path, text_setup, data):
    backbone, bank, result, features = text_setup
    classifier = ConceptClassifier.from_heads(
        backbone, result, bank, image_processor=tiny_image_processor(), id2label=["red", "green", "blue"]
    )
    assert classifier.sparsity_ratios == [0.0, 0.5]
    logits = result.heads(features.features)[0].detach()  # the heads on extract_features' representations
    predictions = classifier(data, sparsity_ratio=0.0, top_k=1)
    assert [p[0]["label"] for p in predictions] == [
        ["red", "green", "blue"][i] for i in logits.argmax(-1).tolist()
    ]
    np.testing.assert_allclose(
        [p[0]["score"] for p in predictions], logits.softmax(-1).max(-1).values.detach().numpy(), atol=1e-5
    )
    accuracy = np.mean(
        [p[0]["label"] == ["red", "green", "blue"][y] for p, y in zip(predictions, data["label"])]
    )
    assert accuracy == pytest.approx(result.accuracies[0], abs=1e-9)

    # The heads belong to this bank: another bank's names would explain someone else's concepts.
    other = ConceptBank(vectors=torch.randn(3, 32), names=["x", "y", "z"])
    with pytest.raises(ValueError, match="other concepts"):
        ConceptClassifier.from_heads(backbone, result, other, image_processor=tiny_image_processor())
    with pytest.raises(ValueError, match="the concept bank has 2"):
        ConceptClassifier.from_heads(
            backbone, result, bank.subset([0, 1]), image_processor=tiny_image_processor()
        )

    # Heads from compute_iis become a savable IIS model that `iis-hf explain` can read.
    model = iis_model_from_heads(backbone, bank, result)
    model.save_pretrained(tmp_path / "model")
    tiny_image_processor().save_pretrained(tmp_path / "model")
    direct = explain(classifier, data[3]["image"], sparsity_ratio=0.5)
    reloaded = explain(str(tmp_path / "model"), data[3]["image"], sparsity_ratio=0.5)
    assert reloaded.index == direct.index and reloaded.logit == pytest.approx(direct.logit, abs=1e-6)


# ---------------------------------------------------------------------------- the command line
def run_cli(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_explain_on_the_command_line(tmp_path, saved_model, data, capsys):
    image = tmp_path / "image.png"
    data[7]["image"].save(image)
    output = tmp_path / "explanation.png"
    code, out, err = run_cli(
        ["explain", "--model", saved_model, "--image", str(image), "--output", str(output), "--top-k", "4"],
        capsys,
    )
    assert code == 0, err
    assert "predicted" in out and "top concepts" in out and f"wrote {output}" in out
    check_png(output)

    json_output = tmp_path / "explanation-2.png"
    code, out, err = run_cli(
        [
            "explain",
            "--model",
            saved_model,
            "--image",
            str(image),
            "--output",
            str(json_output),
            "--sparsity-ratio",
            "0.5",
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    payload = json.loads(out)
    assert (
        payload["sparsity_ratio"] == 0.5 and len(payload["concepts"]) == 8 and payload["image"] == str(image)
    )
    assert abs(sum(payload["contributions"]) - (payload["logit"] - payload["bias"])) < 1e-9
    expected = explain(saved_model, str(image), sparsity_ratio=0.5)
    assert payload["label"] == expected.label and payload["logit"] == pytest.approx(expected.logit, abs=1e-9)
    check_png(json_output)


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing model", "does not exist"),
        ("plain backbone", "iis_config.json"),
        ("broken image", "is not an image Pillow can read"),
        ("missing image", "does not exist"),
        ("no such ratio", "no interpretation head for sparsity ratio 0.3"),
        ("bad top-k", "--top-k must be >= 1"),
    ],
)
def test_explain_errors_are_one_line_exit_2_and_no_file(
    tmp_path, saved_model, tiny_models, data, capsys, case, message
):
    image = tmp_path / "image.png"
    data[0]["image"].save(image)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff truncated")
    args = {"--model": saved_model, "--image": str(image), "--output": str(tmp_path / "out.png")}
    extra = []
    if case == "missing model":
        args["--model"] = str(tmp_path / "no-model")
    elif case == "plain backbone":
        args["--model"] = tiny_models("vit")
    elif case == "broken image":
        args["--image"] = str(broken)
    elif case == "missing image":
        args["--image"] = str(tmp_path / "missing.png")
    elif case == "no such ratio":
        extra = ["--sparsity-ratio", "0.3"]
    else:
        extra = ["--top-k", "0"]
    code, out, err = run_cli(["explain", *[x for kv in args.items() for x in kv], *extra], capsys)
    lines = [line for line in err.splitlines() if line.startswith("iis-hf explain: error:")]
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err and out == ""
    assert not (tmp_path / "out.png").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.png")]


def test_explanation_names_moved_to_their_module_still_work_from_the_top_level_with_a_warning():
    """`iis_hf.explain` is their home; the top level kept them for one release (CHANGELOG.md)."""
    import iis_hf

    assert "Explanation" not in iis_hf.__all__ and "explain_prediction" not in dir(iis_hf)
    with pytest.warns(FutureWarning, match=r"from iis_hf\.explain import Explanation"):
        assert iis_hf.Explanation is Explanation
    with pytest.warns(FutureWarning, match=r"from iis_hf\.explain import explain_prediction"):
        assert iis_hf.explain_prediction is explain
    with pytest.warns(FutureWarning, match=r"iis_hf\.explain"):
        from iis_hf import ConceptClassifier as top_level
    assert top_level is ConceptClassifier
