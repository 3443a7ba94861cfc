"""Each DVC stage's code dependencies, derived from what its command imports.

A stage runs ``stages/<x>.py`` → ``clsuite.cli.main`` → one ``cmd_*`` function; its code is
the static import closure of that function (:func:`clsuite.core.code_fingerprint.module_closure`,
lazy imports and the built-ins of every registry it can query included).

The ``code`` stage (``stages/code.py``, which depends on the whole ``clsuite/`` folder) writes
``data/code/<stage>.json``: that closure with the sha256 of every file, rewritten only when it
changed. Every other stage depends on its own list, not on the files: a code change reruns
exactly the stages that can run the changed file (editing the report no longer reruns the 60
train stages), and ``dvc.lock`` stays short — DVC parses the whole lock file several times
per stage it runs, which with ~20 code entries per train stage (200 KB) cost ~1.3 s a stage.

``python -m clsuite.dvc_deps`` prints, per stage of ``dvc.yaml``, the clsuite files it needs
and those its deps do not cover; ``--check`` exits 1 when any is missing; ``--write`` replaces
the ``clsuite/...`` code entries of each stage's ``deps:`` by its ``data/code/<stage>.json``
(other deps and comments stay).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from clsuite.core.code_fingerprint import ROOT, closure_files
from clsuite.core.io import sha256_file, write_text

REPO = ROOT.parent
MAIN = "clsuite.cli:main"  # every stage script calls it (it imports clsuite.cli_llm too)

#: stage name in dvc.yaml → what its script runs (``module:function`` or a module)
STAGES: dict[str, list[str]] = {
    "code": ["clsuite.dvc_deps"],  # stages/code.py, without the command line; depends on clsuite/ itself
    "plugins": ["clsuite.core.code_fingerprint"],  # stages/plugins.py, without the command line
    "run_params": ["clsuite.dvc_params"],  # stages/run_params.py, without the command line
    "fetch": [MAIN, "clsuite.cli:cmd_fetch"],
    "prepare": [MAIN, "clsuite.cli:cmd_prepare"],
    "train": [MAIN, "clsuite.cli:cmd_train"],
    "evaluate": [MAIN, "clsuite.cli:cmd_evaluate"],
    "report": [MAIN, "clsuite.cli:cmd_report"],
    "llm_prepare": [MAIN, "clsuite.cli_llm:cmd_prepare"],
    "llm_train": [MAIN, "clsuite.cli_llm:cmd_train"],
    "llm_evaluate": [MAIN, "clsuite.cli_llm:cmd_evaluate"],
    "llm_report": [MAIN, "clsuite.cli_llm:cmd_report"],
}


#: where the ``code`` stage writes each stage's list, as dvc.yaml names it
CODE_LISTS = "data/code"
#: the stage that writes the lists (its own dep is the clsuite/ folder)
CODE_STAGE = "code"


def needed_files(stage: str) -> list[Path]:
    """The clsuite source files that stage ``stage``'s command can execute."""
    return closure_files(STAGES[stage], registries=True)


def code_list_dep(stage: str) -> str:
    """The dvc.yaml dep naming stage ``stage``'s code list."""
    return f"{CODE_LISTS}/{stage}.json"


def code_list(stage: str) -> str:
    """JSON text of stage ``stage``'s code: every file of its closure (repo-relative) with its sha256."""
    files = {f.relative_to(REPO).as_posix(): sha256_file(f) for f in needed_files(stage)}
    return json.dumps({"stage": stage, "files": files}, indent=1, sort_keys=True) + "\n"


def write_code_lists(folder: Path) -> list[str]:
    """Write ``<folder>/<stage>.json`` for every stage but ``code``, each only when its text
    changed (an unchanged file keeps its hash, so DVC reruns nothing); the stages rewritten."""
    changed = []
    for stage in STAGES:
        if stage == CODE_STAGE:
            continue
        path, text = folder / f"{stage}.json", code_list(stage)
        if not path.is_file() or path.read_text() != text:
            write_text(path, text)
            changed.append(stage)
    return changed


def _all_modules(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*.py") if "__pycache__" not in p.parts}


def collapse(files: list[Path], share: float = 0.5) -> list[str]:
    """``files`` as dvc.yaml deps (repo-relative), kept short: a folder (the topmost such, never
    clsuite/ itself) wherever at least ``share`` of the modules under it are needed — listing a
    few unneeded modules only costs a rerun, which the runs' code fingerprints make a cheap
    resume — otherwise the files."""
    need = set(files)
    folders = {a for f in need for a in f.parents if ROOT in a.parents}
    complete = {d for d in folders if len(_all_modules(d) & need) >= share * len(_all_modules(d))}
    complete = {d for d in complete if not any(a in complete for a in d.parents)}
    out = complete | {f for f in need if not any(d in f.parents for d in complete)}
    return sorted(p.relative_to(REPO).as_posix() for p in out)


def declared(dvc_yaml: Path) -> dict[str, list[str]]:
    """Each stage's ``deps`` in ``dvc_yaml`` (``foreach``/``matrix`` stages included)."""
    import yaml

    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    return {name: list((body.get("do", body)).get("deps", [])) for name, body in stages.items()}


def covered(file: Path, deps: list[str]) -> bool:
    """Whether a dep (the file, or a folder above it) covers repo file ``file``."""
    rel = file.relative_to(REPO).as_posix()
    return any(rel == d.rstrip("/") or rel.startswith(d.rstrip("/") + "/") for d in deps)


def missing(dvc_yaml: Path) -> dict[str, list[str]]:
    """Per stage: the needed clsuite files no dep of ``dvc_yaml`` covers (a stage that depends on
    its code list is covered by construction: the list holds exactly :func:`needed_files`)."""
    decl = declared(dvc_yaml)
    out = {}
    for stage in STAGES:
        deps = decl.get(stage, [])
        out[stage] = [] if code_list_dep(stage) in deps else [
            f.relative_to(REPO).as_posix() for f in needed_files(stage) if not covered(f, deps)]
    return out


def write(dvc_yaml: Path) -> None:
    """Replace each stage's ``- clsuite/...`` code deps (``.py`` files, folders) and its code list by
    ``- data/code/<stage>.json``, in place of the first one (the ``code`` stage keeps ``- clsuite``);
    other clsuite/ files and everything under clsuite/catalogue/ (its *.yaml, the search records
    of clsuite/catalogue/tuned/) are kept."""
    lines = dvc_yaml.read_text().splitlines(keepends=True)
    out: list[str] = []
    stage = None
    in_deps = done = False
    for line in lines:
        m = re.match(r"^  (\w+):\s*$", line)
        if m:
            stage, in_deps, done = m.group(1), False, False
        elif re.match(r"^\s+deps:\s*$", line):
            in_deps = True
        elif in_deps and re.match(r"^\s+[a-z_]+:", line):  # params:, outs:, ...
            in_deps = False
        # generated entries only (modules and folders); data files such as the catalogue stay
        item = re.match(rf"^(\s+)- (?:clsuite/(?!catalogue/)(?:\S*\.py|[^.\s]*)|{CODE_LISTS}/\w+\.json)\s*$", line)
        if in_deps and item and stage in STAGES and stage != CODE_STAGE:
            if not done:
                out.append(f"{item.group(1)}- {code_list_dep(stage)}\n")
                done = True
            continue
        out.append(line)
    dvc_yaml.write_text("".join(out))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m clsuite.dvc_deps", description=__doc__.splitlines()[0])
    ap.add_argument("--dvc-yaml", type=Path, default=REPO / "dvc.yaml")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 when a stage's deps miss a file it imports")
    mode.add_argument("--write", action="store_true", help="rewrite the clsuite/ deps of every stage")
    args = ap.parse_args(argv)
    if args.write:
        write(args.dvc_yaml)
    gaps = missing(args.dvc_yaml)
    for stage in STAGES:
        print(f"{stage}: {', '.join(collapse(needed_files(stage)))}")  # what its code list covers
        if gaps[stage]:
            print(f"  not covered by {args.dvc_yaml}: {', '.join(gaps[stage])}")
    if args.check and any(gaps.values()):
        print(f"run `python -m clsuite.dvc_deps --write` to fix {args.dvc_yaml}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
