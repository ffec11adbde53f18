"""A researcher's own methods and benchmarks: plugins, imported before the registries are read.

Three ways in, all ending in the same registries (``methods.register``,
``datasets.register``):

- a study's ``plugins:`` list: paths relative to the study file (a ``.py`` file
  or a package directory) or importable module names;
- ``clorch list --plugin P`` (the same forms, relative to the current directory);
- the ``clorch.plugins`` entry-point group: a pip-installed package adds
  methods without a ``plugins:`` line.

The driver loads them before validation; every trial worker loads the same
``PluginRef`` list before it looks a method up (``load_refs``). A path plugin
travels as its source text, so a worker on another node runs exactly the code
the driver validated; a package directory travels through Ray's runtime
environment (``py_modules``). Loading is idempotent per process: a worker that
runs many trials imports each plugin once.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

ENTRY_POINT_GROUP = "clorch.plugins"


class PluginError(ValueError):
    """A plugin that cannot be used: not found, fails to import, or registers a name twice."""


@dataclass(frozen=True)
class PluginRef:
    """One plugin as the driver resolved it: ``kind`` file | package | module | entry_point."""

    kind: str
    name: str            # module name it is imported as
    path: str = ""       # file or package directory (absolute), "" for module / entry point
    source: str = ""     # a file plugin's text, shipped to workers

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "path": self.path, "source": self.source}

    @classmethod
    def from_dict(cls, d: dict[str, str]) -> "PluginRef":
        return cls(**d)


_LOADED: dict[str, str] = {}  # module name -> fingerprint of what was loaded under it in this process


def resolve(entry: str, base_dir: Path) -> PluginRef:
    """A ``plugins:`` entry -> PluginRef. Paths are relative to ``base_dir`` (the study file's folder)."""
    text = str(entry).strip()
    if not text:
        raise PluginError("an empty plugin entry; give a path (my_methods.py) or a module name (my_pkg.methods)")
    looks_like_path = text.endswith(".py") or "/" in text or "\\" in text or text.startswith(".")
    candidate = (base_dir / text).resolve()
    if candidate.is_file() and candidate.suffix == ".py":
        return PluginRef("file", _module_name_for(candidate), str(candidate), candidate.read_text())
    if candidate.is_dir() and (candidate / "__init__.py").is_file():
        return PluginRef("package", candidate.name, str(candidate))
    if looks_like_path:
        raise PluginError(f"no plugin file at {candidate}; paths are relative to the study file "
                          f"({base_dir}); give a .py file, a package directory or a module name")
    return PluginRef("module", text)


def _module_name_for(path: Path) -> str:
    """A file plugin is imported as its stem; a stem that names another module is an error, not a shadow."""
    name = path.stem
    if not name.isidentifier():
        raise PluginError(f"plugin file {path}: {name!r} is not a valid module name; rename the file "
                          "(letters, digits, '_')")
    return name


def entry_point_refs() -> list[PluginRef]:
    """The ``clorch.plugins`` entry points of installed distributions, as module refs."""
    refs = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        refs.append(PluginRef("entry_point", ep.value.split(":")[0].strip(), path=ep.name))
    return sorted(set(refs), key=lambda r: r.name)


def load(entries: list[str], base_dir: Path, where: str = "plugins") -> list[PluginRef]:
    """Resolve and import ``entries`` (and the entry points); return what a worker must load too."""
    refs: list[PluginRef] = []
    for index, entry in enumerate(entries):
        try:
            refs.append(resolve(entry, base_dir))
        except PluginError as e:
            raise PluginError(f"{where}[{index}] ({entry}): {e}") from None
    refs += [r for r in entry_point_refs() if r.name not in {x.name for x in refs}]
    load_refs(refs, labels=[f"{where}[{i}] ({e})" for i, e in enumerate(entries)])
    return refs


def load_refs(refs: list[PluginRef], labels: list[str] | None = None) -> None:
    """Import each plugin once in this process (driver or worker)."""
    labels = list(labels or [])
    for index, ref in enumerate(refs):
        label = labels[index] if index < len(labels) else f"entry point {ref.path or ref.name}"
        _load_one(ref, label)


def _fingerprint(ref: PluginRef) -> str:
    return hashlib.sha1(f"{ref.kind}\0{ref.path}\0{ref.source}".encode()).hexdigest()


def _load_one(ref: PluginRef, label: str) -> None:
    seen = _LOADED.get(ref.name)
    if seen == _fingerprint(ref):
        return
    if seen is not None:
        raise PluginError(f"{label}: a different plugin was already loaded as module {ref.name!r} in this "
                          "process; give the two plugins distinct names")
    try:
        if ref.kind == "file":
            _exec_file(ref)
        else:
            if ref.kind == "package":
                parent = str(Path(ref.path).parent)
                if parent not in sys.path:
                    sys.path.insert(0, parent)
            existing = sys.modules.get(ref.name)
            if ref.kind == "package" and existing is not None and \
                    Path(getattr(existing, "__file__", "") or "").parent != Path(ref.path):
                raise PluginError(f"package {ref.name!r} is already imported from {existing.__file__}, "
                                  f"not from {ref.path}; rename the plugin package")
            importlib.import_module(ref.name)
    except PluginError:
        raise
    except ModuleNotFoundError as e:
        if ref.kind == "module" and e.name and ref.name.split(".")[0] == e.name.split(".")[0]:
            raise PluginError(f"{label}: no module named {ref.name!r} (not a file next to the study either); "
                              "install it in this environment, or give a path relative to the study file") from None
        raise PluginError(f"{label}: importing it failed: {_last_line(e)}") from None
    except Exception as e:  # noqa: BLE001 - any import-time error is the plugin's, reported in one message
        raise PluginError(f"{label}: importing it failed: {_last_line(e)}") from None
    _LOADED[ref.name] = _fingerprint(ref)


def _exec_file(ref: PluginRef) -> None:
    """Import a file plugin from its shipped source, as module ``ref.name`` (its folder on sys.path)."""
    existing = sys.modules.get(ref.name)
    if existing is not None and getattr(existing, "__clorch_plugin__", None) is None:
        raise PluginError(f"plugin file {ref.path} would be imported as {ref.name!r}, which names an "
                          f"installed module ({getattr(existing, '__file__', 'built in')}); rename the file")
    folder = str(Path(ref.path).parent)
    if Path(folder).is_dir() and folder not in sys.path:
        sys.path.append(folder)  # siblings it imports; appended so it never shadows installed packages
    spec = importlib.util.spec_from_loader(ref.name, loader=None, origin=ref.path)
    module = importlib.util.module_from_spec(spec)
    module.__file__ = ref.path
    module.__clorch_plugin__ = ref.path
    sys.modules[ref.name] = module
    try:
        exec(compile(ref.source, ref.path, "exec"), module.__dict__)  # noqa: S102 - the user's own plugin
    except BaseException:
        del sys.modules[ref.name]
        raise


def _last_line(e: BaseException) -> str:
    """``Type: message`` with the plugin's own file and line when the traceback has them."""
    frames = [f for f in traceback.extract_tb(e.__traceback__) if "importlib" not in f.filename
              and not f.filename.endswith("plugins.py")]
    where = f" ({frames[-1].filename}, line {frames[-1].lineno})" if frames else ""
    if isinstance(e, SyntaxError) and e.filename:
        where = f" ({e.filename}, line {e.lineno})"
    return f"{type(e).__name__}: {e}{where}"
