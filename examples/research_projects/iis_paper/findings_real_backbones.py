#!/usr/bin/env python
"""Finding 1 on real ImageNet backbones (EfficientNet-Lite0/1/2, a random init, fine-tuned Lite0):
IIS against the probe accuracy A0 on digits and animal silhouettes, resumable:

    python examples/research_projects/iis_paper/findings_real_backbones.py --output-dir examples/research_projects/iis_paper/results/finding1_efficientnet_lite
"""

from iis_paper.findings_real import main

if __name__ == "__main__":
    raise SystemExit(main())
