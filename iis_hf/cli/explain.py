"""`iis-hf explain`: one image's prediction from concepts, with the concepts that made it."""

from __future__ import annotations

import argparse

from ._arguments import HelpFormatter, UsageError, add_verbosity_arguments


def register(commands: argparse._SubParsersAction) -> None:
    explain = commands.add_parser(
        "explain",
        help="explain the interpretation head's prediction for one image by its concepts",
        description="Predict one image's class from the interpretation head of a model saved by "
        "IISModelForImageClassification / IISTrainer, print the concepts that contributed most "
        "(activation x class weight), and write a figure.",
        formatter_class=HelpFormatter,
    )
    explain.add_argument(
        "--model", required=True, help="folder or Hub id saved by IISModelForImageClassification / IISTrainer"
    )
    explain.add_argument("--image", required=True, help="the image file to explain")
    explain.add_argument("--output", required=True, help="the PNG figure to write")
    explain.add_argument(
        "--sparsity-ratio", type=float, default=None, help="which head (default: the model's last ratio)"
    )
    explain.add_argument("--top-k", type=int, default=8, help="how many concepts to show")
    explain.add_argument("--json", action="store_true", help="print the explanation as JSON instead of text")
    add_verbosity_arguments(explain)
    explain.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from ..explain import explain
    from ..images import load_image
    from ..modeling import IISModelForImageClassification
    from ..preflight import check_model_folder, check_output_file, model_loading
    from ._arguments import warn_if_launched_alone

    warn_if_launched_alone("explain")  # every command says when a multi-process launch runs it alone

    if args.top_k < 1:
        raise UsageError(f"--top-k must be >= 1, got {args.top_k}")
    if not str(args.model).strip():
        raise UsageError("--model is empty; give an IIS model folder or Hub id")
    # The figure must be writable, a PNG, and none of the inputs (never the image it explains).
    check_output_file(args.output, "--output", inputs={"--image": args.image, "--model": args.model})
    check_model_folder(args.model)
    image = load_image(args.image)  # a bad image fails before the model is loaded
    with model_loading(args.model):
        model = IISModelForImageClassification.from_pretrained(args.model)
    explanation = explain(model, image, sparsity_ratio=args.sparsity_ratio, top_k=args.top_k)
    if args.json:
        report = json.dumps({**explanation.to_dict(), "model": args.model, "image": args.image}, indent=2)
    else:
        report = f"{args.image}: {explanation.summary()}\nwrote {args.output}"
    explanation.plot(args.output)  # last: the figure appears only when everything else succeeded
    print(report)
    return 0
