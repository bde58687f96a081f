"""Text concepts: CLIP scoring, the learned projection, both cutoffs, saving, and where a bank plugs in.

A random-init CLIP cannot know what "red" is, so the learning and the cutoffs are tested with CLIP
similarities given by construction (`clip_similarities=`) on images whose concepts are known
(coloured squares and circles). The tiny CLIP is used to run the whole path end to end.

The tiny CLIP's tokenizer is built offline: a `tokenizers` WordLevel model over the test words plus
CLIP's special tokens, with a whitespace pre-tokenizer and a "<|startoftext|> $A <|endoftext|>"
template, wrapped as `PreTrainedTokenizerFast(tokenizer_object=...)`. `CLIPProcessor` accepts it
(and saves / reloads it as tokenizer.json) next to a `CLIPImageProcessorPil` of size 32.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import build_tiny_model, tiny_config, tiny_image_processor
from PIL import Image, ImageDraw
from safetensors.torch import load_file

from iis_hf import (
    ConceptBank,
    IISModelForImageClassification,
    InterpretationHead,
    compute_iis,
    extract_features,
)
from iis_hf.cli import main
from iis_hf.concepts import CONFIG_NAME, WEIGHTS_NAME, LinearConcepts
from iis_hf.concepts.text import (
    DEFAULT_CONCEPT_FILE,
    compute_clip_similarities,
    cubed_cosine_similarity,
    load_clip,
    read_concept_words,
)
from iis_hf.config import ConceptsConfig
from iis_hf.errors import IISError

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 50, 220)}
SHAPES = ("square", "circle")
WORDS = ["red", "green", "blue", "square", "circle", "stripes"]
SPECIAL_TOKENS = ["<|startoftext|>", "<unk>", "<|endoftext|>"]  # ids 0, 1, 2 = the config's bos / eos ids


def shapes(num: int, seed: int):
    """Coloured squares and circles on dark noise: image i has colour i % 3 and shape (i // 3) % 2."""
    rng = np.random.default_rng(seed)
    images, meta = [], []
    for i in range(num):
        colour, shape = list(COLOURS)[i % 3], SHAPES[(i // 3) % 2]
        image = Image.fromarray(rng.integers(0, 50, (32, 32, 3)).astype(np.uint8))
        x0, y0 = (int(v) for v in rng.integers(0, 12, size=2))
        draw = ImageDraw.Draw(image)
        (draw.rectangle if shape == "square" else draw.ellipse)(
            [x0, y0, x0 + 18, y0 + 18], fill=COLOURS[colour]
        )
        images.append(image)
        meta.append((colour, shape))
    return images, meta


def similarities_by_construction(meta, words=WORDS, seed=0):
    """What a CLIP that knows colours would say: 0.32 when the word is in the image, else 0.18.

    "stripes" is in no image: 0.12 everywhere (below the CLIP cutoff).
    """
    rng = np.random.default_rng(seed)
    table = np.array(
        [
            [0.32 if word in (colour, shape) else (0.12 if word == "stripes" else 0.18) for word in words]
            for colour, shape in meta
        ]
    )
    return table + rng.normal(0.0, 0.005, table.shape)


@pytest.fixture(scope="module")
def backbone():
    return build_tiny_model("vit")


@pytest.fixture(scope="module")
def probe(backbone):
    images, meta = shapes(90, seed=0)
    features = extract_features(
        backbone, images, image_processor=tiny_image_processor(), progress=False
    ).features
    return images, meta, features


@pytest.fixture(scope="module")
def colour_bank(probe):
    _images, meta, features = probe
    return ConceptBank.from_text(
        WORDS, None, features=features, clip_similarities=similarities_by_construction(meta), progress=False
    )


def save_tiny_clip(path, words=WORDS, tokenizer=True, image_processor=True):
    """A random-init CLIPModel with a word-level tokenizer and a 32-pixel image processor."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import CLIPImageProcessorPil, CLIPModel, CLIPProcessor, PreTrainedTokenizerFast

    torch.manual_seed(0)
    CLIPModel(tiny_config("clip")).save_pretrained(path)
    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, "a", "photo", "of", *words])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", 0), ("<|endoftext|>", 2)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<unk>",
    )
    pixels = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    if tokenizer and image_processor:
        CLIPProcessor(image_processor=pixels, tokenizer=fast).save_pretrained(path)
    elif tokenizer:
        fast.save_pretrained(path)
    elif image_processor:
        pixels.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


# ---------------------------------------------------------------------------- words
def test_concept_words_from_a_file_or_a_list(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("# colours\nred\n\n  green  # a comment\nred\n#blue\npolka dots\n", encoding="utf-8")
    assert read_concept_words(path) == ["red", "green", "polka dots"]
    assert read_concept_words(str(path)) == ["red", "green", "polka dots"]
    assert read_concept_words([" red", "red", "blue "]) == ["red", "blue"]


def test_an_empty_word_list_is_refused(tmp_path, probe):
    _images, _meta, features = probe
    with pytest.raises(ValueError, match="no concept words"):
        ConceptBank.from_text([], None, features=features, clip_similarities=np.zeros((90, 0)))
    (tmp_path / "empty.txt").write_text("# nothing but comments\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no concept words"):
        read_concept_words(tmp_path / "empty.txt")
    with pytest.raises(ValueError, match="does not exist"):
        read_concept_words(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="string"):
        read_concept_words(["red", 3])


def test_the_starter_vocabulary_is_shipped_and_clean():
    words = read_concept_words(DEFAULT_CONCEPT_FILE)
    assert 150 <= len(words) <= 250
    raw = [line.strip() for line in DEFAULT_CONCEPT_FILE.read_text().splitlines()]
    entries = [line for line in raw if line and not line.startswith("#")]
    assert len(entries) == len(words), "the starter vocabulary repeats a word"
    assert {"red", "striped", "wood", "wheel", "sky"} <= set(words)


# ---------------------------------------------------------------------------- the match and the fit
def test_cubed_cosine_similarity_is_the_label_free_cbm_match():
    targets = torch.tensor([[0.1, 1.0, 0.1], [0.3, 2.0, 0.3], [0.2, 3.0, 0.2], [0.6, 4.0, 0.6]])
    outputs = torch.tensor([[1.0, 5.0, 1.0], [3.0, 5.0, 4.0], [2.0, 5.0, 1.5], [6.0, 5.0, 3.0]])
    match = cubed_cosine_similarity(targets, outputs)
    assert match[0] > 0.999  # outputs are 10 x targets: a perfect match, whatever the scale
    assert match[1] == 0  # a constant output matches nothing (and is not NaN)
    # Column 2 by hand: centre over the images, cube, cosine.
    a = (targets[:, 2] - targets[:, 2].mean()) ** 3
    b = (outputs[:, 2] - outputs[:, 2].mean()) ** 3
    torch.testing.assert_close(match[2], (a @ b) / (a.norm() * b.norm()))
    plain = torch.nn.functional.cosine_similarity(targets[:, 2] - 0.3, outputs[:, 2] - 2.375, dim=0)
    assert abs(float(match[2] - plain)) > 0.05  # cubing matters: it is not the plain correlation
    torch.testing.assert_close(cubed_cosine_similarity(targets, -outputs)[2], -match[2])


def test_the_projection_learned_for_red_ranks_red_images_first(backbone, colour_bank):
    assert {"red", "green", "blue"} <= set(colour_bank.names)
    assert colour_bank.kind == "text" and colour_bank.dim == 32 and colour_bank.has_projection
    # New images the projection never saw: the red ones must come first on the "red" activation.
    images, meta = shapes(30, seed=1)
    features = extract_features(
        backbone, images, image_processor=tiny_image_processor(), progress=False
    ).features
    activations = colour_bank.projection()(features)
    for colour in COLOURS:
        ranking = activations[:, colour_bank.names.index(colour)].argsort(descending=True)
        assert [meta[i][0] for i in ranking[:10].tolist()] == [colour] * 10, colour


def test_activations_are_standardised_with_the_train_statistics(probe, colour_bank):
    _images, _meta, features = probe
    train = [i for i in range(90) if i not in set(held_out_rows(colour_bank))]
    activations = colour_bank.projection()(features[train])
    torch.testing.assert_close(activations.mean(0), torch.zeros(colour_bank.num_concepts), atol=1e-4, rtol=0)
    torch.testing.assert_close(activations.std(0), torch.ones(colour_bank.num_concepts), atol=1e-4, rtol=0)


def held_out_rows(bank):
    from iis_hf.concepts.text import split_probe

    p = bank.provenance
    return split_probe(p["num_probe_images"], p["holdout_fraction"], p["seed"])[1]


def test_the_clip_cutoff_drops_words_clip_does_not_see(probe, colour_bank):
    _images, meta, features = probe
    assert "stripes" not in colour_bank.names
    assert colour_bank.provenance["dropped_by_clip_cutoff"] == ["stripes"]
    scores = colour_bank.provenance["clip_scores"]
    assert set(scores) == set(WORDS) and scores["stripes"] < 0.25 < scores["red"]
    assert "stripes" not in colour_bank.provenance["holdout_matches"]
    # Raising the cutoff above every word's score leaves nothing, and the error says so.
    with pytest.raises(ValueError, match=r"CLIP cutoff 0\.4.*best mean top-5 CLIP similarity is 0\.3"):
        ConceptBank.from_text(
            WORDS,
            None,
            features=features,
            clip_similarities=similarities_by_construction(meta),
            clip_cutoff=0.4,
        )


def test_the_interpretability_cutoff_drops_words_the_backbone_does_not_represent(probe, colour_bank):
    _images, meta, features = probe
    # "noise": CLIP "sees" it strongly, but at random, unrelated to the image: nothing can match it.
    words = [*WORDS, "noise"]
    sims = np.concatenate(
        [similarities_by_construction(meta), np.random.default_rng(5).uniform(0.26, 0.4, (90, 1))], axis=1
    )
    bank = ConceptBank.from_text(words, None, features=features, clip_similarities=sims, progress=False)
    matches = bank.provenance["holdout_matches"]
    assert "noise" not in bank.names and "noise" in bank.provenance["dropped_by_interpretability_cutoff"]
    assert matches["noise"] <= 0.45 < min(matches[w] for w in ("red", "green", "blue"))
    for source, name in zip(bank.sources, bank.names):
        assert source["word"] == name and source["holdout_match"] == matches[name] > 0.45
    # The recorded match is what the bank's own projection achieves on the held-out images.
    rows = held_out_rows(bank)
    recorded = cubed_cosine_similarity(
        torch.as_tensor(sims[rows][:, [words.index(n) for n in bank.names]]).double(),
        bank.projection()(features[rows]).double(),
    )
    np.testing.assert_allclose(recorded.numpy(), [matches[n] for n in bank.names], atol=1e-4)
    with pytest.raises(ValueError, match=r"interpretability cutoff 0\.999.*best held-out match is 0\.9"):
        ConceptBank.from_text(
            words, None, features=features, clip_similarities=sims, interpretability_cutoff=0.999
        )


def test_bad_settings_and_shapes_are_refused(probe):
    _images, meta, features = probe
    sims = similarities_by_construction(meta)
    with pytest.raises(ValueError, match=r"\(90, 6\)"):
        ConceptBank.from_text(WORDS, None, features=features, clip_similarities=sims[:, :3])
    with pytest.raises(ValueError, match="holdout_fraction"):
        ConceptBank.from_text(WORDS, None, features=features, clip_similarities=sims, holdout_fraction=1.0)
    with pytest.raises(ValueError, match="at least 2 images"):
        ConceptBank.from_text(WORDS, None, features=features[:4], clip_similarities=sims[:4])
    with pytest.raises(ValueError, match="backbone= and probe_dataset="):
        ConceptBank.from_text(WORDS, None, clip_similarities=sims)


def test_a_concepts_config_sets_what_the_keywords_set(probe, colour_bank, tmp_path):
    """The pipeline passes its ConceptsConfig; a caller may pass keywords: one recipe, one bank."""
    _images, meta, features = probe
    sims = similarities_by_construction(meta)
    words = tmp_path / "words.txt"
    words.write_text("\n".join(WORDS) + "\n")
    config = ConceptsConfig(
        concept_kind="text", concept_file=str(words), clip_cutoff=0.25, projection_epochs=1000
    )
    bank = ConceptBank.from_text(config=config, features=features, clip_similarities=sims, progress=False)
    assert bank.names == colour_bank.names
    torch.testing.assert_close(bank.vectors, colour_bank.vectors)
    assert bank.provenance["clip_scores"] == colour_bank.provenance["clip_scores"]
    # a keyword overrides the config's field (`epochs` is its `projection_epochs`)
    with pytest.raises(ValueError, match=r"CLIP cutoff 0\.4"):
        ConceptBank.from_text(config=config, features=features, clip_similarities=sims, clip_cutoff=0.4)
    with pytest.raises(IISError, match="projection_epochs must be an int >= 1"):
        ConceptBank.from_text(config=config, features=features, clip_similarities=sims, epochs=0)
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['epoch'\]"):
        ConceptBank.from_text(WORDS, features=features, clip_similarities=sims, epoch=5)


# ---------------------------------------------------------------------------- saving, loading, plugging in
def test_a_text_bank_round_trips_with_identical_outputs(tmp_path, probe, colour_bank):
    _images, _meta, features = probe
    colour_bank.save_pretrained(tmp_path / "bank")
    config = json.loads((tmp_path / "bank" / CONFIG_NAME).read_text())
    assert config["kind"] == "text" and config["projection"] == "linear-standardized"
    assert config["format_version"] == 2 and config["dim"] == 32
    tensors = load_file(str(tmp_path / "bank" / WEIGHTS_NAME))
    # No "vectors": a reader that ignores projections fails instead of computing the wrong activations.
    assert sorted(tensors) == ["projection.mean", "projection.std", "projection.weight"]

    loaded = ConceptBank.from_pretrained(tmp_path / "bank")
    assert isinstance(loaded.projection(), LinearConcepts)
    assert loaded.names == colour_bank.names and loaded.sources == colour_bank.sources
    assert loaded.provenance == json.loads(json.dumps(colour_bank.provenance))
    assert torch.equal(loaded.projection()(features), colour_bank.projection()(features))
    head_a, head_b = InterpretationHead(colour_bank, 3, 0.5), InterpretationHead(tmp_path / "bank", 3, 0.5)
    head_b.load_state_dict(head_a.state_dict())
    assert torch.equal(head_a(features), head_b(features))
    # A subset keeps its rows of the projection.
    subset = colour_bank.subset([1])
    assert subset.names == colour_bank.names[1:2]
    torch.testing.assert_close(
        subset.projection()(features)[:, 0], colour_bank.projection()(features)[:, 1], atol=1e-5, rtol=0
    )


def test_a_prototype_bank_keeps_the_version_1_format(tmp_path):
    bank = ConceptBank(vectors=torch.randn(4, 5), names=list("abcd"))
    bank.save_pretrained(tmp_path / "bank")
    config = json.loads((tmp_path / "bank" / CONFIG_NAME).read_text())
    assert config["format_version"] == 1 and "projection" not in config
    assert sorted(load_file(str(tmp_path / "bank" / WEIGHTS_NAME))) == ["vectors"]
    assert not ConceptBank.from_pretrained(tmp_path / "bank").has_projection


def test_a_damaged_text_bank_is_refused(tmp_path, colour_bank):
    colour_bank.save_pretrained(tmp_path / "bank")
    tensors = load_file(str(tmp_path / "bank" / WEIGHTS_NAME))
    from safetensors.torch import save_file

    save_file(
        {k: v for k, v in tensors.items() if k != "projection.std"}, str(tmp_path / "bank" / WEIGHTS_NAME)
    )
    with pytest.raises(ValueError, match=r"projection\.std"):
        ConceptBank.from_pretrained(tmp_path / "bank")
    save_file(
        {**tensors, "projection.std": torch.zeros_like(tensors["projection.std"])},
        str(tmp_path / "bank" / WEIGHTS_NAME),
    )
    with pytest.raises(ValueError, match="std must be > 0"):
        ConceptBank.from_pretrained(tmp_path / "bank")
    with pytest.raises(ValueError, match="cannot cluster"):
        ConceptBank.from_clusters(colour_bank, 2)


def test_a_text_bank_plugs_into_compute_iis_and_the_iis_model(tmp_path, probe, colour_bank):
    _images, meta, features = probe
    labels = torch.tensor([list(COLOURS).index(colour) for colour, _shape in meta])
    result = compute_iis(
        features[:60],
        labels[:60],
        features[60:],
        labels[60:],
        colour_bank,
        sparsity_ratios=[0.0, 0.5],
        epochs=10,
        progress=False,
        return_heads=True,
    )
    assert result.num_concepts == colour_bank.num_concepts and result.accuracies[0] > 0.6  # chance is 1/3
    torch.testing.assert_close(result.heads.concepts(features), colour_bank.projection()(features))
    colour_bank.save_pretrained(tmp_path / "bank")
    from_path = compute_iis(
        features[:60],
        labels[:60],
        features[60:],
        labels[60:],
        str(tmp_path / "bank"),
        sparsity_ratios=[0.0, 0.5],
        epochs=10,
        progress=False,
    )
    assert from_path.accuracies == result.accuracies

    model = IISModelForImageClassification(build_tiny_model("vit"), colour_bank, sparsity_ratios=(0.5,))
    pixels = torch.randn(2, 3, 32, 32)
    output = model(pixel_values=pixels)
    assert (
        output.iis_logits.shape == (1, 2, 3)
        and output.concept_activations.shape[-1] == colour_bank.num_concepts
    )
    model.save_pretrained(tmp_path / "model")
    again = IISModelForImageClassification.from_pretrained(tmp_path / "model")
    assert again.concept_bank.kind == "text"
    assert torch.equal(again(pixel_values=pixels).iis_logits, output.iis_logits)
    with pytest.raises(ValueError, match="dimension"):
        IISModelForImageClassification(narrow_vit(), colour_bank)


def narrow_vit():
    """A ViT whose representation has 16 numbers, not the bank's 32."""
    import transformers as tf

    config = tiny_config("vit")
    config.hidden_size, config.intermediate_size = 16, 32
    return tf.ViTForImageClassification(config)


def test_a_text_bank_path_works_in_the_metric(tmp_path, probe, colour_bank):
    import evaluate
    from test_metric import METRIC_DIR

    _images, meta, features = probe
    colour_bank.save_pretrained(tmp_path / "bank")
    metric = evaluate.load(str(METRIC_DIR), "representations", cache_dir=str(tmp_path / "cache"))
    labels = [list(COLOURS).index(colour) for colour, _shape in meta]
    scores = metric.compute(
        predictions=features.tolist(),
        references=labels,
        concept_bank=str(tmp_path / "bank"),
        sparsity_ratios=[0.0, 0.5],
        epochs=5,
        eval_fraction=0.6,  # 54 of the 90 images scored: the config refuses fewer than 50
    )
    assert 0.0 < scores["iis"] <= 0.5 + 1e-9
    assert scores["iis_accuracy_0"] > 0 and "iis_accuracy_0.5" in scores and scores["iis_valid"] in (0.0, 1.0)


# ---------------------------------------------------------------------------- the tiny CLIP, end to end
def test_the_tiny_clip_runs_end_to_end(tiny_clip, backbone, probe):
    images, _meta, features = probe
    bank = ConceptBank.from_text(
        WORDS,
        tiny_clip,
        backbone=backbone,
        probe_dataset=images,
        image_processor=tiny_image_processor(),
        clip_cutoff=-1.0,
        interpretability_cutoff=-1.0,
        epochs=20,
        progress=False,
    )
    assert bank.names == WORDS and bank.kind == "text"
    assert bank.provenance["clip_model"] == tiny_clip and bank.provenance["prompt"] == "{}"
    torch.testing.assert_close(bank.projection()(features).std(0).mean(), torch.tensor(1.0), atol=0.2, rtol=0)
    # The recorded CLIP scores are mean top-5 cosines computed directly with the model.
    model, processor = load_clip(tiny_clip)
    with torch.no_grad():
        text = model.get_text_features(
            **processor.tokenizer(WORDS, padding=True, return_tensors="pt")
        ).pooler_output
        pixels = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
        image = model.get_image_features(pixel_values=pixels).pooler_output
    cosine = torch.nn.functional.normalize(image, dim=-1) @ torch.nn.functional.normalize(text, dim=-1).T
    expected = cosine.topk(5, dim=0).values.mean(0)
    recorded = torch.tensor([bank.provenance["clip_scores"][w] for w in WORDS])
    torch.testing.assert_close(recorded, expected, atol=1e-5, rtol=0)
    # A prompt changes what CLIP reads, so it changes the scores.
    prompted = compute_clip_similarities(tiny_clip, images[:8], WORDS, prompt="a photo of {}", progress=False)
    assert not torch.allclose(prompted, cosine[:8], atol=1e-4)
    torch.testing.assert_close(
        compute_clip_similarities(tiny_clip, images[:8], WORDS, progress=False), cosine[:8], atol=1e-5, rtol=0
    )


def test_a_clip_folder_without_its_processor_is_refused_clearly(tmp_path, tiny_clip, probe):
    images, _meta, features = probe
    only_weights = tmp_path / "only-weights"
    only_weights.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(f"{tiny_clip}/{name}", only_weights / name)
    with pytest.raises(ValueError, match=r"lacks a tokenizer .* and an image processor"):
        ConceptBank.from_text(WORDS, str(only_weights), features=features, probe_dataset=images)
    no_tokenizer = save_tiny_clip(tmp_path / "no-tokenizer", tokenizer=False)
    with pytest.raises(ValueError, match=r"lacks a tokenizer \(tokenizer\.json.*save_pretrained"):
        load_clip(no_tokenizer)
    no_pixels = save_tiny_clip(tmp_path / "no-image-processor", image_processor=False)
    with pytest.raises(ValueError, match=r"lacks an image processor \(preprocessor_config\.json\)"):
        load_clip(no_pixels)
    with pytest.raises(ValueError, match="cannot load a CLIP model"):
        load_clip(str(tmp_path / "missing-folder"))


# ---------------------------------------------------------------------------- the command line
@pytest.fixture(scope="module")
def saved_shapes(tmp_path_factory):
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as ImageFeature

    images, meta = shapes(45, seed=2)
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=list(COLOURS))})
    data = Dataset.from_dict(
        {"image": images, "label": [list(COLOURS).index(c) for c, _ in meta]}, features=features
    )
    path = tmp_path_factory.mktemp("data") / "shapes"
    data.save_to_disk(str(path))
    return str(path)


def test_score_with_text_concepts_on_the_command_line(tmp_path, tiny_models, tiny_clip, saved_shapes, capsys):
    words = tmp_path / "words.txt"
    words.write_text("# test words\nred\ngreen\nblue\nsquare\n", encoding="utf-8")
    common = [
        "score",
        "--model",
        tiny_models("vit"),
        "--dataset",
        saved_shapes,
        "--epochs",
        "2",
        "--no-progress",
    ]
    common += [
        "--concept-kind",
        "text",
        "--concept-file",
        str(words),
        "--clip-model",
        tiny_clip,
        "--sparsity-ratios",
        "0",
        "0.5",
        "--projection-epochs",
        "50",
    ]
    out_dir = tmp_path / "out"
    code = main(
        [*common, "--output-dir", str(out_dir), "--clip-cutoff", "-1", "--interpretability-cutoff", "-1"]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "4 text concepts" in out
    bank = ConceptBank.from_pretrained(out_dir / "concept_bank")
    assert bank.kind == "text" and bank.names == ["red", "green", "blue", "square"]
    report = json.loads((out_dir / "iis.json").read_text())
    # a local CLIP folder is recorded by its base name (no path of this machine in a record that may be pushed)
    assert report["num_concepts"] == 4 and report["settings"]["concepts"]["clip_model"] == "tiny-clip"
    assert report["settings"]["concepts"]["kind"] == "text"

    # A cutoff nothing passes, or a missing word file: one stderr line, exit 2, no output.
    for extra, message in (
        (["--clip-cutoff", "0.99"], "no concept passed the CLIP cutoff 0.99"),
        (["--concept-file", str(tmp_path / "missing.txt")], "does not exist"),
    ):
        failed = tmp_path / "failed"
        code = main([*common, "--output-dir", str(failed), *extra])
        _out, err = capsys.readouterr()
        lines = [line for line in err.splitlines() if line.startswith("iis-hf score: error:")]
        assert code == 2 and len(lines) == 1 and message in lines[0] and "Traceback" not in err, err
        assert not failed.exists()
    code = main(
        [
            "score",
            "--model",
            tiny_models("vit"),
            "--dataset",
            saved_shapes,
            "--output-dir",
            str(tmp_path / "x"),
            "--concept-file",
            str(words),
        ]
    )
    assert code == 2 and "--concept-kind text" in capsys.readouterr().err
