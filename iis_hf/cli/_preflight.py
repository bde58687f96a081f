"""What `score` and `compare` check before they read an image: one preflight for both.

The device, the data-size flags, the cache and output folders (creatable or replaceable, writable,
not full, none of the inputs) and the config and weights of each model folder to score. Nothing is
written, so a run that cannot finish stops in a second instead of after minutes of extraction.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping

from ..config import DEFAULT_CLIP_MODEL, ScoringConfig
from ._arguments import UsageError


def check_scoring_flags(args: argparse.Namespace, config: ScoringConfig) -> None:
    """Flags that only make sense together, and the data sizes (>= 1 when given)."""
    if not config.concepts.is_text and (
        config.concepts.concept_file or config.concepts.clip_model != DEFAULT_CLIP_MODEL
    ):
        raise UsageError("--concept-file and --clip-model apply to --concept-kind text only")
    for name in ("max_train_samples", "max_eval_samples"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1")


def preflight(
    args: argparse.Namespace,
    config: ScoringConfig,
    *,
    inputs: Mapping[str, object],
    models: Mapping[str, str],
    ours: Callable[[str], bool],
) -> None:
    """Everything checkable before any work: `inputs` (flag -> path) must not be the output or cache
    folder; `models` (flag -> folder or Hub id) are the models to score; `ours` tells the command's own
    output entries apart from foreign files in an existing output folder."""
    from ..preflight import (
        check_cache_dir,
        check_device,
        check_model_folder,
        check_not_an_input,
        check_output_folder,
    )

    check_scoring_flags(args, config)
    check_device(config.device)
    cache = check_cache_dir(config.extraction.cache_dir)
    if cache is not None:
        check_not_an_input(cache, "--cache-dir", inputs, "folder")
    check_output_folder(
        args.output_dir,
        "--output-dir",
        inputs={**inputs, "--cache-dir": cache},
        overwrite=args.overwrite,
        ours=ours,
    )
    for flag, model in models.items():
        check_model_folder(model, flag)
