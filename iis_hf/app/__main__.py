"""`python -m iis_hf.app`: serve the app (a bad model, port or a missing gradio is one line, exit 2)."""

from __future__ import annotations

import sys

from iis_hf.app import main

if __name__ == "__main__":
    try:
        main()
    except ValueError as err:  # a bad model, port or a missing gradio: one line, not a traceback
        print(f"iis-hf app: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
