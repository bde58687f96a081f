"""The experiments behind docs/RESULTS.md: research code beside the iis_hf package, not in its wheel.

Two experiments, each with one entry point (`main(argv)` for the command line, `run(argv)` returning
the results):

- `reproduce`: the paper's three findings on digits and animal silhouettes
  (`python examples/research_projects/iis_paper/reproduce_findings.py`);
- `finetune_paper`: finding 2 re-tested the way the paper ran it, with a pre-registered choice
  (`python examples/research_projects/iis_paper/finetune_paper.py`).

Their parts are modules of one idea: `data` (the images), `models` (small classifiers), `runs`
(training runs and resumable files), `scoring` (accuracy and IIS through `iis_hf.pipeline`),
`statistics` (verdicts over `iis_hf.stats`), `provenance`, then each experiment's runs, analysis,
figures and report (`findings_*`, `paper_*`). They import the library's public modules (never a
private name); the library never imports them. The runners in the folder above import this package
from their own folder; the tests add the folder to `sys.path` (tests/research/conftest.py).
"""
