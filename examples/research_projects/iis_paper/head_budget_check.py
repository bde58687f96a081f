#!/usr/bin/env python
"""Does a checkpoint's IIS move when the heads' budget doubles? (`iis_paper.budget_check`)

python head_budget_check.py --output-dir budget_check --dataset digits --models resnet-s convnext-s
"""

from iis_paper.budget_check import main

if __name__ == "__main__":
    raise SystemExit(main())
