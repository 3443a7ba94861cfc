"""``clsuite profile NAME``: copy a profile's grid into ``run:`` of params.yaml.

The profiles live in the catalogue (clsuite/catalogue/profiles.yaml, or a ``profiles:``
section of the params file itself). dvc.yaml's matrix reads ``run.benchmarks/methods/seeds``
(DVC cannot index a dict by another parameter), so switching profile rewrites those three
lists and ``run.profile`` — and, when the profile has an ``llm:`` grid,
``llm.grid.sequences/methods/seeds`` — in place with a round-trip YAML editor that keeps
every comment and the rest of the file as it was. The lists are written in block style (one
item a line), as `dvc exp run -S` writes them, so neither tool reformats the other's output.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError as RuamelError

from clsuite.config import ProfileConfig, compose_params, format_validation_error, parse_params
from clsuite.core.errors import ParamsError
from clsuite.core.io import write_text
from clsuite.core.yaml_safe import load_yaml, parse_yaml


def _check_switchable(path: Path, raw: Any, name: str) -> ProfileConfig:
    """The profile ``name`` of the safely loaded file, and the sections it is copied into."""
    if not isinstance(raw, dict) or not isinstance(raw.get("run"), dict):
        raise ParamsError(f"{path}: top level must be a mapping with a run: mapping; fix params.yaml first")
    composed, origin = compose_params(raw)
    where = origin.get("profiles", str(path))
    profiles = composed.get("profiles")
    if not isinstance(profiles, dict) or name not in profiles:
        defined = ", ".join(sorted(map(str, profiles))) if isinstance(profiles, dict) else "none"
        raise ParamsError(f"{where}: profiles.{name}: no such profile; defined: {defined}")
    try:
        grid = ProfileConfig.model_validate(profiles[name], strict=True)
    except ValidationError as exc:
        raise ParamsError(f"{where}: invalid profile\n"
                          + format_validation_error(exc, f"profiles.{name}", ProfileConfig)) from None
    if grid.llm is not None and "llm" in raw and not (isinstance(raw["llm"], dict)
                                                      and isinstance(raw["llm"].get("grid"), dict)):
        raise ParamsError(f"{path}: llm.grid: must be a mapping to switch to profile {name!r}, which has an llm grid")
    return grid


def use_profile(path: Path, name: str) -> None:
    """Switch ``path``'s grid to profile ``name``. The file is first read with the bounded,
    strict loader (clsuite.core.yaml_safe), so the round-trip editor only ever sees a file that
    is small, alias-bounded and free of duplicate keys; the result is validated before it
    replaces the file."""
    path = Path(path)
    grid = _check_switchable(path, load_yaml(path), name)
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096  # never wrap a line
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"))
        for key in ("benchmarks", "methods", "seeds"):
            seq = CommentedSeq(list(getattr(grid, key)))
            seq.fa.set_block_style()
            doc["run"][key] = seq
        doc["run"]["profile"] = name
        if grid.llm is not None and "llm" in doc:  # the LLM track's grid (dvc.yaml's llm_* matrix)
            for key in ("sequences", "methods", "seeds"):
                seq = CommentedSeq(list(getattr(grid.llm, key)))
                seq.fa.set_block_style()
                doc["llm"]["grid"][key] = seq
        buf = io.StringIO()
        yaml.dump(doc, buf)
    except (RuamelError, OSError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ParamsError(f"{path}: cannot switch to profile {name!r}: the round-trip YAML editor failed "
                          f"({' '.join(str(exc).split())}); fix params.yaml by hand") from None
    text = buf.getvalue()
    parse_params(parse_yaml(text, str(path)), source=str(path))  # never write an invalid file
    write_text(path, text)


def _fit_style(entry: CommentedMap, line_start: int, width: int = 80) -> None:
    """params.yaml's convention for ``methods.<m>`` after an edit: a mapping holding a mapping
    is in block style, the innermost (``train_by_benchmark.<b>``) inline; a flat entry stays
    inline while its line fits in ``width`` columns (``line_start``: the columns before ``{``)."""
    nested = [v for v in entry.values() if isinstance(v, CommentedMap)]
    if nested:
        entry.fa.set_block_style()
        for tbb in nested:
            tbb.fa.set_block_style()
            for own in tbb.values():
                if isinstance(own, CommentedMap):
                    own.fa.set_flow_style()
    elif entry.fa.flow_style() and line_start + len("{" + ", ".join(f"{k}: {v}" for k, v in entry.items()) + "}") > width:
        entry.fa.set_block_style()


def apply_settings(path: Path, method: str, benchmark: str, values: dict[str, Any]) -> list[str]:
    """Write ``values`` (``train.<k>`` keys and method hyperparameters, e.g. a search's chosen
    configuration) into ``methods.<method>`` of ``path``: ``train.<k>`` as
    ``train_by_benchmark.<benchmark>.<k>``, the others as the method's own keys. The rest of the
    file (comments, order, other keys) stays as it was; a mapping stays inline while it fits in
    80 columns. The result is validated before it replaces the file. Returns the key paths set."""
    path = Path(path)
    raw = load_yaml(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("methods"), dict) or method not in raw["methods"]:
        raise ParamsError(f"{path}: methods.{method}: not defined; add the method before applying tuned settings")
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    set_keys = []
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"))
        entry = doc["methods"][method]
        if entry is None:
            entry = doc["methods"][method] = CommentedMap()
        for key, value in values.items():
            if key.startswith("train."):
                tbb = entry.setdefault("train_by_benchmark", CommentedMap())
                own = tbb.setdefault(benchmark, CommentedMap())
                own[key.removeprefix("train.")] = value
                set_keys.append(f"methods.{method}.train_by_benchmark.{benchmark}.{key.removeprefix('train.')}")
            else:
                entry[key] = value
                set_keys.append(f"methods.{method}.{key}")
        _fit_style(entry, 2 + len(method) + 2)
        buf = io.StringIO()
        yaml.dump(doc, buf)
    except (RuamelError, OSError, UnicodeDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ParamsError(f"{path}: cannot write methods.{method}: the round-trip YAML editor failed "
                          f"({' '.join(str(exc).split())}); set the values by hand") from None
    text = buf.getvalue()
    parse_params(parse_yaml(text, str(path)), source=str(path))  # never write an invalid file
    write_text(path, text)
    return set_keys
