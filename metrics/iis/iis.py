# Copyright 2025 The iis-hf Authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Inherent Interpretability Score (IIS) metric."""

import math
import warnings

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
The Inherent Interpretability Score (IIS) measures how much of a representation's classifiability
survives when predictions are made from a sparse interpretation of it (Shen et al., ICLR 2025).
A representation is projected onto C concept vectors; at sparsity ratio r only the strongest
(1 - r) * C concept activations are kept, and a linear head predicts the class from them. With
A(r) the accuracy of that head and A0 the accuracy of a linear probe on the raw representation
(the "standard accuracy"), and the ratios sorted ascending,

    IIS = sum_i (A(r_i) / A0 + A(r_{i+1}) / A0) * (r_{i+1} - r_i) / 2

(the trapezoid rule, not renormalised by the span of the grid). With the published ratio grid
0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 0.98 a representation that loses no accuracy scores 0.98.

Two configurations:
- "default": you trained the heads yourself. `predictions` holds, for every sample, one predicted
  label per sparsity ratio; the metric computes A(r) and A0 and integrates.
- "representations": `predictions` are representation vectors. The metric splits them into a
  stratified train/eval split, trains the probe and the interpretation heads on the concepts you give
  (this needs `pip install iis-hf`), and integrates.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `int` for "default", `list` of `list` of `float` for "representations"):
        "default": N rows of len(sparsity_ratios) predicted labels; column j holds the predictions of
        the interpretation head trained at sparsity ratio sparsity_ratios[j].
        "representations": N representation vectors of D floats each.
    references (`list` of `int`): the N ground-truth labels.
    standard_predictions (`list` of `int`, *optional*, "default" only): the N predictions of the standard
        linear probe on the raw representations; A0 is their accuracy. An input column, so it can be
        given to `add_batch` too.
    standard_accuracy (`float`, *optional*, "default" only): A0 in (0, 1], given directly instead of
        `standard_predictions`. Exactly one of the two is required.
    sparsity_ratios (`list` of `float`, *optional*): the ratios in [0, 1), each once, in any order.
        Defaults to the published grid [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 0.98]; in the "default"
        config that default needs predictions with exactly 8 columns.
    concepts ("representations" only): the concept vectors, a C x D array (list, numpy or torch), an
        `iis_hf.ConceptBank`, or the folder / Hub id of a saved ConceptBank.
    eval_fraction (`float`, *optional*, "representations" only): fraction of each class held out for
        evaluation. Defaults to 0.2.
    seed (`int`, *optional*, "representations" only): seeds the split and the training. Defaults to 0.
    epochs (`int`, *optional*, "representations" only): training epochs of the probe and heads. Defaults to 30.
    batch_size (`int`, *optional*, "representations" only): defaults to 1024.
    learning_rate (`float`, *optional*, "representations" only): Adam learning rate. Defaults to 1e-2.

Returns:
    iis (`float`): the Inherent Interpretability Score; at most max(ratios) - min(ratios) when no
        head beats the probe.
    standard_accuracy (`float`): A0.
    accuracies (`list` of `float`): A(r), in the order of `sparsity_ratios` as given.
    sparsity_ratios (`list` of `float`): the ratios, as given.

Examples:

    Example 1 - two sparsity ratios, standard predictions given per sample:
        >>> iis_metric = evaluate.load("iis")
        >>> results = iis_metric.compute(
        ...     predictions=[[0, 0], [1, 1], [2, 0], [1, 1]],
        ...     references=[0, 1, 2, 2],
        ...     standard_predictions=[0, 1, 2, 2],
        ...     sparsity_ratios=[0.0, 0.5],
        ... )
        >>> print(results)
        {'iis': 0.3125, 'standard_accuracy': 1.0, 'accuracies': [0.75, 0.5], 'sparsity_ratios': [0.0, 0.5]}

    Example 2 - the published grid (8 columns, so sparsity_ratios may be left out) and a known A0:
        >>> iis_metric = evaluate.load("iis")
        >>> results = iis_metric.compute(
        ...     predictions=[[1] * 8, [0] * 7 + [1]],
        ...     references=[1, 0],
        ...     standard_accuracy=1.0,
        ... )
        >>> print(results["accuracies"])
        [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5]
        >>> print(round(results["iis"], 4))
        0.9725

    Example 3 - accumulate batches, then compute:
        >>> iis_metric = evaluate.load("iis")
        >>> for preds, refs, std in [([[0, 1]], [0], [0]), ([[1, 1], [2, 2]], [1, 2], [1, 2])]:
        ...     iis_metric.add_batch(predictions=preds, references=refs, standard_predictions=std)
        >>> results = iis_metric.compute(sparsity_ratios=[0.0, 0.9])
        >>> print(round(results["standard_accuracy"], 4), round(results["iis"], 4))
        1.0 0.75

    Example 4 - the "representations" config trains the heads itself (needs `pip install iis-hf`):
        >>> iis_metric = evaluate.load("iis", "representations")  # doctest: +SKIP
        >>> results = iis_metric.compute(  # doctest: +SKIP
        ...     predictions=features, references=labels, concepts="path/to/concept_bank", epochs=30
        ... )
"""

_CITATION = """
@inproceedings{shen2025enhancing,
  title     = {Enhancing Pre-trained Representation Classifiability can Boost its Interpretability},
  author    = {Shen, Shufan and Qi, Zhaobo and Sun, Junshu and Huang, Qingming and Tian, Qi and Wang, Shuhui},
  booktitle = {The Thirteenth International Conference on Learning Representations (ICLR)},
  year      = {2025},
  url       = {https://arxiv.org/abs/2510.24105}
}
"""

PUBLISHED_SPARSITY_RATIOS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 0.98)
CONFIGS = ("default", "representations")
_REPRESENTATIONS_ONLY = ("concepts", "eval_fraction", "seed", "epochs", "batch_size", "learning_rate")


def _validate_ratios(sparsity_ratios):
    """The ratios as floats; a ValueError naming the problem and the fix otherwise (as iis_hf.score)."""
    try:
        if isinstance(sparsity_ratios, (str, bytes)):  # a string is iterable, but never a grid
            raise TypeError
        ratios = [float(r) for r in sparsity_ratios]
    except (TypeError, ValueError):
        raise ValueError(
            f"sparsity_ratios must be a list of numbers in [0, 1), got {sparsity_ratios!r}"
        ) from None
    if len(ratios) < 2:
        raise ValueError(
            f"need at least 2 sparsity ratios to integrate, got {len(ratios)}: "
            "pass e.g. sparsity_ratios=[0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 0.98]"
        )
    for r in ratios:
        if math.isnan(r) or not 0.0 <= r < 1.0:
            raise ValueError(
                f"sparsity ratio {r} is outside [0, 1): a ratio is the fraction of concepts dropped"
            )
    duplicates = sorted({r for r in ratios if ratios.count(r) > 1})
    if duplicates:
        raise ValueError(f"duplicate sparsity ratios {duplicates}: give each ratio once")
    return ratios


def _check_standard_accuracy(standard_accuracy):
    try:
        a0 = float(standard_accuracy)
    except (TypeError, ValueError):
        raise ValueError(f"standard_accuracy must be a number in (0, 1], got {standard_accuracy!r}") from None
    if math.isnan(a0):
        raise ValueError(
            "standard_accuracy is NaN: pass the accuracy of the linear probe, a number in (0, 1]"
        )
    if a0 <= 0:
        raise ValueError(
            f"standard_accuracy must be > 0, got {a0}: IIS is relative to the standard accuracy, "
            "so the linear probe must get at least one sample right"
        )
    if a0 > 1:
        raise ValueError(f"standard_accuracy must be at most 1, got {a0}: give a fraction, not a percentage")
    return a0


def _integrate(ratios, accuracies, standard_accuracy):
    """Trapezoid integral of A(r)/A0 over the ratios sorted ascending (same as iis_hf.score)."""
    if len(accuracies) != len(ratios):
        raise ValueError(
            f"got {len(ratios)} sparsity ratios but {len(accuracies)} accuracies: give one accuracy per ratio"
        )
    if any(math.isnan(a) for a in accuracies):
        raise ValueError("accuracies must not be NaN")
    order = np.argsort(ratios)
    x = np.asarray(ratios, dtype=np.float64)[order]
    y = np.asarray(accuracies, dtype=np.float64)[order] / standard_accuracy
    return float(np.sum((y[:-1] + y[1:]) * np.diff(x) / 2.0))


def _warn_if_probe_is_weak(ratios, accuracies, standard_accuracy):
    above = [
        (r, a / standard_accuracy) for r, a in zip(ratios, accuracies) if a > standard_accuracy * (1 + 1e-9)
    ]
    if above:
        worst = max(rel for _, rel in above)
        warnings.warn(
            f"interpretation accuracy exceeds the standard accuracy at {len(above)} ratio(s) "
            f"(max A/A0 = {worst:.3f}): the linear probe is weaker than the sparse heads, so IIS measures the "
            "probe rather than the representation. Train the probe to convergence (standardise its input).",
            UserWarning,
            stacklevel=3,
        )


def _rows_as_array(rows, dtype, what):
    """N x K array from a list of rows, with a clear error for ragged rows (datasets allows them)."""
    if isinstance(rows, np.ndarray) and rows.ndim == 2:
        return rows.astype(dtype)
    lengths = {len(row) for row in rows}
    if len(lengths) > 1:
        raise ValueError(
            f"all rows of {what} must have the same length, got rows of lengths {sorted(lengths)}"
        )
    return np.asarray(rows, dtype=dtype).reshape(len(rows), -1)


def _stratified_split(labels, eval_fraction, seed):
    """Indices (train, eval): per class, a seeded round(n_c * eval_fraction) samples go to eval."""
    rng = np.random.default_rng(seed)
    train, held_out = [], []
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        n_eval = round(len(idx) * eval_fraction)
        if len(idx) >= 2:
            n_eval = min(max(n_eval, 1), len(idx) - 1)
        else:
            n_eval = 0
        held_out.append(idx[:n_eval])
        train.append(idx[n_eval:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held_out))


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Iis(evaluate.Metric):
    """Inherent Interpretability Score: area under A(r)/A0 over the sparsity ratios r."""

    def _info(self):
        if self.config_name not in CONFIGS:
            raise ValueError(
                f"unknown config {self.config_name!r} for the iis metric: use one of {list(CONFIGS)}"
            )
        if self.config_name == "representations":
            features = datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Value("int64"),
                }
            )
        else:
            features = datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("int64")),
                    "references": datasets.Value("int64"),
                    # Optional for the user: add/add_batch/compute fill it with nulls when it is not given.
                    "standard_predictions": datasets.Value("int64"),
                }
            )
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=features,
            homepage="https://arxiv.org/abs/2510.24105",
            codebase_urls=[],
            reference_urls=["https://arxiv.org/abs/2510.24105", "https://iclr.cc/virtual/2025/poster/30262"],
        )

    # evaluate requires every feature column in every add/add_batch/compute call. `standard_predictions`
    # is optional (standard_accuracy= may replace it), so fill it with nulls (None) when it is missing;
    # `_compute` tells "not given" (all null) from "given" and rejects a mix.

    def _fill_standard_predictions(self, predictions, kwargs):
        if self.config_name != "default" or predictions is None:
            return kwargs
        if kwargs.get("standard_predictions") is None:
            try:
                n = len(predictions)
            except TypeError:
                return kwargs  # let evaluate report the bad input
            kwargs = {**kwargs, "standard_predictions": [None] * n}
        return kwargs

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of predictions, references and (optionally) standard_predictions."""
        kwargs = self._fill_standard_predictions(predictions, kwargs)
        return super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Add one sample: prediction (one label per ratio), reference and optionally standard_prediction."""
        if self.config_name == "default":
            single = kwargs.pop("standard_prediction", None)
            if kwargs.get("standard_predictions") is None:
                kwargs["standard_predictions"] = single
        return super().add(prediction=prediction, reference=reference, **kwargs)

    def compute(self, *, predictions=None, references=None, **kwargs):
        """Compute the IIS over the given inputs and everything added before."""
        kwargs = self._fill_standard_predictions(predictions, kwargs)
        return super().compute(predictions=predictions, references=references, **kwargs)

    def _compute(
        self,
        predictions,
        references,
        standard_predictions=None,
        standard_accuracy=None,
        sparsity_ratios=None,
        concepts=None,
        eval_fraction=None,
        seed=None,
        epochs=None,
        batch_size=None,
        learning_rate=None,
    ):
        """Returns the IIS, the standard accuracy and the accuracy per ratio."""
        options = {
            "concepts": concepts,
            "eval_fraction": eval_fraction,
            "seed": seed,
            "epochs": epochs,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
        }
        if self.config_name == "representations":
            if standard_accuracy is not None or standard_predictions is not None:
                raise ValueError(
                    "the 'representations' config trains its own linear probe: drop standard_accuracy= / "
                    "standard_predictions=, or use the default config with your heads' predictions"
                )
            return self._compute_from_representations(predictions, references, sparsity_ratios, **options)
        given = sorted(k for k, v in options.items() if v is not None)
        if given:
            raise ValueError(
                f"{given} only apply to the 'representations' config: "
                "load it with evaluate.load('iis', 'representations')"
            )
        return self._compute_from_predictions(
            predictions, references, standard_predictions, standard_accuracy, sparsity_ratios
        )

    def _compute_from_predictions(
        self, predictions, references, standard_predictions, standard_accuracy, ratios
    ):
        preds = _rows_as_array(predictions, np.int64, "predictions")
        refs = np.asarray(references, dtype=np.int64)
        if ratios is None:
            if preds.shape[1] != len(PUBLISHED_SPARSITY_RATIOS):
                raise ValueError(
                    f"predictions have {preds.shape[1]} columns but no sparsity_ratios were given: pass "
                    "sparsity_ratios= with one ratio per column (the default, the published grid "
                    f"{list(PUBLISHED_SPARSITY_RATIOS)}, needs 8 columns)"
                )
            ratios = PUBLISHED_SPARSITY_RATIOS
        ratios = _validate_ratios(ratios)
        if preds.shape[1] != len(ratios):
            raise ValueError(
                f"got {len(ratios)} sparsity ratios but predictions have {preds.shape[1]} columns: "
                "each row of predictions must hold one predicted label per sparsity ratio"
            )

        std = list(standard_predictions) if standard_predictions is not None else []
        n_given = sum(s is not None for s in std)
        if 0 < n_given < len(std):
            raise ValueError(
                f"standard_predictions were given for {n_given} of {len(std)} samples: pass them with every "
                "add_batch/compute call, or pass none and give standard_accuracy= to compute"
            )
        if n_given and standard_accuracy is not None:
            raise ValueError(
                "got both standard_predictions and standard_accuracy: give only one (A0 is either the accuracy "
                "of standard_predictions or the number you pass)"
            )
        if n_given:
            a0 = _check_standard_accuracy(float(np.mean(np.asarray(std, dtype=np.int64) == refs)))
        elif standard_accuracy is not None:
            a0 = _check_standard_accuracy(standard_accuracy)
        else:
            raise ValueError(
                "the standard accuracy A0 is missing: pass standard_predictions= (the linear probe's "
                "predictions, one per sample) or standard_accuracy= (a float in (0, 1]) to compute"
            )

        accuracies = [float(np.mean(preds[:, j] == refs)) for j in range(len(ratios))]
        iis = _integrate(ratios, accuracies, a0)
        _warn_if_probe_is_weak(ratios, accuracies, a0)
        return {"iis": iis, "standard_accuracy": a0, "accuracies": accuracies, "sparsity_ratios": ratios}

    def _compute_from_representations(
        self,
        predictions,
        references,
        ratios,
        concepts,
        eval_fraction,
        seed,
        epochs,
        batch_size,
        learning_rate,
    ):
        try:
            import torch

            from iis_hf import ConceptBank, compute_iis
        except ImportError as err:
            raise ValueError(
                f"the representations config needs `pip install iis-hf` (import failed: {err})"
            ) from None

        ratios = _validate_ratios(PUBLISHED_SPARSITY_RATIOS if ratios is None else ratios)
        eval_fraction = 0.2 if eval_fraction is None else float(eval_fraction)
        if not 0.0 < eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
        seed = 0 if seed is None else int(seed)

        features = _rows_as_array(predictions, np.float32, "predictions (representation vectors)")
        if not np.isfinite(features).all():
            raise ValueError("the representation vectors contain NaN or inf values")
        # Labels become 0..K-1, so any integer ids work.
        _, labels = np.unique(np.asarray(references, dtype=np.int64), return_inverse=True)
        if labels.max(initial=0) < 1:
            raise ValueError("references hold a single class: IIS needs at least 2 classes")
        dim = features.shape[1]

        if concepts is None:
            raise ValueError(
                "the representations config needs concepts=: a C x D array of concept vectors, an "
                "iis_hf.ConceptBank, or the folder / Hub id of a saved ConceptBank"
            )
        if isinstance(concepts, str):
            concepts = ConceptBank.from_pretrained(concepts)
        if isinstance(concepts, ConceptBank):
            vectors = getattr(concepts, "vectors", None)
            concept_dim = None if vectors is None else int(vectors.shape[-1])
        else:
            try:
                concepts = torch.as_tensor(np.asarray(concepts, dtype=np.float32))
            except (TypeError, ValueError):
                raise ValueError(
                    "concepts must be a C x D array (list, numpy or torch), a ConceptBank or a ConceptBank path"
                ) from None
            if concepts.ndim != 2 or concepts.shape[0] < 1:
                raise ValueError(f"concepts must be a C x D array, got shape {tuple(concepts.shape)}")
            concept_dim = int(concepts.shape[1])
        if concept_dim is not None and concept_dim != dim:
            raise ValueError(
                f"concepts have {concept_dim} columns but the representations have {dim}: concept vectors must "
                "live in the same space as the representations"
            )

        train_idx, eval_idx = _stratified_split(labels, eval_fraction, seed)
        if len(eval_idx) == 0 or len(train_idx) == 0:
            raise ValueError(
                f"the split left no samples for {'evaluation' if len(eval_idx) == 0 else 'training'}: "
                "pass more samples or change eval_fraction"
            )
        tensors = torch.from_numpy(features), torch.from_numpy(labels.astype(np.int64))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = compute_iis(
                tensors[0][train_idx],
                tensors[1][train_idx],
                tensors[0][eval_idx],
                tensors[1][eval_idx],
                concepts,
                sparsity_ratios=ratios,
                epochs=30 if epochs is None else int(epochs),
                batch_size=1024 if batch_size is None else int(batch_size),
                learning_rate=1e-2 if learning_rate is None else float(learning_rate),
                seed=seed,
                progress=False,
            )
        for w in caught:  # pass compute_iis's warnings on, through the caller's filters
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        accuracies = [float(a) for a in result.accuracies]
        a0 = float(result.standard_accuracy)
        if not any("standard accuracy" in str(w.message) for w in caught):
            _warn_if_probe_is_weak(list(result.sparsity_ratios), accuracies, a0)
        return {
            "iis": float(result.iis),
            "standard_accuracy": a0,
            "accuracies": accuracies,
            "sparsity_ratios": [float(r) for r in result.sparsity_ratios],
        }
