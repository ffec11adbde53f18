"""The import rules of DESIGN.md, held as explicit allowed edges.

Data flows one way: study -> run -> results -> report. Every ``import`` in the
source (module level and inside functions alike) is read with ``ast``, so a
lazy import cannot hide an edge; a second check imports results/ and report/
in a fresh interpreter and asserts torch, Ray and the method core stay out.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Where each part of the code may import from (besides itself and the standard library / third party
# packages not listed in FORBIDDEN_THIRD_PARTY).
ALLOWED = {
    "orchestrator": set(),
    "orchestrator.study": {"methods", "datasets"},
    "orchestrator.run": {"orchestrator.study", "orchestrator.results", "methods", "datasets",
                         "orchestrator.cluster.connect"},
    "orchestrator.results": {"orchestrator.study.schema", "orchestrator.study.base", "orchestrator.study.orders",
                             "orchestrator.study.redact"},
    "orchestrator.report": {"orchestrator.results", "orchestrator.study.schema", "orchestrator.study.base",
                            "orchestrator.study.orders", "orchestrator.study.redact"},
    "orchestrator.cluster": {"orchestrator.study"},
    "orchestrator.cli": {"orchestrator.study", "orchestrator.run", "orchestrator.results", "orchestrator.report",
                         "orchestrator.cluster"},
    "methods": {"datasets"},
    "datasets": set(),
}
INTERNAL = ("orchestrator", "methods", "datasets")
FORBIDDEN_THIRD_PARTY = {
    "orchestrator.results": {"torch", "ray", "torchvision"},
    "orchestrator.report": {"torch", "ray", "torchvision"},
    "orchestrator.study": {"mlflow"},
    "methods": {"ray", "mlflow"},
    "datasets": {"ray", "mlflow"},
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every imported name, as a dotted path: ``from a.b import c`` gives ``a.b.c``."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def _part(module: str) -> str | None:
    """The most specific key of ALLOWED that ``module`` belongs to."""
    keys = [k for k in ALLOWED if module == k or module.startswith(k + ".")]
    return max(keys, key=len) if keys else None


def _within(target: str, prefixes: set[str]) -> bool:
    return any(target == p or target.startswith(p + ".") for p in prefixes)


def test_import_edges_are_the_allowed_ones():
    broken = []
    for package in INTERNAL:
        for path in sorted((ROOT / package).rglob("*.py")):
            module = _module_name(path)
            part = _part(module)
            if part is None:
                broken.append(f"{module}: in no part of the layout (move it into one of {', '.join(ALLOWED)})")
                continue
            for target in sorted(_imports(path)):
                top = target.split(".")[0]
                if top in FORBIDDEN_THIRD_PARTY.get(part, set()):
                    broken.append(f"{module} imports {target} (forbidden in {part})")
                if top in INTERNAL and not _within(target, ALLOWED[part] | {part}):
                    broken.append(f"{module} imports {target}: {part} may import only "
                                  f"{', '.join(sorted(ALLOWED[part])) or 'nothing internal'}")
    assert not broken, "\n".join(broken)


def test_results_and_report_never_load_torch_ray_or_methods():
    modules = [_module_name(p) for part in ("results", "report")
               for p in sorted((ROOT / "orchestrator" / part).glob("*.py"))]
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules) +
            "bad = sorted(m for m in ('torch', 'ray', 'methods', 'datasets', 'torchvision') if m in sys.modules)\n"
            "print(','.join(bad))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"importing results/ and report/ loaded {out.stdout.strip()}"


def test_orchestrator_has_only_the_five_parts_and_the_cli():
    top = sorted(p.name for p in (ROOT / "orchestrator").iterdir()
                 if p.name != "__pycache__" and not p.name.startswith("."))
    assert top == ["__init__.py", "cli.py", "cluster", "report", "results", "run", "study"]


def test_clorch_help_loads_no_torch_ray_or_mlflow():
    """`clorch --help` must answer at once: the heavy packages load only when a command needs them."""
    code = ("import sys\nfrom orchestrator.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('LOADED:' + ','.join(sorted(m for m in ('torch', 'ray', 'mlflow', 'methods', 'datasets') "
            "if m in sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    loaded = out.stdout.strip().splitlines()[-1]
    assert loaded == "LOADED:", f"clorch --help loaded {loaded}"


def test_clorch_list_and_validate_load_torch_but_no_ray_mlflow_or_plotting():
    """`clorch list` and `clorch validate` need the methods' parameters (torch) and nothing heavier."""
    heavy = ('ray', 'mlflow', 'optuna', 'matplotlib', 'pandas', 'torchvision')
    for argv in (['list'], ['list', 'halrp'], ['validate', 'studies/quickstart.yaml']):
        code = ("import sys, contextlib, io\nfrom orchestrator.cli import main\n"
                f"with contextlib.redirect_stdout(io.StringIO()):\n    rc = main({argv!r})\n"
                f"print('RC', rc, 'LOADED:' + ','.join(sorted(m for m in {heavy!r} if m in sys.modules)))\n")
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip().splitlines()[-1] == "RC 0 LOADED:", (argv, out.stdout)
