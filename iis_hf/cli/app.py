"""`iis-hf app`: the Gradio web app of `iis_hf.app` (its own flags: --model, --host, --port, --share)."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    app = commands.add_parser(
        "app",
        help="a web app: upload an image, see the prediction from concepts and its explanation",
        description='Serve the Gradio app of iis_hf.app (needs `pip install "iis-hf[app]"`); '
        "see `iis-hf app --help`.",
        add_help=False,
        prefix_chars="+",
    )
    app.add_argument("app_args", nargs=argparse.REMAINDER, help="--model, --host, --port, --share")
    app.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..app import main as app_main

    return app_main(args.app_args)
