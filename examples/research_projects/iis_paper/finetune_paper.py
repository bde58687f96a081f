#!/usr/bin/env python
"""Finding 2, run faithfully (issue 19): does fine-tuning with the interpretability loss raise accuracy?

The experiment is `iis_paper.finetune_paper` (its docstring, and ``--help``, give the
design: backbones, scenarios, arms, the exploratory grid, the pre-registration and the
confirmatory run); this file is its command line. Rerun the same command to resume:

    OMP_NUM_THREADS=1 python examples/research_projects/iis_paper/finetune_paper.py --output-dir finetune_paper_output \\
        --write-report finetune_paper_output/finding2.md
    python examples/research_projects/iis_paper/finetune_paper.py --quick --output-dir /tmp/finetune_paper_quick      # ~2 min
    python examples/research_projects/iis_paper/finetune_paper.py --scale gpu --device cuda --output-dir finetune_paper_gpu
    python examples/research_projects/iis_paper/finetune_paper.py --output-dir finetune_paper_output --report-only \\
        --write-report docs/finding2_paper.md                    # tables and figure from the files
"""

from iis_paper.finetune_paper import main

if __name__ == "__main__":
    raise SystemExit(main())
