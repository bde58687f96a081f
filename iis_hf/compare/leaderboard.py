"""The leaderboard: scores ranked by IIS, printed, and saved as Markdown, CSV, JSON and two plots."""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..files import atomic_directory, write_json_atomic, write_text_atomic
from ..plotting import model_colors, plot_iis_curves, plot_iis_vs_accuracy
from ..score import IISResult
from ..version import __version__
from .cards import dataset_name
from .comparable import _show, check_comparable, comparable_view

SCATTER_NAME = "iis_vs_accuracy.png"
CURVES_NAME = "iis_curves.png"
OUTPUT_NAMES = ("leaderboard.md", "leaderboard.csv", "leaderboard.json", SCATTER_NAME, CURVES_NAME)


@dataclass
class LeaderboardEntry:
    name: str
    source: str  # "scored" (here) or "card" (read from a model card)
    location: str  # the Hub id, folder or card it came from
    result: IISResult


@dataclass
class Leaderboard:
    """Models ranked by IIS (undefined scores last), all measured with the same settings."""

    entries: list[LeaderboardEntry]
    title: str = "IIS leaderboard"

    @classmethod
    def from_results(
        cls,
        results: Mapping[str, IISResult],
        *,
        sources: Mapping[str, str] | None = None,
        locations: Mapping[str, str] | None = None,
        title: str | None = None,
    ) -> Leaderboard:
        """Rank `results` (name -> result) after checking that they are comparable (`check_comparable`)."""
        if not results:
            raise ValueError("no results to rank")
        check_comparable(results)
        entries = [
            LeaderboardEntry(
                name, (sources or {}).get(name, "scored"), str((locations or {}).get(name, name)), result
            )
            for name, result in results.items()
        ]
        # Valid scores first, best first; then invalid ones (a number, but not an IIS); undefined last.
        entries.sort(key=lambda e: (not e.result.valid, e.result.iis is None, -(e.result.iis or 0.0)))
        return cls(entries, title or _title(results.values()))

    @property
    def sparsity_ratios(self) -> list[float]:
        return list(self.entries[0].result.sparsity_ratios)

    def rows(self) -> list[dict[str, Any]]:
        """One flat dict per model, best first: rank, model, source, A0, IIS, its sd and interval, A(rho)."""
        rows, rank = [], 0
        for entry in self.entries:
            result = entry.result
            uncertainty = result.uncertainty or {}
            low, high = uncertainty.get("ci") or (None, None)
            rank += result.valid
            row = {
                "rank": rank if result.valid else None,
                "model": entry.name,
                "source": entry.source,
                "standard_accuracy": result.standard_accuracy,
                "iis": result.iis,
                "iis_sd": uncertainty.get("sd"),
                "iis_ci_low": low,
                "iis_ci_high": high,
                "valid": result.valid,
                "not_valid_because": result.invalid_reason or result.undefined_reason,
            }
            accuracies = _accuracies_by_ratio(result)
            for ratio in self.sparsity_ratios:
                row[f"accuracy_{ratio:g}"] = accuracies.get(round(float(ratio), 9))
            rows.append(row)
        return rows

    def table(self) -> str:
        """The leaderboard as a plain-text table (what `iis-hf compare` prints)."""
        width = max(5, *(len(e.name) for e in self.entries))
        ratios = self.sparsity_ratios
        header = (
            f"{'rank':>4}  {'model':<{width}}  {'source':<6}  {'A0':>6}  {'IIS':>6}  {'± sd':>6}  "
            f"{'95% CI':<15}" + "".join(f"  {'A(' + format(r, 'g') + ')':>7}" for r in ratios)
        )
        lines = [self.title, header]
        for row in self.rows():
            low, high = row["iis_ci_low"], row["iis_ci_high"]
            interval = f"[{low:.3f}, {high:.3f}]" if low is not None and math.isfinite(low) else "–"
            lines.append(
                f"{_cell(row['rank'], 'd'):>4}  {row['model']:<{width}}  {row['source']:<6}  "
                f"{_cell(row['standard_accuracy']):>6}  {_cell(row['iis'], '.4f', 'undef'):>6}  "
                f"{_cell(row['iis_sd']):>6}  {interval:<15}"
                + "".join(f"  {_cell(row[f'accuracy_{r:g}']):>7}" for r in ratios)
            )
            if row["not_valid_because"] and row["iis"] is not None:
                lines.append(f"{'':>4}  ^ NOT A VALID IIS, not ranked: {row['not_valid_because']}")
        return "\n".join(lines)

    def to_markdown(self) -> str:
        ratios = self.sparsity_ratios
        columns = ["rank", "model", "source", "A0", "IIS", *(f"A({r:g})" for r in ratios)]
        lines = [
            f"## {self.title}",
            "",
            "| " + " | ".join(columns) + " |",
            "|" + "---|" * len(columns),
        ]
        for entry, row in zip(self.entries, self.rows()):
            cells = [
                _cell(row["rank"], "d"),
                f"`{row['model']}`",
                row["source"],
                _cell(row["standard_accuracy"]),
                entry.result.iis_text(4),
                *(_cell(row[f"accuracy_{r:g}"]) for r in ratios),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "Settings shared by every score:", ""]
        lines += [f"- {key}: {_show(value, quote=False)}" for key, value in self.shared_settings().items()]
        lines += ["", f"![IIS vs accuracy]({SCATTER_NAME})", ""]
        return "\n".join(lines)

    def to_csv(self) -> str:
        buffer = io.StringIO()
        rows = self.rows()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "iis_hf_version": __version__,
            "settings": self.shared_settings(),
            "models": [
                {
                    "rank": row["rank"],
                    "name": e.name,
                    "source": e.source,
                    "location": e.location,
                    **e.result.to_dict(),
                }
                for e, row in zip(self.entries, self.rows())
            ],
        }

    def shared_settings(self) -> dict[str, Any]:
        """The comparable settings, as recorded by the scores that record each one."""
        shared: dict[str, Any] = {}
        for entry in self.entries:
            for key, value in comparable_view(entry.result).items():
                shared.setdefault(key, value)
        return shared

    def plot(self, path: str | os.PathLike) -> None:
        """The accuracy-vs-IIS scatter (x = A0, y = IIS, error bars from the 95% interval)."""
        points = [
            {
                "name": e.name,
                "standard_accuracy": e.result.standard_accuracy,
                "iis": e.result.iis,
                "ci": (e.result.uncertainty or {}).get("ci"),
                "source": e.source,
                "valid": e.result.valid,
            }
            for e in self.entries
        ]
        ratios = self.sparsity_ratios
        heading = "IIS vs accuracy" + self.title[3:] if self.title.startswith("IIS on ") else self.title
        title = f"{heading}\n{self.settings_summary()}"
        plot_iis_vs_accuracy(
            points, path, title=title, max_iis=max(ratios) - min(ratios), colors=self.colors()
        )

    def colors(self) -> dict[str, str]:
        """Each model's colour, from its rank: the same in the scatter and in the curves."""
        return model_colors([e.name for e in self.entries])

    def settings_summary(self) -> str:
        """One line: the concepts, the ratio grid, the protocol and the eval split the scores share."""
        shared = self.shared_settings()
        number = shared.get("concepts: number")
        parts = [
            f"{number} {shared['concepts: kind']} concepts"
            if number
            else f"{shared['concepts: kind']} concepts"
        ]
        parts.append(f"{len(self.sparsity_ratios)} ratios up to {max(self.sparsity_ratios):g}")
        parts.append(f"{shared.get('protocol')} protocol")
        if shared.get("data: eval_split"):
            parts.append(f"eval: {shared['data: eval_split']}")
        return " · ".join(parts)

    def save(self, output_dir: str | os.PathLike, overwrite: bool = True) -> Path:
        """Write leaderboard.md/.csv/.json, the scatter and the curves as `output_dir`, all or nothing
        (an existing folder is replaced whole, `iis_hf.files.atomic_directory`; with ``overwrite=False``
        it is refused)."""
        with atomic_directory(output_dir, overwrite=overwrite) as tmp:
            write_text_atomic(tmp / "leaderboard.md", self.to_markdown())
            write_text_atomic(tmp / "leaderboard.csv", self.to_csv())
            write_json_atomic(tmp / "leaderboard.json", self.to_dict())
            self.plot(tmp / SCATTER_NAME)
            curves = {
                e.name: e.result
                for e in self.entries
                if e.result.iis is not None and len(e.result.accuracies) == len(e.result.sparsity_ratios)
            }
            if curves:
                plot_iis_curves(
                    curves,
                    tmp / CURVES_NAME,
                    title=f"{self.title}: the curves behind the scores",
                    colors=self.colors(),
                    subtitle=self.settings_summary(),
                )
        return Path(output_dir)

    def __str__(self) -> str:
        return self.table()


def is_leaderboard_entry(name: str) -> bool:
    """Whether a folder entry is one `Leaderboard.save` writes (what ``--overwrite`` may replace)."""
    return name in OUTPUT_NAMES


def _accuracies_by_ratio(result: IISResult) -> dict[float, float]:
    if len(result.accuracies) != len(result.sparsity_ratios):
        return {}
    return {round(float(r), 9): float(a) for r, a in zip(result.sparsity_ratios, result.accuracies)}


def _cell(value, spec: str = ".4f", missing: str = "–") -> str:
    if value is None:
        return missing
    return format(value, spec)


def _title(results) -> str:
    for result in results:
        dataset = ((result.settings or {}).get("data") or {}).get("dataset")
        if dataset:
            return f"IIS on {dataset_name(dataset)}"
    return "IIS leaderboard"
