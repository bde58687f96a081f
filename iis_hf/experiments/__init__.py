"""The experiments behind docs/RESULTS.md: the top layer of iis_hf, above the command line's peers.

Two experiments, each with one entry point (`main(argv)` for the command line, `run(argv)` returning
the results):

- `reproduce`: the paper's three findings on digits and animal silhouettes
  (`python examples/reproduce_findings.py`);
- `finetune_paper`: finding 2 re-tested the way the paper ran it, with a pre-registered choice
  (`python benchmarks/finetune_paper.py`).

Their parts are modules of one idea: `data` (the images), `models` (small classifiers), `runs`
(training runs and resumable files), `scoring` (accuracy and IIS through `iis_hf.pipeline`),
`statistics` (verdicts over `iis_hf.stats`), `provenance`, then each experiment's runs, analysis,
figures and report (`findings_*`, `paper_*`). They import the library's constants and pipeline;
nothing below imports them. The modules load on import of their own name only (this file imports
none), so `import iis_hf` stays light.
"""
