"""The explanation shows the sign of each concept's activation: a positive contribution from a
negative activation times a negative weight reads "unlike", never as a resemblance."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import build_tiny_model, make_image_dataset, tiny_image_processor

from iis_hf import ConceptBank, IISModelForImageClassification
from iis_hf.explain import ConceptContribution, explain


def test_a_concepts_label_carries_the_sign_of_its_activation():
    unlike = ConceptContribution(index=0, name="stripes", activation=-0.8, weight=-2.0, contribution=1.6)
    like = ConceptContribution(index=1, name="fur", activation=0.5, weight=2.0, contribution=1.0)
    assert (unlike.activation_sign, unlike.weight_sign, unlike.relation) == (-1, -1, "unlike")
    assert (like.activation_sign, like.weight_sign, like.relation) == (1, 1, "like")
    assert unlike.label == "- unlike stripes" and like.label == "+ like fur"
    assert unlike.to_dict()["label"] == "- unlike stripes" and unlike.to_dict()["relation"] == "unlike"
    # The old fields are all still there.
    assert {"index", "name", "activation", "weight", "contribution", "source"} <= set(like.to_dict())


@pytest.fixture(scope="module")
def signed_case():
    """A prototype-concept model whose class-0 head gives one concept with a negative activation a
    negative weight (contribution > 0 from - x -) and one with a positive activation a positive weight."""
    torch.manual_seed(0)
    data = make_image_dataset(num_classes=3, per_class=4)
    backbone = build_tiny_model("vit")
    bank = ConceptBank.from_prototypes(
        backbone,
        data,
        image_processor=tiny_image_processor(),
        images_per_class=1,
        num_concepts=8,
        progress=False,
    )
    model = IISModelForImageClassification(backbone, bank, (0.0,)).eval()
    image = data[0]["image"]
    with torch.no_grad():
        model.iis_head.weight.zero_()
        model.iis_head.bias.zero_()
    # At ratio 0 every concept is active; after LayerNorm the activations have both signs.
    probe = explain(model, image, top_k=8, image_processor=tiny_image_processor())
    activations = {c.index: c.activation for c in probe.concepts}
    negative = min(activations, key=activations.get)
    positive = max(activations, key=activations.get)
    assert activations[negative] < 0 < activations[positive]
    with torch.no_grad():
        model.iis_head.weight[0, 0, negative] = -10.0 / abs(activations[negative])  # contribution +10
        model.iis_head.weight[0, 0, positive] = 5.0 / activations[positive]  # contribution +5
    return model, image, negative, positive


def test_a_positive_contribution_from_a_negative_activation_reads_unlike(signed_case, tmp_path):
    model, image, negative, positive = signed_case
    explanation = explain(model, image, top_k=2, image_processor=tiny_image_processor())
    assert explanation.index == 0
    first, second = explanation.concepts
    assert first.index == negative and second.index == positive
    assert first.contribution == pytest.approx(10.0, rel=1e-4) and first.contribution > 0
    assert (first.activation_sign, first.weight_sign, first.relation) == (-1, -1, "unlike")
    assert (second.activation_sign, second.weight_sign, second.relation) == (1, 1, "like")
    assert first.label == f"- unlike {first.name}" and second.label == f"+ like {second.name}"

    # The text says so ...
    summary = explanation.summary()
    assert f"- unlike {first.name}" in summary and f"+ like {second.name}" in summary
    # ... the JSON carries the signs ...
    payload = json.loads(json.dumps(explanation.to_dict()))
    listed = payload["concepts"]
    assert [c["activation_sign"] for c in listed] == [-1, 1] and [c["weight_sign"] for c in listed] == [-1, 1]
    assert [c["relation"] for c in listed] == ["unlike", "like"]
    assert [c["name"] for c in listed] == [first.name, second.name]  # the names themselves are unchanged
    # ... and the figure names the bars by these labels (the explanation itself is not changed).
    assert [c.name for c in explanation.labelled().concepts] == [first.label, second.label]
    assert explanation.concepts[0].name == first.name
    explanation.plot(tmp_path / "signed.png")
    assert (tmp_path / "signed.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
