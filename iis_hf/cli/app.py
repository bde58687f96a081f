"""`iis-hf app`: the Gradio web app of `iis_hf.app` (its own flags: --model, --host, --port, --share)."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    # A pass-through command (`passes_through`): `iis_hf.cli.main` hands every argument after `app` to
    # the app's own parser (`iis_hf.app.build_arg_parser`) untouched, so this parser declares none.
    app = commands.add_parser(
        "app",
        help="a web app: upload an image, see the prediction from concepts and its explanation",
        description='Serve the Gradio app of iis_hf.app (needs `pip install "iis-hf[app]"`); '
        "see `iis-hf app --help`.",
        add_help=False,
    )
    app.set_defaults(func=run, passes_through=True)


def run(args: argparse.Namespace) -> int:
    from ..app import main as app_main
    from ._arguments import warn_if_launched_alone

    warn_if_launched_alone("app")  # every command says when a multi-process launch runs it alone

    return app_main(args.passed_args)
