"""An IIS you can compare and trust: the paper protocol's pieces, uncertainty, degenerate cases refused."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import build_tiny_model, tiny_image_processor

from iis_hf import compute_iis
from iis_hf.cli import main
from iis_hf.heads import InterpretationHeads, fit_heads
from iis_hf.heads.modules import LinearProbe
from iis_hf.heads.sparsify import ThresholdTieMask, sparsify_stacked
from iis_hf.stats import above_chance, bootstrap_iis, trapezoid_weights

RATIOS = [0.0, 0.5, 0.9]


def planted(n=240, dim=16, classes=3, seed=0, noise=1.0):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(classes, dim)) * 3
    labels = np.arange(n) % classes
    x = (means[labels] + noise * rng.normal(size=(n, dim))).astype(np.float32)
    return (
        torch.from_numpy(x),
        torch.from_numpy(labels),
        torch.from_numpy(rng.normal(size=(20, dim)).astype(np.float32)),
    )


# ---------------------------------------------------------------- the paper protocol's pieces
def test_the_published_mask_passes_half_the_gradient_through_the_threshold_element():
    # |a| = 0.5, 1.0, 2.0, 0.25, 1.5 with threshold 1.0 (the magnitude of the second element)
    a = torch.tensor([[[0.5, -1.0, 2.0, -0.25, 1.5]]], requires_grad=True)
    upstream = torch.tensor([[[1.0, 2.0, 3.0, 4.0, 5.0]]])
    out = ThresholdTieMask.apply(a, torch.tensor([[[1.0]]]))
    out.backward(upstream)
    assert out.detach().tolist() == [[[0.0, 0.0, 2.0, 0.0, 1.5]]]  # forward: the hard mask
    # kept elements pass the upstream gradient; the tie passes 0.5 * |a| * upstream = 0.5 * 1 * 2
    assert a.grad.tolist() == [[[0.0, 1.0, 3.0, 0.0, 5.0]]]

    hard = a.detach().clone().requires_grad_(True)
    (hard * (hard.abs() > 1.0)).backward(upstream)
    assert hard.grad.tolist() == [[[0.0, 0.0, 3.0, 0.0, 5.0]]]  # the default protocol: nothing at the tie


def test_stacked_sparsification_uses_the_published_backward_only_when_asked():
    a = torch.randn(2, 4, 10, requires_grad=True)
    ks = [3, 7]
    assert torch.equal(sparsify_stacked(a, ks), sparsify_stacked(a, ks, threshold_gradient=True))
    sparsify_stacked(a, ks, threshold_gradient=True).sum().backward()
    ties = (a.grad != 0) & (a.grad != 1)
    assert ties.sum(-1).tolist() == [[1] * 4, [1] * 4]  # exactly the k-th element of each row
    assert torch.allclose(a.grad[ties], 0.5 * a.detach().abs()[ties])


def test_the_published_initialisation_statistics():
    heads = InterpretationHeads(torch.randn(200, 8), 500, [0.0, 0.5], init="trunc_normal")
    assert (
        heads.weight.std().item() == pytest.approx(0.02, rel=0.02) and abs(heads.weight.mean().item()) < 1e-3
    )
    assert (
        torch.all(heads.bias == 0) and torch.all(heads.norm_weight == 1) and torch.all(heads.norm_bias == 0)
    )
    uniform = InterpretationHeads(torch.randn(200, 8), 500, [0.0, 0.5])
    bound = 1 / math.sqrt(200)
    assert uniform.weight.abs().max() <= bound and uniform.weight.std().item() == pytest.approx(
        bound / math.sqrt(3), rel=0.02
    )
    probe = LinearProbe(torch.zeros(64), torch.ones(64), 300, init="trunc_normal")
    assert probe.classifier.weight.std().item() == pytest.approx(0.02, rel=0.03) and torch.all(
        probe.classifier.bias == 0
    )


def test_the_paper_probe_reads_raw_features_and_trains_as_long_as_the_heads():
    x, y, concepts = planted()
    scale = torch.linspace(1, 50, x.shape[1])  # unequal scales: what standardisation would undo
    kwargs = dict(num_classes=3, sparsity_ratios=RATIOS, epochs=4, batch_size=64, progress=False)
    paper = fit_heads(x * scale, y, x[:60] * scale, y[:60], concepts, protocol="paper", **kwargs)
    converged = fit_heads(x * scale, y, x[:60] * scale, y[:60], concepts, **kwargs)
    assert paper.probe_steps == 4 * 4  # 240 rows in batches of 64: 4 steps per epoch, 4 epochs
    assert converged.probe_steps >= 1000
    assert torch.all(paper.probe.mean == 0) and torch.all(paper.probe.std == 1)
    assert not torch.all(converged.probe.std == 1)


def test_the_protocol_is_recorded_in_every_output(tiny_models, tmp_path, capsys):
    x, y, concepts = planted()
    result = compute_iis(
        x, y, x[:60], y[:60], concepts, sparsity_ratios=RATIOS, epochs=3, protocol="paper", progress=False
    )
    assert result.protocol == "paper" and result.settings["heads"]["protocol"] == "paper"
    assert "paper protocol" in result.table()


# ---------------------------------------------------------------- uncertainty
def test_trapezoid_weights_give_the_integral():
    ratios, accuracies = [0.5, 0.0, 0.9], np.array([0.6, 0.9, 0.3])
    from iis_hf import inherent_interpretability_score

    assert float(trapezoid_weights(ratios) @ accuracies / 0.9) == pytest.approx(
        inherent_interpretability_score(ratios, accuracies, 0.9)
    )


def test_the_bootstrap_interval_covers_the_seeds_and_narrows_with_more_rows():
    rng = np.random.default_rng(0)
    small = bootstrap_iis(RATIOS, rng.random((3, 40)) < 0.9, rng.random((3, 3, 40)) < 0.7)
    large = bootstrap_iis(RATIOS, rng.random((3, 4000)) < 0.9, rng.random((3, 3, 4000)) < 0.7)
    assert small.low < large.low < large.high < small.high


def test_seeds_give_a_mean_an_sd_and_an_interval_holding_every_seed(tmp_path):
    x, y, concepts = planted(n=150, noise=4.0)
    result = compute_iis(
        x[:90],
        y[:90],
        x[90:],
        y[90:],
        concepts,
        sparsity_ratios=RATIOS,
        epochs=5,
        num_seeds=3,
        progress=False,
    )
    u = result.uncertainty
    assert u["num_seeds"] == 3 and u["seeds"] == [0, 1, 2] and len(u["iis_per_seed"]) == 3
    assert result.iis == pytest.approx(np.mean(u["iis_per_seed"])) and u["sd"] == pytest.approx(
        np.std(u["iis_per_seed"], ddof=1)
    )
    assert all(u["ci"][0] <= value <= u["ci"][1] for value in u["iis_per_seed"])
    single = compute_iis(
        x[:90], y[:90], x[90:], y[90:], concepts, sparsity_ratios=RATIOS, epochs=5, progress=False
    )
    assert single.iis == pytest.approx(u["iis_per_seed"][0]) and single.uncertainty["sd"] is None
    # the side-by-side table (`iis-hf demo`) shows both too
    from iis_hf.outputs import comparison_table

    table = comparison_table({"three seeds": result, "one seed": single}).splitlines()
    sd_row, ci_row = table[-2].split(), table[-1]
    assert sd_row == ["±", "sd", f"{u['sd']:.4f}", "–"]
    assert ci_row.startswith("   95% CI") and ci_row.count(f"[{u['ci'][0]:.3f}, {u['ci'][1]:.3f}]") == 1


def test_seeds_on_the_command_line(tiny_models, tmp_path, capsys):
    from conftest import make_image_dataset

    data = tmp_path / "data"
    make_image_dataset(num_classes=3, per_class=10).save_to_disk(str(data))
    out = tmp_path / "out"
    code = main([
        "score", "--model", tiny_models("vit"), "--dataset", str(data), "--output-dir", str(out), "--num-seeds", "3",
        "--epochs", "3", "--num-concepts", "20", "--images-per-class", "2", "--no-progress",
    ])  # fmt: skip
    stdout, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads((out / "iis.json").read_text())
    low, high = report["uncertainty"]["ci"]
    assert all(low <= value <= high for value in report["uncertainty"]["iis_per_seed"])
    assert "sd over 3 seeds" in stdout and report["settings"]["heads"]["num_seeds"] == 3


# ---------------------------------------------------------------- degenerate cases refused
def test_the_chance_test():
    assert above_chance(10, 10, [0, 1] * 5).p_value < 0.01
    assert above_chance(50, 100, [0] * 50 + [1] * 50).p_value > 0.4
    assert above_chance(60, 100, [0] * 60 + [1] * 40).chance_rate == 0.6  # the majority class, not 1/K


def test_constant_features_give_an_undefined_iis_never_a_number():
    x, y, concepts = planted()
    constant = torch.ones_like(x)
    result = compute_iis(
        constant, y, constant[:60], y[:60], concepts, sparsity_ratios=RATIOS, epochs=3, progress=False
    )
    assert result.iis is None and "not clearly above chance" in result.undefined_reason
    assert json.loads(json.dumps(result.to_dict()))["iis"] is None and "undefined" in result.table()


def test_a_diverging_fit_is_an_error_naming_the_learning_rate():
    x, y, concepts = planted()
    with pytest.raises(ValueError, match=r"diverged.*learning rate 1e\+30.*lower the learning rate"):
        compute_iis(
            x * 1e15,
            y,
            x[:60],
            y[:60],
            concepts,
            sparsity_ratios=RATIOS,
            epochs=3,
            learning_rate=1e30,
            progress=False,
        )


def test_float64_features_beyond_float32_are_refused():
    x, y, concepts = planted()
    huge = x.double() * 1e200
    with pytest.raises(ValueError, match=r"beyond the float32 range"):
        compute_iis(huge, y, huge[:60], y[:60], concepts, sparsity_ratios=RATIOS, epochs=1, progress=False)


@pytest.fixture(scope="module")
def constant_model(tmp_path_factory):
    """A ViT classifier whose weights are 0 but for its last LayerNorm's bias: every image gets the same
    (non-zero) representation."""
    path = tmp_path_factory.mktemp("constant") / "vit"
    model = build_tiny_model("vit")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.vit.layernorm.bias.fill_(1.0)
    model.save_pretrained(path)
    tiny_image_processor().save_pretrained(path)
    return str(path)


@pytest.mark.parametrize("case", ["constant backbone", "learning rate inf"])
def test_degenerate_runs_exit_2_with_one_line_and_write_nothing(
    case, constant_model, tiny_models, tmp_path, capsys
):
    from conftest import make_image_dataset

    data = tmp_path / "data"
    make_image_dataset(num_classes=3, per_class=10).save_to_disk(str(data))
    out = tmp_path / "out"
    model, extra, message = {
        "constant backbone": (constant_model, [], "IIS is undefined: the standard accuracy A0"),
        "learning rate inf": (
            tiny_models("vit"),
            ["--learning-rate", "inf"],
            "--learning-rate must be a finite number > 0",
        ),
    }[case]
    code = main([
        "score", "--model", model, "--dataset", str(data), "--output-dir", str(out), "--epochs", "2",
        "--num-concepts", "20", "--images-per-class", "2", "--no-progress", *extra,
    ])  # fmt: skip
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("iis-hf score: error:")]
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err and not out.exists() and not list(tmp_path.glob(".out*"))
    if case == "constant backbone":  # --allow-chance writes the outputs, with the score null
        assert main(["score", "--model", model, "--dataset", str(data), "--output-dir", str(out), "--epochs", "2",
                     "--num-concepts", "20", "--images-per-class", "2", "--no-progress", "--allow-chance"]) == 0  # fmt: skip
        assert json.loads((out / "iis.json").read_text())["iis"] is None
