"""Tests of the research code beside the package (examples/research_projects/iis_paper)."""
