"""`python -m iis_hf.cli`: the `iis-hf` command."""

import sys

from . import main

sys.exit(main())
