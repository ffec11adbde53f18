"""How the report writes numbers and tables: one place, so report.md, LaTeX and compare agree."""
from __future__ import annotations

FIGURE_DPI = 110  # every figure of a report (report.md, compare) is saved at this resolution


def num(v: float | None, digits: int = 2) -> str:
    return "–" if v is None or v != v else f"{v:.{digits}f}"


def pm(mean: float | None, std: float | None) -> str:
    if mean is None or mean != mean:
        return "–"
    return num(mean) + (f" ± {num(std)}" if std is not None and std == std else "")


def ci(interval: tuple[float | None, float | None]) -> str:
    lo, hi = interval
    return "–" if lo is None or hi is None or lo != lo else f"[{num(lo)}, {num(hi)}]"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def file_safe(name: str) -> str:
    """A name as a file name: runs of anything but letters, digits, ``_.-`` become ``_``."""
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")
