"""``clsuite profile NAME``: copy a profile's grid into ``run:`` of params.yaml.

dvc.yaml's matrix reads ``run.benchmarks/methods/seeds`` (DVC cannot index a dict by
another parameter), so switching profile rewrites those three lists — and, when the
profile has an ``llm:`` grid, ``llm.grid.sequences/methods/seeds`` — in place with a
round-trip YAML editor that keeps every comment and the rest of the file as it was.
"""

from __future__ import annotations

import io
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedSeq

from clsuite.config import parse_params
from clsuite.errors import ParamsError
from clsuite.io import write_text


def use_profile(path: Path, name: str) -> None:
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096  # keep flow lists on one line
    doc = yaml.load(path.read_text())
    profiles = doc.get("profiles") or {}
    if name not in profiles:
        raise ParamsError(f"{path}: profiles.{name}: no such profile; defined: {', '.join(sorted(profiles))}")
    for key in ("benchmarks", "methods", "seeds"):
        seq = CommentedSeq(list(profiles[name][key]))
        seq.fa.set_flow_style()
        doc["run"][key] = seq
    doc["run"]["profile"] = name
    llm_grid = profiles[name].get("llm")
    if llm_grid is not None and "llm" in doc:  # the LLM track's grid (dvc.yaml's llm_* matrix)
        for key in ("sequences", "methods", "seeds"):
            seq = CommentedSeq(list(llm_grid[key]))
            seq.fa.set_flow_style()
            doc["llm"]["grid"][key] = seq
    buf = io.StringIO()
    yaml.dump(doc, buf)
    text = buf.getvalue()
    import yaml as pyyaml

    parse_params(pyyaml.safe_load(text), source=str(path))  # never write an invalid file
    write_text(path, text)
