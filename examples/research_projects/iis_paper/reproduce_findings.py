#!/usr/bin/env python
"""Reproduce the paper's three findings on real images, offline, and write the evidence.

The experiment is `iis_paper.reproduce` (its docstring, and ``--help``, say what it
measures and how); this file is its command line:

    python examples/research_projects/iis_paper/reproduce_findings.py --output-dir reproduce_output --write-report docs/RESULTS.md
    python examples/research_projects/iis_paper/reproduce_findings.py --quick --output-dir reproduce_quick     # a few minutes on 2 CPU cores
    python examples/research_projects/iis_paper/reproduce_findings.py --smoke --output-dir /tmp/smoke           # seconds (the test)
    python examples/research_projects/iis_paper/reproduce_findings.py --skip-checkpoints --output-dir finding2  # finding 2 alone

Merge the finding-2 run into an earlier run's report (statistics recomputed, nothing trained):

    python examples/research_projects/iis_paper/reproduce_findings.py --from-results docs/RESULTS.json
        --finetuning-results finding2/results.json --output-dir reproduce_output
        --write-report docs/RESULTS.md

The `animals` data set needs ``pip install -e ".[reproduce]"`` (animal-shape-mnist 0.39).
"""

from iis_paper.reproduce import main

if __name__ == "__main__":
    raise SystemExit(main())
