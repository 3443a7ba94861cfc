"""The untrained model's evaluation (records of stage -1), computed once and shared by the runs.

Every run of a sequence starts from the same base model, so its stage -1 records (generated
answers and scores before training) are the same for every method that does not change the
model before training: LoRA adds ``B·A·x`` with ``B = 0`` at initialisation (an exact zero),
full fine-tuning changes nothing until the first step. The first run to need them evaluates
the base model and writes its records to ``<cache>/<key>.parquet`` (``data/llm_base/<sequence>``
from ``clsuite llm-train``; LLM_RECORDS, validated, written atomically); later runs with the same
key read that file and write it into their own ``records/stage_-01.parquet`` with their own
run_id, method and seed: the same rows and values as evaluating again (tested).

``key`` (:func:`base_key`) is a sha256 over everything the evaluation depends on: the sequence's
config (model, generation protocol), the prepared data, the device and thread count, the code
of the training/evaluation path and library versions, the seed when the model's weights
depend on it (``tiny_random``) and, for a method that changes the model before training
(``prepare_model``: sparse memory, CMS insert a module), the method and its config, so those
runs get their own entry. A file that cannot be read or fails the schema is logged and
evaluated again. Method plugins' evaluation hooks must not change what is generated
(docs/llm.md, "Records and metrics"); a method that changes the model declares ``prepare_model``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from clsuite.core.checkpoint import fingerprint
from clsuite.llm.schemas import LLM_RECORDS

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the stage -1 records change for the same inputs
IDENT = ("run_id", "sequence", "method", "seed")


def base_key(sequence_cfg: dict[str, Any], *, data: str, device: str, threads: int | None, code: dict,
             seed: int | None, method: dict[str, Any] | None) -> str:
    """The cache key of a base evaluation (sha256 hex). ``seed``: None unless the base weights
    depend on it; ``method``: None unless the method changes the model before training."""
    return fingerprint(format=FORMAT, sequence=sequence_cfg, data=data, device=device, threads=threads,
                       code=code, seed=seed, method=method)


def base_path(cache: Path, key: str) -> Path:
    return cache / f"{key}.parquet"


def read_base(path: Path, ident: dict[str, Any]) -> pd.DataFrame | None:
    """The cached stage -1 records at ``path`` with ``ident`` (run_id, sequence, method, seed) as
    their run's columns; None if there is no file or it cannot be read (logged: it is rebuilt)."""
    if not path.is_file():
        return None
    from clsuite.core.parquet import read_table

    try:
        df = read_table(path, LLM_RECORDS)
    except Exception as exc:  # truncated, not parquet, wrong schema: evaluate again and overwrite
        log.warning("shared base evaluation %s unreadable (%s): evaluating the base model again", path, exc)
        return None
    if len(df) == 0 or (df["stage"] != -1).any():
        log.warning("shared base evaluation %s holds no stage -1 records: evaluating the base model again", path)
        return None
    for col in IDENT:
        df[col] = ident[col]
    return df.astype({"seed": "int64"})


def write_base(path: Path, records: pd.DataFrame) -> None:
    """Store stage -1 ``records`` at ``path`` (atomic; the run columns are kept, and replaced on read).
    A folder that cannot be written only costs the sharing (logged); the run goes on."""
    from clsuite.core.parquet import write_table

    try:
        write_table(records, path, LLM_RECORDS)
    except OSError as exc:
        log.warning("cannot write the shared base evaluation %s (%s): later runs evaluate the base model again",
                    path, exc)
