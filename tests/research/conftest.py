"""The research code (examples/research_projects/iis_paper) is not part of the installed package:
its scripts import `iis_paper` from their own folder, and these tests from the same place."""

from __future__ import annotations

import sys
from pathlib import Path

RESEARCH = Path(__file__).resolve().parents[2] / "examples" / "research_projects" / "iis_paper"
if str(RESEARCH) not in sys.path:
    sys.path.insert(0, str(RESEARCH))
