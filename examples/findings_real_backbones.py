#!/usr/bin/env python
"""Finding 1 on real ImageNet backbones (EfficientNet-Lite0/1/2, a random init, fine-tuned Lite0):
IIS against the probe accuracy A0 on digits and animal silhouettes, resumable:

    python examples/findings_real_backbones.py --output-dir docs/results/finding1_efficientnet_lite
"""

from iis_hf.experiments.findings_real import main

if __name__ == "__main__":
    raise SystemExit(main())
