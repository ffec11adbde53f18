"""A report table once, written three ways: markdown in report.md, CSV and LaTeX beside it.

A ``Table`` holds the formatted cells report.md shows (also what the LaTeX
file typesets) and, separately, the raw values behind them (what the CSV file
holds: unrounded numbers, an empty field for a missing one), so a CSV read
back gives summary.json's numbers exactly, not their rounded text.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.report.fmt import md_table

TABLES_DIR = "tables"


@dataclass
class Table:
    name: str                   # file stem: tables/<name>.csv and tables/<name>.tex
    caption: str                # one sentence: the LaTeX caption
    header: list[str]           # as report.md shows it
    cells: list[list[str]]      # formatted, one row per line of the table
    columns: list[str]          # the CSV header
    values: list[list[Any]]     # raw values, aligned with ``columns``

    def markdown(self) -> str:
        return md_table(self.header, self.cells)


def _csv_value(v: Any) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, (list, tuple)):
        return " ".join(str(_csv_value(x)) for x in v)
    return repr(v) if isinstance(v, float) else v  # repr: the shortest text that reads back as the same float


def write_csv(table: Table, path: Path) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(table.columns)
        for row in table.values:
            w.writerow([_csv_value(v) for v in row])
    return path


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_UNICODE = {"±": r"$\pm$", "–": "--", "−": "$-$", "Δ": r"$\Delta$", "≤": r"$\le$", "≥": r"$\ge$",
                  "×": r"$\times$", "²": r"$^2$", "`": ""}


def latex_escape(text: str) -> str:
    out = "".join(_LATEX_SPECIAL.get(c, c) for c in str(text))
    for k, v in _LATEX_UNICODE.items():
        out = out.replace(k, v)
    return out


def latex(table: Table) -> str:
    """A booktabs table (needs \\usepackage{booktabs}); the first column left-aligned, the others right."""
    spec = "l" + "r" * (len(table.header) - 1)
    lines = ["\\begin{table}[t]", "\\centering", f"\\caption{{{latex_escape(table.caption)}}}",
             f"\\label{{tab:{table.name}}}", f"\\begin{{tabular}}{{{spec}}}", "\\toprule",
             " & ".join(latex_escape(h) for h in table.header) + " \\\\", "\\midrule"]
    lines += [" & ".join(latex_escape(c) for c in row) + " \\\\" for row in table.cells]
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    return "\n".join(lines)


def write_all(tables: list[Table], out_dir: Path) -> dict[str, Path]:
    """``out_dir``/tables/<name>.csv and .tex for each table; files of an earlier report not written now are
    removed. Returns file name -> path."""
    directory = out_dir / TABLES_DIR
    directory.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for t in tables:
        written[f"{t.name}.csv"] = write_csv(t, directory / f"{t.name}.csv")
        tex = directory / f"{t.name}.tex"
        tex.write_text(latex(t))
        written[f"{t.name}.tex"] = tex
    for stale in [*directory.glob("*.csv"), *directory.glob("*.tex")]:
        if stale.name not in written:
            stale.unlink()
    return written


def files_line(written: dict[str, Path]) -> str:
    """report.md's pointer to the exported tables."""
    stems = list(dict.fromkeys(Path(n).stem for n in written))
    return (f"Tables as CSV (raw values, unrounded) and LaTeX (booktabs, as shown here): "
            f"{', '.join(f'`{TABLES_DIR}/{s}.csv`/`.tex`' for s in stems)}.")
