"""What code produced a run: the source files of its training path, hashed.

A run's checkpoint fingerprint (:mod:`clsuite.core.checkpoint`) includes :func:`code_fingerprint`,
so any change of the code that trains a run makes its checkpoint foreign: the run starts over
instead of resuming (and republishing old records), and ``dvc repro -f`` retrains. The same
module closure gives each DVC stage its code dependencies (:mod:`clsuite.dvc_deps`), and
:func:`plugin_packages` lists the third-party packages that extend clsuite through entry points
(``data/method_packages.json``, a dependency of the train stages).

Which files: the **static import closure** of the training entry module and of the run's own
components (method, model), i.e. every ``clsuite`` module named by an ``import`` statement
anywhere in those files — including imports inside functions, which run only later in
training — followed transitively, plus the ``__init__.py`` of every package on the way. This is
chosen over "the ``clsuite`` modules in ``sys.modules``" because (1) it also covers modules that
load lazily after the fingerprint is taken, and (2) it leaves out the other built-in methods:
registries import their built-ins by name (``importlib.import_module``), not by an import
statement (only ``import_module`` calls with a literal name, or ``f"pkg.{name}"`` = all of
``pkg``, are followed), so editing ``methods/replay.py`` changes the fingerprint of replay's runs (and of
methods that import it) and not finetune's. Reading and parsing ~60 files costs ~0.1 s.

A component outside clsuite (a third-party method or model) enters with its distribution's
name and version and a hash of its package's files, found without importing it
(:func:`importlib.util.find_spec` on the top-level package, so editable installs count too).
The versions of the libraries that do the numerics (torch, avalanche-lib, numpy; transformers
and peft for the LLM track) enter as well.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, distributions, version
from pathlib import Path
from typing import Iterable

ROOT = Path(__file__).resolve().parents[1]  # the clsuite package directory
PACKAGE = ROOT.name  # "clsuite"
IMAGE_LIBRARIES = ("torch", "avalanche-lib", "numpy")
LLM_LIBRARIES = ("torch", "numpy", "transformers", "peft")
#: command-line modules: one function per stage, each importing its own code lazily, so a
#: stage's closure follows only the functions it calls there (``module:function`` roots)
DISPATCHERS = frozenset({"clsuite.cli", "clsuite.cli_llm"})


def module_file(name: str) -> Path | None:
    """The source file of clsuite module ``name`` (a module or a package's ``__init__``), or None."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = ROOT.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports_in(nodes: Iterable[ast.AST], package: str, registries: bool) -> set[str]:
    """The module names that the statements ``nodes`` (walked fully) import; with ``registries``
    also the ``builtins=`` module of every ``Registry(...)`` they create. ``from X import y``
    gives ``X`` and ``X.y`` (kept only when it is a module)."""
    found: set[str] = set()
    for node in (n for top in nodes for n in ast.walk(top)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and node.args and _called_name(node.func) == "import_module":
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.add(arg.value)
            elif (isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant)
                  and str(arg.values[0].value).endswith(".")):  # import_module(f"pkg.{name}"): all of pkg
                found.update(_package_modules(str(arg.values[0].value)[:-1]))
        elif registries and isinstance(node, ast.Call) and _called_name(node.func) == "Registry":
            found.update(k.value.value for k in node.keywords
                         if k.arg == "builtins" and isinstance(k.value, ast.Constant) and isinstance(k.value.value, str))
    return found


def _called_name(func: ast.expr) -> str | None:
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None


def _package_modules(package: str) -> set[str]:
    """The modules directly inside clsuite package ``package``."""
    path = module_file(package)
    if path is None or path.name != "__init__.py":
        return set()
    return {f"{package}.{p.stem}" for p in path.parent.glob("*.py") if p.name != "__init__.py"}


@lru_cache(maxsize=None)
def _parse(name: str) -> tuple[ast.Module, str] | None:
    path = module_file(name)
    if path is None:
        return None
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    return ast.parse(path.read_bytes(), filename=str(path)), package


def _modules(names: Iterable[str]) -> frozenset[str]:
    return frozenset(m for m in names if module_file(m) is not None)


@lru_cache(maxsize=None)
def _direct(name: str, registries: bool) -> frozenset[str]:
    """What module ``name`` imports anywhere in its file."""
    parsed = _parse(name)
    return frozenset() if parsed is None else _modules(_imports_in([parsed[0]], parsed[1], registries))


def _function_imports(name: str, function: str, registries: bool) -> frozenset[str]:
    """What running ``function`` of module ``name`` imports: the module's top-level statements,
    the function's body and the bodies of the module's functions it calls by name (transitively)."""
    parsed = _parse(name)
    if parsed is None:
        return frozenset()
    tree, package = parsed
    defs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    if function not in defs:
        raise KeyError(f"{name} has no function {function!r}")
    top = [n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    todo, seen = [function], set()
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        todo.extend(c.func.id for c in ast.walk(defs[f]) if isinstance(c, ast.Call)
                    and isinstance(c.func, ast.Name) and c.func.id in defs)
    found = _imports_in(top + [defs[f] for f in seen], package, registries)
    # a dispatcher (DISPATCHERS) reached from a function: only the functions imported from it
    calls = {f"{m}:{a.name}" for f in seen for n in ast.walk(defs[f]) if isinstance(n, ast.ImportFrom)
             and (m := n.module or "") in DISPATCHERS for a in n.names}
    return _modules(found - DISPATCHERS) | frozenset(calls)


def module_closure(roots: Iterable[str], *, registries: bool = False) -> set[str]:
    """The clsuite modules reachable from ``roots`` by import statements (see the module
    docstring), with the packages that contain them; names outside clsuite are dropped.
    A root ``"module:function"`` stands for what calling that function imports (not the
    module's other functions). ``registries``: also follow each ``Registry``'s
    ``builtins=`` module (a stage loads every built-in of the registries it queries)."""
    todo, seen = list(roots), set()
    while todo:
        name = todo.pop()
        mod, _, function = name.partition(":")
        if name in seen or module_file(mod) is None:
            continue
        seen.update((name, mod))
        parts = mod.split(".")
        todo.extend(p for p in (".".join(parts[:i]) for i in range(1, len(parts))) if module_file(p) is not None)
        todo.extend((_function_imports(mod, function, registries) if function else _direct(mod, registries)) - seen)
    return {m for m in seen if ":" not in m and module_file(m) is not None}


def closure_files(roots: Iterable[str], *, registries: bool = False) -> list[Path]:
    """The source files of :func:`module_closure`, sorted (namespace packages have none)."""
    return sorted({module_file(m) for m in module_closure(roots, registries=registries)})  # type: ignore[type-var]


def hash_files(files: Iterable[Path], base: Path) -> str:
    """sha256 over the sorted (path relative to ``base``, bytes) of ``files``."""
    h = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.relative_to(base).as_posix()):
        rel = path.relative_to(base).as_posix().encode()
        data = path.read_bytes()
        h.update(len(rel).to_bytes(8, "little") + rel + len(data).to_bytes(8, "little") + data)
    return h.hexdigest()


def package_hash(top: str) -> str | None:
    """sha256 of the files of top-level package (or module) ``top``, found without importing
    it; None when it cannot be found."""
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        dirs = [Path(d) for d in spec.submodule_search_locations]
        files = [p for d in dirs for p in d.rglob("*")
                 if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")]
        return hash_files(files, dirs[0].parent)
    if spec.origin and Path(spec.origin).is_file():
        origin = Path(spec.origin)
        return hash_files([origin], origin.parent)
    return None


def library_versions(names: Iterable[str], missing: str = "absent") -> dict[str, str]:
    """Installed versions of the distributions ``names`` (``missing`` for one not installed)."""
    out = {}
    for n in names:
        try:
            out[n] = version(n)
        except PackageNotFoundError:
            out[n] = missing
    return out


def code_fingerprint(entry: str, components: Iterable[str] = (), libraries: Iterable[str] = ()) -> dict:
    """What code a run executes: ``entry`` (the training module, e.g. ``clsuite.image.train``) and
    ``components`` (modules of the run's method, model, ...; clsuite's or a third-party
    package's), as {"clsuite": sha256 of the closure's files, "files": how many, "packages":
    {top-level package: distribution, version, sha256} for components outside clsuite,
    "libraries": versions of ``libraries``}."""
    components = sorted(set(components))
    clsuite_mods = [entry, *(c for c in components if c.split(".")[0] == PACKAGE)]
    files = closure_files(clsuite_mods)
    packages = {}
    tops = sorted({c.split(".")[0] for c in components} - {PACKAGE})
    installed = plugin_packages() if tops else {}
    for top in tops:
        info = installed.get(top, {"distribution": "unknown", "version": "unknown"})
        packages[top] = {"distribution": info["distribution"], "version": info["version"],
                         "sha256": package_hash(top) or "unknown"}
    return {"clsuite": hash_files(files, ROOT.parent), "files": len(files), "packages": packages,
            "libraries": library_versions(libraries)}


def short_hash(fp: dict) -> str:
    """A 16-hex-digit digest of a :func:`code_fingerprint` (for log.txt and status.json)."""
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]


def plugin_packages() -> dict[str, dict]:
    """Every installed package that extends clsuite through a ``clsuite.*`` entry-point group:
    {top-level package: distribution, version, sha256 of its files, entry points}. Nothing
    is imported (cheap enough to run before every ``dvc repro``)."""
    out: dict[str, dict] = {}
    for dist in distributions():
        text = dist.read_text("entry_points.txt")
        if not text or f"[{PACKAGE}." not in text:  # skip the rest cheaply (no metadata parsing)
            continue
        for ep in dist.entry_points:
            top = ep.value.split(":")[0].split(".")[0].strip()
            if not ep.group.startswith(f"{PACKAGE}.") or top == PACKAGE:
                continue
            if top not in out:
                out[top] = {"distribution": dist.metadata["Name"], "version": dist.version,
                            "sha256": package_hash(top) or "unknown", "entry_points": []}
            out[top]["entry_points"].append(f"{ep.group}:{ep.name}={ep.value}")
    for info in out.values():
        info["entry_points"] = sorted(set(info["entry_points"]))
    return dict(sorted(out.items()))


def modules_of(*objects: object) -> set[str]:
    """The modules that define ``objects`` (functions, classes, instances; None skipped)."""
    out = set()
    for obj in objects:
        if obj is None:
            continue
        mod = getattr(obj, "__module__", None) or type(obj).__module__
        if isinstance(mod, str):
            out.add(mod)
    return out
