"""What a score warns about, and the checks its inputs pass before any head is trained.

The warnings are classes of their own, so a caller filters or catches them by class, never by text.
The input checks turn what a user passes (tensors, arrays, nested lists, a `FeatureStore`) into rows
and class ids, or an error naming the argument.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

from ..splits import check_labels
from .result import IISResult

if TYPE_CHECKING:
    pass


class WeakProbeWarning(UserWarning):
    """A head beat the standard probe (A(rho) > A0): IIS then measures the probe, not the representation.

    Filter or catch it by class (``warnings.simplefilter("error", WeakProbeWarning)``), not by text.
    """


class UnseenClassWarning(UserWarning):
    """Some evaluation images belong to classes that have no training image: nothing can predict them,
    so A0 and every A(rho) are capped below 1."""


class UnconvergedHeadsWarning(UserWarning):
    """Some heads were still improving when head training reached `max_steps`: their accuracies, and so
    the IIS, may rise with a larger budget."""


def warn_if_heads_unconverged(result: IISResult) -> None:
    """Warn, naming the setting to raise, when a head reached the step cap still improving."""
    converged = result.metadata.get("heads_converged")
    heads = result.settings.get("heads") or {}
    if not converged or all(converged) or heads.get("epochs") is not None:  # a fixed budget was asked for
        return
    ratios = [r for r, done in zip(result.sparsity_ratios, converged) if not done]
    cap = heads.get("max_steps")
    warnings.warn(
        f"the interpretation heads at sparsity ratios {ratios} were still improving when they reached "
        f"max_steps={cap}: their accuracies and the IIS may rise with more steps; raise max_steps",
        UnconvergedHeadsWarning,
        stacklevel=3,
    )


class EmptyHeadWarning(UserWarning):
    """At some ratio the head drops every concept (``int(C * rho) + 1 >= C``): it predicts from its bias
    alone, and its accuracy says nothing about the representation."""


def warn_if_eval_classes_unseen(train_labels, eval_labels) -> None:
    """Warn when evaluation labels hold classes the training labels never show."""
    seen = set(np.unique(np.asarray(train_labels)).tolist())
    eval_labels = np.asarray(eval_labels)
    unseen = sorted(set(np.unique(eval_labels).tolist()) - seen)
    if unseen:
        rows = int(np.isin(eval_labels, unseen).sum())
        warnings.warn(
            f"{rows} of {len(eval_labels)} eval images belong to classes with no training image "
            f"(class ids {unseen[:10]}{' ...' if len(unseen) > 10 else ''}): nothing can predict them, so A0 and "
            f"every A(rho) are at most {1 - rows / len(eval_labels):.3f}; score on splits that share their classes",
            UnseenClassWarning,
            stacklevel=3,
        )


def warn_if_heads_keep_nothing(result: IISResult) -> None:
    """Warn about ratios whose heads drop all C concepts (``int(C * rho) + 1 >= C``)."""
    count = result.num_concepts
    if not count:
        return
    empty = [r for r in result.sparsity_ratios if int(count * r) + 1 >= count]
    if empty:
        needed = next(c for c in range(count + 1, 10**7) if all(int(c * r) + 1 < c for r in empty))
        warnings.warn(
            f"with {count} concepts the heads at sparsity ratio(s) {empty} drop every concept "
            f"(int(C * rho) + 1 of C are dropped), so they predict from their bias alone; use at least "
            f"{needed} concepts for this grid",
            EmptyHeadWarning,
            stacklevel=3,
        )


# What a head beating A0 means, by who gave A0: iis-hf's own probe (`compute_iis`, whose training the
# keywords set), or predictions the caller brings (`iis_from_predictions`: the metric's default
# config, a probe of theirs; its "classifier" config, the model's own classifier: no probe at all).
OWN_PROBE_ADVICE = (
    "the linear probe has not converged (or the eval rows are too few to tell), so IIS reflects the "
    "probe rather than the representation. Give it more steps (probe_min_steps=) or raise the learning "
    "rate (learning_rate=)."
)
GIVEN_A0_ADVICE = (
    "what A0 comes from (standard_predictions or standard_accuracy; in the 'classifier' config the "
    "classifier's own predictions) is weaker than the heads, so IIS reflects it rather than the "
    "representation. Check that it and the heads were measured on the same images, or bring a "
    "stronger one (a classifier or probe trained to convergence)."
)


def warn_if_probe_is_weak(result: IISResult, advice: str = OWN_PROBE_ADVICE) -> None:
    """Warn when a head beats the standard probe: then IIS measures the probe, not the representation.
    `advice` says what to do about it where A0 came from (`OWN_PROBE_ADVICE`, `GIVEN_A0_ADVICE`)."""
    above = [(r, a) for r, a in zip(result.sparsity_ratios, result.relative_accuracies) if a > 1.0 + 1e-9]
    if above:
        worst = max(a for _, a in above)
        warnings.warn(
            f"interpretation accuracy exceeds the standard accuracy at {len(above)} ratio(s) "
            f"(max A/A0 = {worst:.3f}): {advice}",
            WeakProbeWarning,
            stacklevel=3,
        )


def class_ids(values, name: str, ndim: int) -> np.ndarray:
    """`values` as an int64 array of `ndim` dimensions, refusing what is not a class id (floats with
    a fraction, non-finite numbers, strings, an empty input) with a ValueError naming `name`."""
    array = _label_array(values, name, ndim)
    _check_label_dtype(array, name)
    if array.ndim == 1 and ndim == 2:
        raise ValueError(f"{name} must be one row of labels per sample (N x number of ratios)")
    array = array.reshape(array.shape[0], -1) if ndim == 2 else array.reshape(-1)
    if np.abs(array).max() > np.iinfo(np.int64).max // 2:
        raise ValueError(f"{name} hold values too large to be class ids")
    return array.astype(np.int64)


def _label_array(values, name: str, ndim: int) -> np.ndarray:
    """`values` as a non-empty numpy array of numbers (ragged rows, strings and objects refused)."""
    if isinstance(values, (str, bytes)):
        raise ValueError(f"{name} must be integer class ids, got a string")
    if ndim == 2 and isinstance(values, (list, tuple)):
        lengths = {len(row) for row in values if hasattr(row, "__len__")}
        if len(lengths) > 1:
            raise ValueError(
                f"all rows of {name} must have the same length, got rows of lengths {sorted(lengths)}"
            )
    try:
        array = np.asarray(values)
    except ValueError as err:
        raise ValueError(f"{name} must be integer class ids ({err})") from err
    if array.dtype == object:
        raise ValueError(f"{name} must be integer class ids, found values like {list(values)[:3]}")
    if array.size == 0:
        raise ValueError(f"{name} is empty: give at least one sample")
    return array


def _check_label_dtype(array: np.ndarray, name: str) -> None:
    """Integers, booleans, or floats that are whole and finite: anything else is not a class id."""
    if array.dtype.kind in "USO":
        raise ValueError(f"{name} must be integer class ids, found strings like {array.ravel()[:3].tolist()}")
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise ValueError(f"{name} contain NaN or inf; they must be integer class ids")
        if not np.array_equal(array, np.round(array)):
            raise ValueError(
                f"{name} must be integer class ids, found fractional values like "
                f"{array[array != np.round(array)][:3].tolist()} (pass predicted labels, e.g. logits.argmax(-1), "
                "not scores)"
            )
    elif array.dtype.kind not in "iub":
        raise ValueError(f"{name} must be integer class ids, got dtype {array.dtype}")


def check_nesting(values, name: str, ndim: int, expected: str) -> None:
    """Refuse `values` nested other than `ndim` deep (lists of lists, arrays, tensors) in one line naming
    `name` and the `expected` form, before `datasets` reports it with a dump of the whole input."""
    depth, kind = _nesting(values)
    if depth is not None and depth != ndim:
        got = f"a single {kind}" if depth == 0 else f"a {depth}-D {kind}"
        raise ValueError(f"{name} must be {expected}; got {got}")


def _nesting(values) -> tuple[int | None, str]:
    """How deep `values` nests (an array or tensor: its ndim; a list: through its first items) and what
    it is; depth None for an empty list, whose emptiness is reported elsewhere."""
    if hasattr(values, "ndim") and hasattr(values, "shape"):
        return int(values.ndim), "tensor" if hasattr(values, "detach") else "numpy array"
    if isinstance(values, (list, tuple)):
        if not values:
            return None, type(values).__name__
        inner = _nesting(values[0])[0]
        return 1 + (inner or 0), type(values).__name__
    return 0, "string" if isinstance(values, (str, bytes)) else type(values).__name__


def float_rows(values, name: str) -> np.ndarray:
    """(N, D) float32 rows (e.g. representation vectors), refusing ragged, empty or non-finite input."""
    if isinstance(values, np.ndarray) or hasattr(values, "detach"):
        array = np.asarray(values.detach().cpu() if hasattr(values, "detach") else values, dtype=np.float32)
    else:
        lengths = {len(row) for row in values if hasattr(row, "__len__")}
        if len(lengths) > 1:
            raise ValueError(
                f"all rows of {name} must have the same length, got rows of lengths {sorted(lengths)}"
            )
        try:
            array = np.asarray(values, dtype=np.float32)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name} must be rows of numbers ({err})") from err
    if array.size == 0:
        raise ValueError(f"{name} is empty: give at least one sample")
    if array.ndim != 2:
        raise ValueError(f"{name} must be N rows of D numbers, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contain NaN or inf values (or values beyond float32's range)")
    return array


def _check_data(train_x, train_y, eval_x, eval_y, num_classes: int | None) -> int:
    """Shapes, labels and class count agree; returns the number of classes."""
    for name, x, y in (("train", train_x, train_y), ("eval", eval_x, eval_y)):
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{name}: {x.shape[0]} feature rows but {y.shape[0]} labels")
        if x.shape[0] == 0:
            raise ValueError(f"{name} features are empty")
    if train_x.shape[1] != eval_x.shape[1]:
        raise ValueError(f"train features have dimension {train_x.shape[1]}, eval features {eval_x.shape[1]}")
    if num_classes is None:
        num_classes = int(max(train_y.max(), eval_y.max())) + 1
    for name, y in (("train", train_y), ("eval", eval_y)):
        if int(y.min()) < 0 or int(y.max()) >= num_classes:
            raise ValueError(
                f"{name} labels must be in [0, {num_classes}); found {int(y.min())}..{int(y.max())}"
            )
    if train_y.unique().numel() < 2:
        raise ValueError("the training labels hold a single class; IIS needs at least 2 classes")
    return num_classes


def _as_features(features, name: str):
    """A float tensor or a FeatureStore, validated (finite values are checked chunk by chunk)."""
    import torch

    from ..features.store import FeatureStore

    if isinstance(features, FeatureStore):
        return features  # validated when it was written
    if hasattr(features, "features") and not hasattr(features, "shape"):  # an ExtractedFeatures
        features = features.features
    if not torch.is_tensor(features):
        try:
            features = np.asarray(features)
        except ValueError as err:  # ragged rows
            raise ValueError(f"{name} must be a 2-D (N, D) array of numbers ({err})") from None
        if features.dtype.kind not in "biuf":  # strings, objects, complex: not representations
            raise ValueError(
                f"{name} must be a 2-D (N, D) array of numbers, found {features.dtype} values like "
                f"{features.ravel()[:3].tolist()}"
            )
    tensor = torch.as_tensor(features)
    if tensor.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, D) array, got shape {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        tensor = tensor.float()
    limit = torch.finfo(torch.float32).max
    for start in range(0, tensor.shape[0], 65536):
        chunk = tensor[start : start + 65536]
        if not torch.isfinite(chunk).all():
            raise ValueError(f"{name} contain NaN or inf values; check the model's precision or the inputs")
        if chunk.numel() and float(chunk.abs().max()) > limit:
            raise ValueError(
                f"{name} reach {float(chunk.abs().max()):.3g}, beyond the float32 range ({limit:.3g}) the heads "
                "compute in; rescale them (e.g. standardise) before scoring"
            )
    return tensor


def _as_labels(labels, features, name: str):
    import torch

    if labels is None:
        labels = getattr(features, "labels", None)
        if labels is None:
            raise ValueError(f"{name} are missing: pass them, or a FeatureStore written with labels")
    if torch.is_tensor(labels) and not labels.is_floating_point():
        tensor = labels
    else:  # the check `iis-hf score` makes of a label column: the first missing or non-integer row
        values = labels.detach().cpu().double().numpy() if torch.is_tensor(labels) else labels
        try:
            shape = f"shape {np.shape(values)}" if np.ndim(values) != 1 else None
        except ValueError:
            shape = "rows of different lengths"
        if shape is not None:
            raise ValueError(f"{name} must be a 1-D array of class ids, got {shape}")
        tensor = torch.from_numpy(check_labels(values, name))
    if tensor.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class ids, got shape {tuple(tensor.shape)}")
    return tensor.long()
