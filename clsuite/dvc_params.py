"""Each image train stage's params as one small file, ``data/run_params/<method>.json``.

Every ``train@<benchmark>-<method>`` stage used to declare ``params: [methods.<method>,
run.seeds, ...]``. DVC then parses params.yaml once per such stage (ruamel.yaml, ~37 ms
for our params.yaml on this machine with its pure-Python parser), 30 times in a no-op
``dvc repro`` of the embedded grid: about 1.1 s of its 3.6 s. The ``run_params`` stage
(``stages/run_params.py``) declares ``methods`` and ``run`` once and writes, per method, the
params its train stages read; each train stage depends on its method's file instead. A file
is rewritten only when its text changed, so editing one method's params still reruns only
that method's train stages (DVC checks an unchanged file by its mtime, without reading it).

The file holds exactly what the train stage declared before: ``methods.<method>`` (``null``
when params.yaml has no entry; ``clsuite train`` then names the missing key) and
:data:`TRAIN_RUN_KEYS` of ``run``. The train command itself still reads params.yaml.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from clsuite.core.errors import ParamsError
from clsuite.core.io import write_text
from clsuite.core.names import check_name
from clsuite.core.paths import under
from clsuite.core.yaml_safe import load_yaml

#: where the ``run_params`` stage writes, as dvc.yaml names it
RUN_PARAMS_DIR = "data/run_params"
#: the ``run.*`` keys that can change a train run's records (those the train stages declared)
TRAIN_RUN_KEYS = ("seeds", "device", "deterministic", "amp", "channels_last", "threads")


def train_params(raw: dict[str, Any], method: str) -> dict[str, Any]:
    """What the train stages of ``method`` depend on: ``{"methods.<method>": entry,
    "run.<key>": value, ...}`` (dotted keys as dvc.yaml's ``params:`` named them)."""
    run = raw.get("run") or {}
    out: dict[str, Any] = {f"methods.{method}": (raw.get("methods") or {}).get(method)}
    out.update({f"run.{key}": run.get(key) for key in TRAIN_RUN_KEYS})
    return out


def read_raw(params_file: Path) -> dict[str, Any]:
    """params.yaml as plain data, read under clsuite's YAML limits (no validation of its values:
    `clsuite train` validates when it runs)."""
    raw = load_yaml(params_file)
    if not isinstance(raw, dict) or not isinstance(raw.get("methods", {}), dict) or not isinstance(raw.get("run"), dict):
        raise ParamsError(f"{params_file}: expected a mapping with `run:` and `methods:` mappings; "
                             "fix the file (see the committed params.yaml)")
    return raw


def write_run_params(params_file: Path, folder: Path) -> list[str]:
    """Write ``<folder>/<method>.json`` for every method of ``methods:`` and ``run.methods``,
    each only when its text changed, and remove the files of methods no longer named; the
    methods whose file was written or removed."""
    raw = read_raw(params_file)
    names = set(raw.get("methods") or {}) | set(raw["run"].get("methods") or [])
    for method in names:  # each becomes a file name: never a path out of the folder
        check_name(method, f"{params_file}: methods.{method}")
    changed = []
    for method in sorted(names):
        path = under(folder, f"{method}.json")
        text = json.dumps(train_params(raw, method), indent=1, sort_keys=True) + "\n"
        if not path.is_file() or path.read_text() != text:
            write_text(path, text)
            changed.append(method)
    for stale in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if stale.stem not in names:
            stale.unlink()
            changed.append(stale.stem)
    return changed
