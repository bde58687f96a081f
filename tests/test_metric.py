"""The evaluate module metrics/iis: both configs, evaluate's canonical checks, multi-process, install."""

from __future__ import annotations

import doctest
import importlib
import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from unittest import mock

import evaluate
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
METRIC_DIR = REPO / "metrics" / "iis"
GRID = [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 0.98]

# Example 1 of the module's docstring, computed by hand:
# A(0) = 3/4, A(0.5) = 2/4, A0 = 4/4, IIS = (0.75 + 0.5) / 2 * 0.5 = 0.3125.
P = [[0, 0], [1, 1], [2, 0], [1, 1]]
Y = [0, 1, 2, 2]
S = [0, 1, 2, 2]


def accuracies(out, ratios):
    """A(rho) from the metric's scalar outputs, in the order of `ratios`."""
    return [out[f"iis_accuracy_{r:g}"] for r in ratios]


def load(config_name=None, **kwargs):
    return evaluate.load(str(METRIC_DIR), config_name, **kwargs)


@pytest.fixture
def iis(tmp_path):
    return load(cache_dir=str(tmp_path))


@pytest.fixture
def iis_repr(tmp_path):
    return load("representations", cache_dir=str(tmp_path))


def _subprocess_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update({"HF_EVALUATE_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **extra})
    return env


# ---------------------------------------------------------------------------------------------------
# default config


def test_hand_computed_example(iis):
    out = iis.compute(predictions=P, references=Y, standard_predictions=S, sparsity_ratios=[0.0, 0.5])
    ci = {k: out.pop(k) for k in ("iis_ci_low", "iis_ci_high")}
    assert out == {
        "iis": 0.3125,
        "iis_standard_accuracy": 1.0,
        "iis_accuracy_0": 0.75,
        "iis_accuracy_0.5": 0.5,
        "iis_valid": 1.0,
    }
    assert ci["iis_ci_low"] <= 0.3125 <= ci["iis_ci_high"]  # a bootstrap interval over the 4 rows
    assert all(type(v) is float for v in [*out.values(), *ci.values()])  # scalars: a Trainer logs every one


def test_accuracies_follow_the_given_ratio_order(iis):
    out = iis.compute(
        predictions=[row[::-1] for row in P], references=Y, standard_predictions=S, sparsity_ratios=[0.5, 0.0]
    )
    assert list(out)[:4] == ["iis", "iis_standard_accuracy", "iis_accuracy_0.5", "iis_accuracy_0"]
    assert accuracies(out, [0.5, 0.0]) == [0.5, 0.75]
    assert out["iis"] == 0.3125


def test_standard_accuracy_replaces_standard_predictions(iis):
    out = iis.compute(predictions=P, references=Y, standard_accuracy=0.8, sparsity_ratios=[0.0, 0.5])
    assert out["iis_standard_accuracy"] == 0.8
    assert out["iis"] == pytest.approx((0.75 + 0.5) / 0.8 / 2 * 0.5)


def test_standard_accuracy_from_standard_predictions(iis):
    out = iis.compute(
        predictions=P, references=Y, standard_predictions=[0, 1, 2, 0], sparsity_ratios=[0.0, 0.5]
    )
    assert out["iis_standard_accuracy"] == 0.75
    assert out["iis"] == pytest.approx((1.0 + 0.5 / 0.75) / 2 * 0.5)


@pytest.mark.filterwarnings("ignore:interpretation accuracy exceeds")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_library_function(iis, seed):
    from iis_hf import inherent_interpretability_score

    rng = np.random.default_rng(seed)
    ratios = list(rng.permutation(GRID))[: 3 + seed * 2]
    n = 50
    refs = rng.integers(0, 4, n)
    std = np.where(rng.random(n) < 0.9, refs, (refs + 1) % 4)
    preds = np.stack([np.where(rng.random(n) < 0.9 - r, refs, (refs + 1) % 4) for r in ratios], axis=1)
    out = iis.compute(predictions=preds, references=refs, standard_predictions=std, sparsity_ratios=ratios)
    accs = [float(np.mean(preds[:, j] == refs)) for j in range(len(ratios))]
    a0 = float(np.mean(std == refs))
    assert accuracies(out, ratios) == pytest.approx(accs)
    assert out["iis_standard_accuracy"] == pytest.approx(a0)
    assert out["iis"] == pytest.approx(inherent_interpretability_score(ratios, accs, a0), abs=1e-12)


def test_published_grid_is_the_default_for_eight_columns(iis):
    out = iis.compute(predictions=[[1] * 8, [0] * 7 + [1]], references=[1, 0], standard_accuracy=1.0)
    assert accuracies(out, GRID) == [1.0] * 7 + [0.5]
    assert out["iis"] == pytest.approx(0.95 + 0.75 * 0.03)


def test_perfect_representation_scores_the_grid_span(iis):
    refs = [0, 1, 2, 1]
    out = iis.compute(predictions=[[r] * 8 for r in refs], references=refs, standard_predictions=refs)
    assert out["iis"] == pytest.approx(0.98)


def test_add_batch_and_add_match_one_compute(tmp_path):
    whole = load(cache_dir=str(tmp_path / "a")).compute(
        predictions=P, references=Y, standard_predictions=[0, 1, 2, 0], sparsity_ratios=[0.0, 0.5]
    )
    batched = load(cache_dir=str(tmp_path / "b"))
    batched.add_batch(predictions=P[:1], references=Y[:1], standard_predictions=[0])
    batched.add_batch(predictions=np.array(P[1:3]), references=np.array(Y[1:3]), standard_predictions=[1, 2])
    batched.add(prediction=P[3], reference=Y[3], standard_prediction=0)
    assert batched.compute(sparsity_ratios=[0.0, 0.5]) == whole
    assert whole["iis_standard_accuracy"] == 0.75


def test_add_batch_without_standard_predictions(iis):
    iis.add_batch(predictions=P[:2], references=Y[:2])
    iis.add(prediction=P[2], reference=Y[2])
    out = iis.compute(predictions=P[3:], references=Y[3:], standard_accuracy=1.0, sparsity_ratios=[0.0, 0.5])
    assert accuracies(out, [0.0, 0.5]) == [0.75, 0.5]
    assert out["iis"] == 0.3125


def test_warns_when_a_head_beats_the_probe(iis):
    with pytest.warns(UserWarning, match=r"exceeds the standard accuracy.*max A/A0 = 1\.500"):
        out = iis.compute(predictions=P, references=Y, standard_accuracy=0.5, sparsity_ratios=[0.0, 0.5])
    assert out["iis"] == pytest.approx((1.5 + 1.0) / 2 * 0.5)


def test_no_warning_for_a_sound_probe(iis, recwarn):
    iis.compute(predictions=P, references=Y, standard_predictions=S, sparsity_ratios=[0.0, 0.5])
    assert not [w for w in recwarn if "exceeds the standard accuracy" in str(w.message)]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sparsity_ratios": [0.0, 0.5, 0.9]}, r"3 sparsity ratios but predictions have 2 columns"),
        ({"sparsity_ratios": [0.0]}, r"at least 2 sparsity ratio"),
        ({"sparsity_ratios": [0.0, 1.0]}, r"ratio 1\.0 is outside \[0, 1\)"),
        ({"sparsity_ratios": [-0.1, 0.5]}, r"ratio -0\.1 is outside \[0, 1\)"),
        ({"sparsity_ratios": [0.0, float("nan")]}, r"ratio nan is outside"),
        ({"sparsity_ratios": [0.5, 0.5]}, r"duplicate sparsity ratios \[0\.5\].*each ratio once"),
        ({"sparsity_ratios": "0.0,0.5"}, r"sparsity ratios must be numbers in \[0, 1\)"),
        ({"sparsity_ratios": [0.0, "x"]}, r"sparsity ratios must be numbers in \[0, 1\)"),
        (
            {"sparsity_ratios": [0.0, 0.5], "standard_accuracy": 0.0},
            r"standard_accuracy must be > 0, got 0\.0",
        ),
        ({"sparsity_ratios": [0.0, 0.5], "standard_accuracy": -0.5}, r"standard_accuracy must be > 0"),
        ({"sparsity_ratios": [0.0, 0.5], "standard_accuracy": float("nan")}, r"standard_accuracy is NaN"),
        ({"sparsity_ratios": [0.0, 0.5], "standard_accuracy": 85.0}, r"at most 1.*not a percentage"),
        ({"sparsity_ratios": [0.0, 0.5], "standard_accuracy": "high"}, r"standard_accuracy must be a number"),
        (
            {"sparsity_ratios": [0.0, 0.5]},
            r"standard accuracy A0 is missing.*standard_predictions=.*standard_acc",
        ),
        ({}, r"2 columns but no sparsity_ratios were given.*needs 8 columns"),
        (
            {"sparsity_ratios": [0.0, 0.5], "standard_accuracy": 1.0, "epochs": 3},
            r"\['epochs'\] only apply to the 're",
        ),
        (
            {"sparsity_ratios": [0.0, 0.5], "standard_accuracy": 1.0, "concept_bank": [[1.0]], "seed": 1},
            r"\['concept_bank', 'seed'\] only apply to the 'representations' config",
        ),
    ],
)
def test_errors(iis, kwargs, match):
    with pytest.raises(ValueError, match=match):
        iis.compute(predictions=P, references=Y, **kwargs)


def test_error_when_the_probe_gets_nothing_right(iis):
    with pytest.raises(
        ValueError, match=r"standard_accuracy must be > 0, got 0\.0.*at least one sample right"
    ):
        iis.compute(
            predictions=P, references=Y, standard_predictions=[9, 9, 9, 9], sparsity_ratios=[0.0, 0.5]
        )


def test_error_when_both_standard_inputs_are_given(iis):
    with pytest.raises(ValueError, match=r"both standard_predictions and standard_accuracy: give only one"):
        iis.compute(
            predictions=P,
            references=Y,
            standard_predictions=S,
            standard_accuracy=0.9,
            sparsity_ratios=[0.0, 0.5],
        )


def test_error_when_standard_predictions_cover_only_some_batches(iis):
    iis.add_batch(predictions=P[:2], references=Y[:2], standard_predictions=S[:2])
    iis.add_batch(predictions=P[2:], references=Y[2:])
    with pytest.raises(ValueError, match=r"standard_predictions were given for 2 of 4 samples"):
        iis.compute(sparsity_ratios=[0.0, 0.5])


def test_error_on_ragged_predictions(iis):
    with pytest.raises(ValueError, match=r"same length, got rows of lengths \[1, 2\]"):
        iis.compute(
            predictions=[[0, 0], [1]], references=[0, 1], standard_accuracy=1.0, sparsity_ratios=[0, 0.5]
        )


def test_error_on_mismatched_lengths_and_unknown_inputs(iis):
    with pytest.raises(ValueError, match=r"Mismatch in the number of predictions \(4\) and references \(3\)"):
        iis.compute(predictions=P, references=Y[:3], standard_accuracy=1.0, sparsity_ratios=[0.0, 0.5])
    with pytest.raises(ValueError, match=r"Bad inputs for evaluation module: \['probe'\]"):
        iis.add_batch(predictions=P, references=Y, probe=S)


def test_unknown_config():
    with pytest.raises(
        ValueError, match=r"unknown config 'multilabel'.*\['default', 'representations', 'classifier'\]"
    ):
        load("multilabel")


# ---------------------------------------------------------------------------------------------------
# evaluate's canonical checks (tests/test_metric_common.py::LocalModuleTest.test_load)


def test_canonical_load_signature_and_doctests():
    module = importlib.import_module(evaluate.loading.evaluation_module_factory(str(METRIC_DIR)).module_path)
    metric_cls = evaluate.loading.import_main_class(module.__name__)
    assert metric_cls.__name__ == "Iis"
    parameters = inspect.signature(metric_cls._compute).parameters
    assert all(p.kind != p.VAR_KEYWORD for p in parameters.values())
    assert {"sparsity_ratios", "standard_accuracy", "concept_bank", "epochs", "eval_fraction"} <= set(
        parameters
    )
    assert set(module.HEADS_KEYWORDS) <= set(parameters)  # generated from HeadsConfig's fields

    real_load = evaluate.load

    def load_local(name, *args, **kwargs):
        return real_load(str(METRIC_DIR.parent / name), *args, **kwargs)

    doctest.ELLIPSIS_MARKER = "[...]"
    try:
        with mock.patch("evaluate.load", side_effect=load_local):
            try:
                results = doctest.testmod(module, verbose=False, raise_on_error=True)
            except doctest.UnexpectedException as e:
                raise e.exc_info[1] from None
    finally:
        doctest.ELLIPSIS_MARKER = "..."
    assert results.failed == 0
    assert results.attempted > 1


def test_module_imports_its_work_from_iis_hf():
    # Like evaluate's canonical metrics (accuracy imports sklearn), the module is declarative: its
    # computations come from the library, so evaluate names iis_hf as the dependency to install.
    imports = evaluate.loading.get_imports(str(METRIC_DIR / "iis.py"))
    libraries = {name for kind, name, *_ in imports if kind == "library"} - set(sys.stdlib_module_names)
    assert libraries == {"datasets", "evaluate", "iis_hf"}, libraries
    source = (METRIC_DIR / "iis.py").read_text()
    assert "np." not in source and "def _integrate" not in source and "def _stratified_split" not in source


def test_metric_info():
    info = load().info
    assert info.module_name == "iis"
    assert "Shen" in info.citation and "@inproceedings" in info.citation
    assert set(info.features) == {"predictions", "references", "standard_predictions"}
    assert set(load("representations").info.features) == {"predictions", "references"}


# ---------------------------------------------------------------------------------------------------
# Subprocess jobs (each pays ~5 s for `import evaluate`), started together so they overlap:
# - evaluate's multi-process mode: two real processes sharing cache_dir + experiment_id;
# - `evaluate.load("iis")` by bare name, offline, from another folder, before and after install_metric().

STD = [0, 1, 2, 0]
SHARDS = [{"P": P[:1], "Y": Y[:1], "S": STD[:1]}, {"P": P[1:], "Y": Y[1:], "S": STD[1:]}]

_WORKER = textwrap.dedent(
    """
    import json, sys
    import evaluate
    metric_dir, cache_dir, rank, rows = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
    out = {}
    for exp, with_std in (("with-std", True), ("with-acc", False)):
        m = evaluate.load(metric_dir, num_process=2, process_id=rank, experiment_id=exp, cache_dir=cache_dir)
        if with_std:
            m.add_batch(predictions=rows["P"], references=rows["Y"], standard_predictions=rows["S"])
            out[exp] = m.compute(sparsity_ratios=[0.0, 0.5])
        else:
            m.add_batch(predictions=rows["P"], references=rows["Y"])
            out[exp] = m.compute(sparsity_ratios=[0.0, 0.5], standard_accuracy=0.75)
    print("RESULT" + json.dumps(out))
    """
)

_LOAD_BY_NAME = textwrap.dedent(
    """
    import json
    import evaluate
    from iis_hf.metric_install import install_metric
    try:
        evaluate.load("iis")
        before = "loaded"
    except FileNotFoundError as err:
        before = str(err)
    installed = install_metric()
    out = evaluate.load("iis").compute(
        predictions=[[0, 0], [1, 1], [2, 0], [1, 1]], references=[0, 1, 2, 2],
        standard_predictions=[0, 1, 2, 2], sparsity_ratios=[0.0, 0.5])
    rep = evaluate.load("iis", "representations")
    result = {"before": before, "installed": str(installed), "default": out, "representations": sorted(rep.features)}
    print("RESULT" + json.dumps(result))
    """
)


@pytest.fixture(scope="module")
def subprocess_jobs(tmp_path_factory):
    root = tmp_path_factory.mktemp("jobs")
    (root / "elsewhere").mkdir()

    def start(code, *args, cwd=root, **env):
        return subprocess.Popen(
            [sys.executable, "-c", code, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_subprocess_env(**env),
            cwd=cwd,
        )

    mp_env = {"HF_MODULES_CACHE": str(root / "mp-modules")}
    jobs = {
        f"rank{rank}": start(
            _WORKER, str(METRIC_DIR), str(root / "shared"), str(rank), json.dumps(shard), **mp_env
        )
        for rank, shard in enumerate(SHARDS)
    }
    jobs["install"] = start(
        _LOAD_BY_NAME,
        cwd=root / "elsewhere",
        HF_MODULES_CACHE=str(root / "modules"),
        HF_METRICS_CACHE=str(root / "metrics"),
    )

    def result(name):
        stdout, stderr = jobs[name].communicate(timeout=180)
        assert jobs[name].returncode == 0, stderr[-3000:]
        return json.loads(stdout.split("RESULT", 1)[1]), stderr

    yield result
    for proc in jobs.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_multi_process_mode(subprocess_jobs, tmp_path):
    rank0, _ = subprocess_jobs("rank0")
    rank1, _ = subprocess_jobs("rank1")
    single = load(cache_dir=str(tmp_path))
    expected_std = single.compute(
        predictions=P, references=Y, standard_predictions=STD, sparsity_ratios=[0.0, 0.5]
    )
    expected_acc = single.compute(
        predictions=P, references=Y, standard_accuracy=0.75, sparsity_ratios=[0.0, 0.5]
    )
    assert rank0 == {"with-std": expected_std, "with-acc": expected_acc}
    assert expected_std["iis_standard_accuracy"] == 0.75  # rank 0 saw rank 1's standard predictions
    assert rank1 == {"with-std": None, "with-acc": None}


# ---------------------------------------------------------------------------------------------------
# representations config


def _separable(n=300, dim=16, classes=3, concepts=20, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(classes, dim)) * 3
    labels = rng.integers(0, classes, n)
    features = (means[labels] + rng.normal(size=(n, dim))).astype(np.float32)
    return features, labels, rng.normal(size=(concepts, dim)).astype(np.float32)


@pytest.mark.filterwarnings("ignore:interpretation accuracy exceeds")
def test_representations_config_scores_separable_features(iis_repr):
    from iis_hf import inherent_interpretability_score

    x, y, c = _separable()
    out = iis_repr.compute(predictions=x, references=y, concept_bank=c, epochs=5)
    assert set(out) == {
        "iis", "iis_standard_accuracy", *(f"iis_accuracy_{r:g}" for r in GRID), "iis_ci_low", "iis_ci_high",
        "iis_valid", "iis_num_eval",
    }  # fmt: skip
    assert out.pop("iis_num_eval") == 60 and out.pop("iis_valid") in (0.0, 1.0)  # 20 % of 300
    assert out["iis_ci_low"] <= out["iis"] <= out["iis_ci_high"]
    assert out["iis_standard_accuracy"] > 0.9
    assert 0.3 < out["iis"] < 1.1
    assert out["iis"] == pytest.approx(
        inherent_interpretability_score(GRID, accuracies(out, GRID), out["iis_standard_accuracy"])
    )
    assert all(type(a) is float for a in out.values())


@pytest.mark.filterwarnings("ignore:interpretation accuracy exceeds")
def test_representations_concepts_as_list_tensor_bank_and_folder(iis_repr, tmp_path):
    import torch

    from iis_hf import ConceptBank

    x, y, c = _separable()
    kwargs = {"epochs": 3, "sparsity_ratios": [0.0, 0.5, 0.9], "seed": 1}
    reference = iis_repr.compute(predictions=x, references=y, concept_bank=c, **kwargs)
    assert list(reference)[2:5] == ["iis_accuracy_0", "iis_accuracy_0.5", "iis_accuracy_0.9"]

    bank = ConceptBank(vectors=torch.from_numpy(c), names=[f"concept {i}" for i in range(len(c))])
    bank.save_pretrained(tmp_path / "bank")
    for concepts in (c.tolist(), torch.from_numpy(c), bank, str(tmp_path / "bank")):
        out = iis_repr.compute(predictions=x.tolist(), references=y.tolist(), concept_bank=concepts, **kwargs)
        assert out == pytest.approx(reference)


@pytest.mark.filterwarnings("ignore:interpretation accuracy exceeds")
def test_representations_split_is_stratified_and_seeded(iis_repr):
    x, y, c = _separable(n=300)
    a = iis_repr.compute(
        predictions=x, references=y + 10, concept_bank=c, epochs=2, sparsity_ratios=[0.0, 0.5]
    )
    b = iis_repr.compute(
        predictions=x, references=y + 10, concept_bank=c, epochs=2, sparsity_ratios=[0.0, 0.5]
    )
    assert a == b  # label ids need not start at 0; same seed, same result

    from iis_hf.splits import stratified_split  # the split the config uses, tested in test_splits.py

    labels = np.repeat([0, 1, 2], [50, 30, 20])
    train, held_out = stratified_split(labels, 0.2, seed=0)
    assert sorted(np.concatenate([train, held_out]).tolist()) == list(range(100))
    assert np.bincount(labels[held_out]).tolist() == [10, 6, 4]
    assert not np.array_equal(held_out, stratified_split(labels, 0.2, seed=1)[1])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, r"needs concept_bank="),
        ({"concept_bank": np.ones((5, 4))}, r"the concepts have dimension 4 but the representations have 16"),
        ({"concept_bank": np.ones(16)}, r"concepts must be a \(C, D\) array, got shape \(16,\)"),
        ({"concept_bank": [[1.0, 2.0], [3.0]]}, r"concepts must be a \(C, D\) array"),
        ({"concept_bank": np.ones((5, 16)), "standard_accuracy": 0.9}, r"trains its own linear probe"),
        (
            {"concept_bank": np.ones((5, 16)), "eval_fraction": 1.5},
            r"eval_fraction must be in \(0, 1\), got 1\.5",
        ),
        ({"concept_bank": np.ones((5, 16)), "sparsity_ratios": [0.1, 0.1]}, r"duplicate sparsity ratios"),
    ],
)
def test_representations_errors(iis_repr, kwargs, match):
    x, y, _ = _separable(n=30)
    with pytest.raises(ValueError, match=match):
        iis_repr.compute(predictions=x, references=y, **kwargs)


def test_representations_rejects_ragged_rows_and_nan(iis_repr):
    with pytest.raises(ValueError, match=r"same length, got rows of lengths \[2, 3\]"):
        iis_repr.compute(predictions=[[0.0, 1.0], [1.0, 0.0, 2.0]], references=[0, 1], concept_bank=np.eye(2))
    with pytest.raises(ValueError, match=r"NaN or inf"):
        iis_repr.compute(
            predictions=[[0.0, float("nan")], [1.0, 0.0]], references=[0, 1], concept_bank=np.eye(2)
        )
    with pytest.raises(ValueError, match=r"single class"):
        iis_repr.compute(predictions=[[0.0, 1.0], [1.0, 0.0]], references=[3, 3], concept_bank=np.eye(2))


# ---------------------------------------------------------------------------------------------------
# install_metric


def test_metric_path_holds_the_module():
    from iis_hf.metric_install import metric_path

    folder = metric_path()
    assert (folder / "iis.py").read_bytes() == (METRIC_DIR / "iis.py").read_bytes()


def test_install_metric_layout_and_idempotence(tmp_path):
    from iis_hf.metric_install import install_metric

    cache = tmp_path / "modules"
    installed = install_metric(cache)
    digest = evaluate.loading.files_to_hash([str(METRIC_DIR / "iis.py")])
    module_dir = cache / "evaluate_modules" / "metrics" / "evaluate-metric--iis"
    assert installed == module_dir / digest / "iis.py"
    assert len(digest) == 64
    assert installed.read_bytes() == (METRIC_DIR / "iis.py").read_bytes()
    for folder in (
        cache,
        cache / "evaluate_modules",
        cache / "evaluate_modules" / "metrics",
        module_dir,
        installed.parent,
    ):
        assert (folder / "__init__.py").is_file(), folder
    assert json.loads((installed.parent / "iis.json").read_text())["local file path"] == str(installed)

    # A newer "other version" was installed since: reinstalling makes ours the newest again.
    other = module_dir / ("f" * 64)
    other.mkdir()
    (other / "iis.py").write_text("raise RuntimeError('stale')\n")
    os.utime(installed, (1, 1))
    assert install_metric(cache) == installed
    assert installed.stat().st_mtime > (other / "iis.py").stat().st_mtime
    assert sorted(p.name for p in module_dir.iterdir()) == sorted(["__init__.py", digest, "f" * 64])

    # A damaged copy under our hash is replaced.
    installed.write_text("broken = True\n")
    install_metric(cache)
    assert installed.read_bytes() == (METRIC_DIR / "iis.py").read_bytes()


def test_install_metric_makes_bare_name_load_offline(subprocess_jobs):
    result, stderr = subprocess_jobs("install")
    assert "doesn't exist on the Hugging Face Hub either" in result["before"]  # not loadable before install
    assert "/evaluate-metric--iis/" in result["installed"]
    assert result["default"]["iis"] == 0.3125
    assert accuracies(result["default"], [0.0, 0.5]) == [0.75, 0.5]
    assert result["representations"] == ["predictions", "references"]
    assert "latest cached version of the module" in stderr  # it came from the module cache
