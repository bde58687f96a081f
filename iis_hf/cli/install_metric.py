"""`iis-hf install-metric`: register the evaluate module so `evaluate.load("iis")` works offline."""

from __future__ import annotations

import argparse

from ._arguments import HelpFormatter, add_verbosity_arguments


def register(commands: argparse._SubParsersAction) -> None:
    install = commands.add_parser(
        "install-metric",
        help="register the evaluate module so evaluate.load('iis') works offline",
        formatter_class=HelpFormatter,
    )
    install.add_argument(
        "--modules-cache", default=None, help="evaluate's modules cache (default: HF_MODULES_CACHE)"
    )
    add_verbosity_arguments(install)
    install.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..metric_install import install_metric

    path = install_metric(args.modules_cache)
    print(f"installed the IIS metric at {path}")
    print(
        "use it offline from any folder: HF_EVALUATE_OFFLINE=1 python -c \"import evaluate; evaluate.load('iis')\"\n"
        "(evaluate then logs that it uses its cached copy; iis_hf.load_metric() loads the module by its path, "
        "with no network and no such warning)"
    )
    return 0
