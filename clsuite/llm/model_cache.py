"""The GGUF → float32 torch conversion, done once per machine and cached.

transformers' GGUF loader dequantises SmolLM2's Q4_1 tensors and rebuilds its tokenizer from
the GGUF metadata: about 40 s of every LLM run. :func:`load_converted` does it once and keeps
the result in a per-user cache folder (:func:`cache_root`: ``$CLSUITE_CACHE_DIR``, else
``$XDG_CACHE_HOME/clsuite``, else ``~/.cache/clsuite``), under ``llm/<key>/``, where ``key`` is
the sha256 of the GGUF file + :data:`CONVERTER_VERSION` + the transformers and gguf versions
(a new GGUF, converter or loader makes a new entry). An entry holds

- ``model.safetensors`` (the state dict; tied weights stored once), ``config.json``,
  ``generation_config.json`` and the tokenizer's JSON files: data-only formats, loaded with
  ``from_pretrained(use_safetensors=True, trust_remote_code=False)``; nothing from the cache is
  unpickled or executed (docs/security.md);
- ``manifest.json``: the sha256 of every other file, checked on every load; an entry that does
  not match (truncated, edited, half deleted) is removed and rebuilt from the GGUF.

An entry is written in a temp folder beside it and renamed into place, so a killed conversion
leaves no half entry; two processes converting at once both succeed (the second rename loses
and its copy is dropped). The loaded weights equal the converted ones bit for bit (tested).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import torch

from clsuite.core.io import sha256_file

log = logging.getLogger(__name__)
_UMASK = os.umask(0)
os.umask(_UMASK)

#: bump when the conversion or the entry layout changes: old entries are then ignored
CONVERTER_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"


def cache_root() -> Path:
    """The per-user cache folder: ``$CLSUITE_CACHE_DIR``, else ``$XDG_CACHE_HOME/clsuite``, else ``~/.cache/clsuite``."""
    if os.environ.get("CLSUITE_CACHE_DIR"):
        return Path(os.environ["CLSUITE_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "clsuite"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "none"


def entry_key(gguf_path: Path) -> str:
    """sha256 over the GGUF file's sha256, :data:`CONVERTER_VERSION` and the loader versions."""
    parts = {"gguf_sha256": sha256_file(gguf_path), "converter": CONVERTER_VERSION,
             "transformers": _version("transformers"), "gguf": _version("gguf")}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _file_hashes(folder: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}


def entry_ok(entry: Path) -> bool:
    """True iff ``entry`` has a manifest and every file it lists, with the listed sha256 and nothing else."""
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
        return isinstance(manifest, dict) and WEIGHTS in manifest and _file_hashes(entry) == manifest
    except (OSError, ValueError):
        return False


def write_entry(entry: Path, model: torch.nn.Module, tokenizer: Any) -> None:
    """Write ``model`` (float32 state dict, config) and ``tokenizer`` as the cache entry ``entry``
    (temp folder, manifest, then rename)."""
    from safetensors.torch import save_model

    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp creates 0700; give the usual folder mode
    try:
        save_model(model, str(tmp / WEIGHTS), metadata={"format": "pt"})  # tied tensors stored once
        config = model.config.to_dict()
        config.pop("quantization_config", None)  # the weights are plain float32 now
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        model.generation_config.to_json_file(str(tmp / "generation_config.json"))
        tokenizer.save_pretrained(str(tmp))
        (tmp / MANIFEST).write_text(json.dumps(_file_hashes(tmp), indent=2, sort_keys=True) + "\n")
        try:
            os.rename(tmp, entry)
        except OSError:  # another process wrote the entry meanwhile: keep theirs
            if not entry_ok(entry):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def read_entry(entry: Path):
    """(model in float32, tokenizer) of a checked cache entry: safetensors and JSON only."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(entry), trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(str(entry), dtype=torch.float32, use_safetensors=True,
                                                 trust_remote_code=False)
    return model, tok


def load_converted(gguf_path: Path, convert: Callable[[], tuple[torch.nn.Module, Any]],
                   root: Path | None = None):
    """(model, tokenizer) of the GGUF file ``gguf_path``: from the cache entry of its key when
    that entry is intact, else ``convert()`` (the GGUF loader) written into a new entry first.
    A damaged entry is logged, removed and rebuilt. A cache that cannot be written (read-only
    home) only costs the conversion: the converted model is returned all the same."""
    entry = (cache_root() if root is None else root) / "llm" / entry_key(gguf_path)
    if entry.is_dir():
        if entry_ok(entry):
            return read_entry(entry)
        log.warning("model cache entry %s is damaged (a file is missing or its sha256 differs from "
                    "manifest.json): removed, converting %s again", entry, gguf_path.name)
        shutil.rmtree(entry)
    model, tok = convert()
    try:
        write_entry(entry, model, tok)
    except OSError as exc:
        log.warning("cannot write the model cache entry %s (%s): the conversion is not cached", entry, exc)
        return model, tok
    return read_entry(entry)  # the cached copy, so that a first run and later ones load the same objects
