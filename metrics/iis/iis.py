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

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import Any

import datasets
import evaluate

from iis_hf.config import HeadsConfig, ScoringConfig, config_fields, renamed_settings, with_keywords
from iis_hf.errors import IISError
from iis_hf.pipeline import score_labelled_representations
from iis_hf.score import check_nesting, class_ids, float_rows, iis_from_predictions

# The "representations" config's head-training keywords: HeadsConfig's settings by their one name
# (the field's: "head_batch_size", "num_seeds", ...).
HEADS_KEYWORDS = tuple(f.name for f in config_fields(HeadsConfig))

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

Three configurations:
- "default": you trained the heads yourself. `predictions` holds, for every sample, one predicted
  label per sparsity ratio; the metric computes A(r) and A0 and integrates.
- "classifier": the same, with `predictions` the labels of a linear classifier on the
  representation (A0 is their accuracy: a fine-tuned model's own classifier is such a probe) and
  the heads' labels in `head_predictions`, so it shares `predictions` with "accuracy" in
  `evaluate.combine`.
- "representations": `predictions` are representation vectors. The metric splits them into a
  stratified train/eval split, trains the probe and the interpretation heads on the concepts you give,
  and integrates: `iis_hf.pipeline.score_labelled_representations`, the pipeline every iis-hf
  entry point scores through.
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
    head_predictions (`list` of `list` of `int`, "classifier" only): N rows of len(sparsity_ratios) labels
        predicted by the interpretation heads (column j: the head at sparsity_ratios[j]); `predictions`
        are then the classifier's N labels and A0 is their accuracy. An input column: with
        `evaluate.combine`, give it to `add_batch` / `add`, then call `compute()`.
    sparsity_ratios (`list` of `float`, *optional*): the ratios in [0, 1), each once, in any order.
        Defaults to the published grid [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 0.98], or to the ratios given
        when loading (`evaluate.load(..., sparsity_ratios=[...])`, the way to set them under
        `evaluate.combine`, whose `compute` passes its arguments to every module); with the published
        grid the predictions per ratio need exactly 8 columns.
    concept_bank ("representations" only): the concepts, an `iis_hf.ConceptBank`, the folder / Hub id of a
        saved ConceptBank, or a C x D array of concept vectors (list, numpy or torch).
    eval_fraction (`float`, *optional*, "representations" only): fraction of each class held out for
        evaluation. Defaults to 0.2.
    seed (`int`, *optional*, "representations" only): seeds the split and the training. Defaults to 0.
    The head-training settings ("representations" only; each defaults to `iis_hf.HeadsConfig`'s):
{heads_keywords}

Returns (scalars only, so a `Trainer(compute_metrics=...)` logs every one):
    iis (`float`): the Inherent Interpretability Score; at most max(ratios) - min(ratios) when no
        head beats the probe.
    iis_standard_accuracy (`float`): A0.
    iis_accuracy_<r> (`float`): A(r) for each ratio r of `sparsity_ratios` (e.g. `iis_accuracy_0.9`).
    iis_ci_low, iis_ci_high (`float`): a 95% bootstrap interval of the IIS over the eval rows (and seeds).
    iis_sd (`float`, with num_seeds > 1): the standard deviation of the seeds' IIS.
    iis_valid (`float`): 1.0, or 0.0 when the score is undefined or a head beat the probe by more than
        one evaluation image (A(r) > A0: then the number measures the probe, not the representation).
    iis_num_eval (`int`, "representations" only): how many of the representations were scored (the
        rest fitted the probe and heads); fewer than MIN_SCORED_IMAGES (50) is refused.
    In the "representations" config `iis` is None when the probe is not above chance (the score would
    measure nothing).

Examples:

    Example 1 - two sparsity ratios, standard predictions given per sample:
        >>> iis_metric = evaluate.load("iis")
        >>> results = iis_metric.compute(
        ...     predictions=[[0, 0], [1, 1], [2, 0], [1, 1]],
        ...     references=[0, 1, 2, 2],
        ...     standard_predictions=[0, 1, 2, 2],
        ...     sparsity_ratios=[0.0, 0.5],
        ... )
        >>> print(results)  # doctest: +NORMALIZE_WHITESPACE
        {'iis': 0.3125, 'iis_standard_accuracy': 1.0, 'iis_accuracy_0': 0.75, 'iis_accuracy_0.5': 0.5,
         'iis_ci_low': 0.125, 'iis_ci_high': 0.5, 'iis_valid': 1.0}

    Example 2 - the published grid (8 columns, so sparsity_ratios may be left out) and a known A0:
        >>> iis_metric = evaluate.load("iis")
        >>> results = iis_metric.compute(
        ...     predictions=[[1] * 8, [0] * 7 + [1]],
        ...     references=[1, 0],
        ...     standard_accuracy=1.0,
        ... )
        >>> print(results["iis_accuracy_0.9"], results["iis_accuracy_0.98"])
        1.0 0.5
        >>> print(round(results["iis"], 4))
        0.9725

    Example 3 - accumulate batches, then compute:
        >>> iis_metric = evaluate.load("iis")
        >>> for preds, refs, std in [([[0, 1]], [0], [0]), ([[1, 1], [2, 2]], [1, 2], [1, 2])]:
        ...     iis_metric.add_batch(predictions=preds, references=refs, standard_predictions=std)
        >>> results = iis_metric.compute(sparsity_ratios=[0.0, 0.9])
        >>> print(round(results["iis_standard_accuracy"], 4), round(results["iis"], 4))
        1.0 0.75

    Example 4 - the "classifier" config, as combined with accuracy (A0 is the classifier's accuracy):
        >>> iis_metric = evaluate.load("iis", "classifier", sparsity_ratios=[0.0, 0.5])
        >>> results = iis_metric.compute(
        ...     predictions=[0, 1, 2, 2], references=[0, 1, 2, 2], head_predictions=[[0, 0], [1, 1], [2, 0], [1, 1]]
        ... )
        >>> print(results["iis"], results["iis_standard_accuracy"])
        0.3125 1.0

    Example 5 - the "representations" config trains the heads itself:
        >>> iis_metric = evaluate.load("iis", "representations")  # doctest: +SKIP
        >>> results = iis_metric.compute(  # doctest: +SKIP
        ...     predictions=features, references=labels, concept_bank="path/to/concept_bank", max_steps=20000
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

CONFIGS = ("default", "representations", "classifier")
# The "representations" config splits its input itself: below this many scored images one image moves
# an accuracy by more than 2 points, and an A(r) above A0 by chance becomes likely.
MIN_SCORED_IMAGES = 50
LABELS = "a list of N integer labels (one per sample)"
HEAD_LABELS = "a list of N lists of R integer labels (one per sparsity ratio, per sample)"
# Each config's inputs: name -> (how deep its lists nest, what it holds), checked before `datasets`,
# whose own format error dumps the whole input.
INPUTS = {
    "default": {
        "predictions": (2, HEAD_LABELS),
        "references": (1, LABELS),
        "standard_predictions": (1, LABELS),
    },
    "classifier": {
        "predictions": (1, "a list of N integer labels (the classifier's, one per sample)"),
        "references": (1, LABELS),
        "head_predictions": (2, HEAD_LABELS),
    },
    "representations": {
        "predictions": (2, "a list of N lists of D floats (one representation vector per sample)"),
        "references": (1, LABELS),
    },
}


def heads_keywords_description() -> str:
    """One line per head-training keyword, from the field's own help (one source for every setting)."""
    lines = []
    for f in config_fields(HeadsConfig):
        if f.name != "sparsity_ratios":
            lines.append(f"    {f.name}: {f.metadata['help']}.")
    return "\n".join(lines)


_KWARGS_DESCRIPTION = _KWARGS_DESCRIPTION.replace("{heads_keywords}", heads_keywords_description())


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Iis(evaluate.Metric):
    """Inherent Interpretability Score: area under A(r)/A0 over the sparsity ratios r."""

    def __init__(self, *args: Any, sparsity_ratios: Sequence[float] | None = None, **kwargs: Any) -> None:
        # The default ratio grid of `compute` (evaluate.load passes its extra keyword arguments here).
        self.default_sparsity_ratios = None if sparsity_ratios is None else list(sparsity_ratios)
        super().__init__(*args, **kwargs)

    def _info(self) -> evaluate.MetricInfo:
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
        elif self.config_name == "classifier":
            features = datasets.Features(
                {
                    "predictions": datasets.Value("int64"),
                    "references": datasets.Value("int64"),
                    "head_predictions": datasets.Sequence(datasets.Value("int64")),
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

    def _fill_standard_predictions(self, predictions: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        if self.config_name != "default" or predictions is None:
            return kwargs
        if kwargs.get("standard_predictions") is None:
            try:
                n = len(predictions)
            except TypeError:
                return kwargs  # let evaluate report the bad input
            kwargs = {**kwargs, "standard_predictions": [None] * n}
        return kwargs

    def _check_shapes(self, inputs: dict[str, Any]) -> None:
        """Each input of this config nested as its feature says, else one line naming it (`INPUTS`)."""
        for name, value in inputs.items():
            if value is not None and name in INPUTS[self.config_name]:
                check_nesting(value, name, *INPUTS[self.config_name][name])

    def _one_line_format_error(self, call: Callable[..., Any], **inputs: Any) -> Any:
        """`call(**inputs)` (evaluate's add, add_batch or compute), with `datasets`' format error (a dump
        of the whole input) replaced by one line saying what this config expects."""
        try:
            return call(**inputs)
        except ValueError as err:
            if "match the expected format" not in str(err):
                raise
            expected = "; ".join(f"{name}: {form}" for name, (_, form) in INPUTS[self.config_name].items())
            raise ValueError(
                f"the inputs do not fit the iis metric's {self.config_name!r} config ({expected})"
            ) from None

    def _check_inputs(self, predictions: Any, references: Any, standard_predictions: Any = None) -> None:
        """Refuse what `datasets` would silently cast (floats truncated to int, inf) before it is stored."""
        self._check_shapes(
            {
                "predictions": predictions,
                "references": references,
                "standard_predictions": standard_predictions,
            }
        )
        if self.config_name == "default" and predictions is not None:
            class_labels(predictions, "predictions", ndim=2)
        if references is not None:
            class_labels(references, "references", ndim=1)
        given = standard_predictions is not None and not (
            isinstance(standard_predictions, (list, tuple)) and all(v is None for v in standard_predictions)
        )  # all None: not given (`_fill_standard_predictions`)
        if self.config_name == "default" and given:
            class_labels(standard_predictions, "standard_predictions", ndim=1)

    def _check_classifier_inputs(self, predictions: Any, head_predictions: Any) -> None:
        """The "classifier" config: one label per sample, and one per ratio from the heads."""
        if self.config_name != "classifier":
            return
        self._check_shapes({"predictions": predictions, "head_predictions": head_predictions})
        if predictions is not None:
            class_labels(predictions, "predictions", ndim=1)
        if head_predictions is not None:
            class_labels(head_predictions, "head_predictions", ndim=2)

    def add_batch(self, *, predictions: Any = None, references: Any = None, **kwargs: Any) -> None:
        """Add a batch of predictions, references and (optionally) standard_predictions."""
        self._check_classifier_inputs(predictions, kwargs.get("head_predictions"))
        self._check_inputs(predictions, references, kwargs.get("standard_predictions"))
        kwargs = self._fill_standard_predictions(predictions, kwargs)
        return self._one_line_format_error(
            super().add_batch, predictions=predictions, references=references, **kwargs
        )

    def add(self, *, prediction: Any = None, reference: Any = None, **kwargs: Any) -> None:
        """Add one sample: prediction (one label per ratio), reference and optionally standard_prediction."""
        heads = kwargs.get("head_predictions")
        self._check_classifier_inputs(
            [prediction] if prediction is not None else None, [heads] if heads is not None else None
        )
        single = kwargs.get("standard_prediction")
        self._check_inputs(
            [prediction] if prediction is not None else None,
            [reference] if reference is not None else None,
            [single] if single is not None else None,
        )
        if self.config_name == "default":
            single = kwargs.pop("standard_prediction", None)
            if kwargs.get("standard_predictions") is None:
                kwargs["standard_predictions"] = single
        return self._one_line_format_error(super().add, prediction=prediction, reference=reference, **kwargs)

    def compute(
        self, *, predictions: Any = None, references: Any = None, **kwargs: Any
    ) -> dict[str, Any] | None:
        """Compute the IIS over the given inputs and everything added before."""
        self._check_classifier_inputs(predictions, kwargs.get("head_predictions"))
        self._check_inputs(predictions, references, kwargs.get("standard_predictions"))
        kwargs = self._fill_standard_predictions(predictions, kwargs)
        return self._one_line_format_error(
            super().compute, predictions=predictions, references=references, **kwargs
        )

    def _compute(
        self,
        predictions: list,
        references: list,
        standard_predictions: list | None = None,
        standard_accuracy: float | None = None,
        head_predictions: list | None = None,
        concept_bank: Any = None,
        eval_fraction: float | None = None,
        seed: int | None = None,
        **heads: Any,
    ) -> dict[str, Any]:
        """Returns the IIS, the standard accuracy and the accuracy at each ratio, as scalars.

        `heads` are the head-training settings, by the names every entry point gives them
        (`HEADS_KEYWORDS`: ``epochs``, ``head_batch_size``, ``num_seeds``, ...)."""
        heads = renamed_settings(HeadsConfig, heads, "iis metric")  # an old name, with a FutureWarning
        check_heads_keywords(heads)
        sparsity_ratios = heads.pop("sparsity_ratios", None)
        if sparsity_ratios is None:
            sparsity_ratios = self.default_sparsity_ratios
        if head_predictions is not None and self.config_name != "classifier":
            raise ValueError(
                "head_predictions= applies to the 'classifier' config: load it with evaluate.load('iis', 'classifier')"
            )
        options = {"concept_bank": concept_bank, "eval_fraction": eval_fraction, "seed": seed, **heads}
        if self.config_name == "representations":
            if standard_accuracy is not None or standard_predictions is not None:
                raise ValueError(
                    "the 'representations' config trains its own linear probe: drop standard_accuracy= / "
                    "standard_predictions=, or use the default config with your heads' predictions"
                )
            return self._compute_from_representations(predictions, references, sparsity_ratios, **options)
        given = sorted(k for k, v in options.items() if v is not None)
        if self.config_name == "classifier":
            if given or standard_accuracy is not None or standard_predictions is not None:
                raise ValueError(
                    f"{given or ['standard_accuracy/standard_predictions']} do not apply to the 'classifier' config: "
                    "A0 is the accuracy of `predictions` (the classifier's labels)"
                )
            if head_predictions is None:  # evaluate requires the feature; a direct call may omit it
                raise TypeError(
                    "the 'classifier' config needs head_predictions= (one label per ratio per row)"
                )
            return iis_from_predictions(
                head_predictions,
                references,
                standard_predictions=predictions,
                sparsity_ratios=sparsity_ratios,
            ).to_metrics()
        if given:
            raise ValueError(
                f"{given} only apply to the 'representations' config: "
                "load it with evaluate.load('iis', 'representations')"
            )
        return self._compute_from_predictions(
            predictions, references, standard_predictions, standard_accuracy, sparsity_ratios
        )

    def _compute_from_predictions(
        self,
        predictions: list,
        references: list,
        standard_predictions: list | None,
        standard_accuracy: float | None,
        sparsity_ratios: list[float] | None,
    ) -> dict[str, Any]:
        std = list(standard_predictions) if standard_predictions is not None else []
        n_given = sum(s is not None for s in std)
        if 0 < n_given < len(std):
            raise ValueError(
                f"standard_predictions were given for {n_given} of {len(std)} samples: pass them with every "
                "add_batch/compute call, or pass none and give standard_accuracy= to compute"
            )
        result = iis_from_predictions(
            predictions,
            references,
            standard_predictions=std if n_given else None,
            standard_accuracy=standard_accuracy,
            sparsity_ratios=sparsity_ratios,
        )
        return result.to_metrics()

    def _compute_from_representations(
        self,
        predictions: list,
        references: list,
        sparsity_ratios: list[float] | None,
        concept_bank: Any,
        eval_fraction: float | None,
        seed: int | None,
        **heads: Any,
    ) -> dict[str, Any]:
        if concept_bank is None:
            raise ValueError(
                "the representations config needs concept_bank=: an iis_hf.ConceptBank, the folder / Hub id "
                "of a saved one, or a C x D array of concept vectors"
            )
        heads["sparsity_ratios"] = sparsity_ratios
        # a bad value is an IISError naming its field, which is the keyword the user passed
        head_config = HeadsConfig(**{name: value for name, value in heads.items() if value is not None})
        config = ScoringConfig(heads=head_config, seed=0 if seed is None else int(seed), progress=False)
        fraction = 0.2 if eval_fraction is None else eval_fraction
        result = score_labelled_representations(
            float_rows(predictions, "predictions (representation vectors)"),
            class_labels(references, "references", ndim=1),
            concept_bank,
            config,
            eval_fraction=fraction,
        )
        num_eval = int(result.settings["data"]["num_eval"])
        if num_eval < MIN_SCORED_IMAGES:
            raise ValueError(
                f"the representations config scored only {num_eval} of the {len(predictions)} representations "
                f"(eval_fraction={fraction}); an IIS needs at least {MIN_SCORED_IMAGES} scored images: pass more "
                "representations or a larger eval_fraction"
            )
        return {**result.to_metrics(), "iis_num_eval": num_eval}


# `_compute` takes the head settings as **heads; its signature lists each by name, as a canonical
# metric's does, so `inspect.signature` and evaluate's docs show them (generated, never hand-written).
# (mypy refuses assigning to a method; the generated signature is the point here)
Iis._compute = with_keywords(Iis._compute, HEADS_KEYWORDS)  # type: ignore[method-assign]


def class_labels(values: Any, name: str, ndim: int) -> Any:
    """`values` as int64 class ids (`iis_hf.score.class_ids`), refusing a negative one with a ValueError
    naming `name`: a class id is in [0, number of classes). `datasets` marks an unlabelled row -1, and
    a -1 reference matched by a -1 prediction would otherwise count as a correct prediction."""
    ids = class_ids(values, name, ndim=ndim)
    if (ids < 0).any():
        raise ValueError(
            f"{name} hold the negative label {int(ids.min())}; class ids must be >= 0 (-1 marks an unlabelled "
            "row in `datasets`: drop those rows before computing the IIS)"
        )
    return ids


def check_heads_keywords(heads: dict[str, Any]) -> None:
    """Only the head-training settings (`HEADS_KEYWORDS`) pass through `_compute`'s keywords."""
    unknown = sorted(set(heads) - set(HEADS_KEYWORDS))
    if unknown:
        known = ["concept_bank", "eval_fraction", "seed", *HEADS_KEYWORDS]
        close = {k: difflib.get_close_matches(k, known, n=2) for k in unknown}
        hints = "; ".join(f"{k}: did you mean {' or '.join(m)}?" for k, m in close.items() if m)
        raise IISError(
            f"unknown keyword(s) {unknown} for the iis metric ({hints or 'the settings are ' + ', '.join(known)})"
        )
