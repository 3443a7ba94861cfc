"""Per-sample prediction records: the one input of every metric.

After each training experience (and once before training, ``train_exp = -1``, the
random-init reference for forward transfer) the model is evaluated on every test
experience and one row per sample is stored (schema :data:`clsuite.image.schemas.RECORDS`).
Benchmarks with variants add rows for each corrupted set (``eval_set`` =
``c/<corruption>/<severity>``) and the OOD set (``ood``: ``y_true`` = ``eval_exp`` = −1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from clsuite.image.streams import PreparedBenchmark, to_float
from clsuite.image.eval_sets import OOD
from clsuite.core.errors import DataError, RunFolderError
from clsuite.core.io import atomic_path
from clsuite.image.schemas import RECORDS
from clsuite.core.parquet import read_table, write_table


@dataclass(frozen=True)
class RunKey:
    benchmark: str
    method: str
    seed: int
    scenario: str

    @property
    def run_id(self) -> str:
        return f"{self.benchmark}/{self.method}/seed{self.seed}"


@torch.no_grad()
def predict_logits(model: torch.nn.Module, x: np.ndarray, batch_size: int, device: torch.device) -> np.ndarray:
    """Logits (N, K) float32 for uint8 images ``x`` (N, C, H, W), in eval mode, batched."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(x), batch_size):
        if device.type == "cuda":  # uint8 over the bus (4x fewer bytes), converted there; one sync at the end
            xb = torch.from_numpy(np.ascontiguousarray(x[start : start + batch_size])).pin_memory()
            out.append(model(xb.to(device, non_blocking=True).float().div_(255.0)).float())
        else:
            xb = to_float(x[start : start + batch_size]).to(device, non_blocking=True)
            out.append(model(xb).float().cpu())
    model.train(was_training)
    return torch.cat(out).cpu().numpy() if out else np.zeros((0, 0), np.float32)


@dataclass(frozen=True)
class Segment:
    """The logits of one (eval set, eval experience) block: ``logits`` (N, K) float32 with
    ``sample_ids``/``y_true`` (N,) and the classes of the experience (its task-IL mask)."""

    eval_exp: int
    eval_set: str
    sample_ids: np.ndarray
    y_true: np.ndarray
    logits: np.ndarray
    task_classes: list[int]


def records_from_segments(key: RunKey, train_exp: int, segments: list[Segment]) -> pd.DataFrame:
    """Rows of every segment, in order: class-IL and task-IL predictions, MSP, energy, logits.

    One frame built from concatenated arrays (the per-segment frames that ``pd.concat``
    joined took 1-2 s per evaluation point of a benchmark with 45 corrupted sets); every
    value is computed row by row, so the rows equal those of one segment at a time."""
    n_classes = max((s.logits.shape[1] for s in segments), default=0)
    logits = (np.concatenate([s.logits.astype(np.float32, copy=False) for s in segments])
              if segments else np.zeros((0, n_classes), np.float32))
    mask = np.zeros(logits.shape, dtype=bool)  # (N, K): True on the classes of each row's task
    start = 0
    for s in segments:
        mask[start : start + len(s.logits), s.task_classes] = True
        start += len(s.logits)
    t = torch.from_numpy(logits)
    masked = t.masked_fill(~torch.from_numpy(mask), float("-inf"))
    size = [len(s.logits) for s in segments]
    df = pd.DataFrame(
        {
            "run_id": key.run_id,
            "benchmark": key.benchmark,
            "method": key.method,
            "seed": np.int64(key.seed),
            "scenario": key.scenario,
            "train_exp": np.int64(train_exp),
            "eval_exp": np.repeat(np.array([s.eval_exp for s in segments], np.int64), size),
            "eval_set": np.repeat(np.array([s.eval_set for s in segments], dtype=object), size),
            "sample_id": np.concatenate([s.sample_ids.astype(np.int64) for s in segments] or [np.zeros(0, np.int64)]),
            "y_true": np.concatenate([s.y_true.astype(np.int64) for s in segments] or [np.zeros(0, np.int64)]),
            "y_pred": t.argmax(1).numpy().astype(np.int64),
            "y_pred_task": masked.argmax(1).numpy().astype(np.int64),
            "confidence": torch.softmax(t, dim=1).max(1).values.numpy().astype(np.float32),
            "energy": torch.logsumexp(t, dim=1).numpy().astype(np.float32),
        }
    )
    logit_cols = pd.DataFrame(logits, columns=[f"logit_{k}" for k in range(logits.shape[1])])
    return pd.concat([df, logit_cols], axis=1)


def records_from_logits(
    key: RunKey, train_exp: int, eval_exp: int, sample_ids: np.ndarray, y_true: np.ndarray,
    logits: np.ndarray, task_classes: list[int], eval_set: str = "clean",
) -> pd.DataFrame:
    """Rows for one (train experience, eval experience): class-IL and task-IL predictions, MSP, energy."""
    return records_from_segments(key, train_exp, [Segment(eval_exp, eval_set, sample_ids, y_true, logits, task_classes)])


def records_after_experience(
    model: torch.nn.Module, prepared: PreparedBenchmark, key: RunKey, train_exp: int,
    batch_size: int, device: torch.device,
) -> pd.DataFrame:
    """Evaluate every test experience: class splits share one pass over the test set; in
    domain-IL each experience is its own pass through that experience's domain transform."""
    segments = []
    experiences = list(zip(prepared.experience_rows("test"), prepared.manifest.experiences))
    shared = None if prepared.manifest.domains else predict_logits(model, prepared.test.x, batch_size, device)
    for eval_exp, (rows, classes) in enumerate(experiences):
        if shared is not None:
            logits = shared[rows]
        else:
            logits = predict_logits(model, prepared.experience_inputs("test", eval_exp, rows), batch_size, device)
        segments.append(Segment(eval_exp, "clean", rows, prepared.test.y[rows], logits, classes))
    if prepared.evaluates_variants(train_exp):
        segments += variant_segments(model, prepared, batch_size, device)
    return records_from_segments(key, train_exp, segments)


def variant_segments(
    model: torch.nn.Module, prepared: PreparedBenchmark, batch_size: int, device: torch.device,
) -> list[Segment]:
    """The segments of every variant set: corrupted sets split by experience like the clean set;
    OOD rows have eval_exp −1, y_true −1 and no task, so ``y_pred_task`` = ``y_pred``."""
    all_classes = list(range(prepared.manifest.n_classes))
    segments = []
    for name, es in prepared.eval_sets.items():
        if not len(es.x):
            continue
        logits = predict_logits(model, es.x, batch_size, device)
        if name == OOD:
            segments.append(Segment(-1, name, es.sample_id, es.y, logits, all_classes))
            continue
        for eval_exp, classes in enumerate(prepared.manifest.experiences):
            rows = np.flatnonzero(es.eval_exp == eval_exp)
            segments.append(Segment(eval_exp, name, es.sample_id[rows], es.y[rows], logits[rows], classes))
    return segments


def records_path(run_dir: Path, train_exp: int) -> Path:
    return run_dir / "records" / f"train_exp_{train_exp}.parquet"


def write_records(df: pd.DataFrame, run_dir: Path, train_exp: int) -> Path:
    path = records_path(run_dir, train_exp)
    write_table(df, path, RECORDS)
    return path


def read_records(run_dir: Path) -> pd.DataFrame:
    """All records of one run (after every experience), validated, sorted by (train_exp, eval_exp, sample_id)."""
    df = read_table(run_dir / "records", RECORDS)
    return df.sort_values(["train_exp", "eval_set", "eval_exp", "sample_id"], kind="stable").reset_index(drop=True)


# -- consistency of a run folder -------------------------------------------------------

EXPERIENCES_FILE = "experiences.parquet"


def rerun_fix(key: RunKey) -> str:
    """How to rebuild one run's folder: ``clsuite train`` starts over when its files are missing or foreign."""
    return (f"rerun `clsuite train --benchmark {key.benchmark} --method {key.method} --seed {key.seed}` (it starts "
            f"the run over) or `dvc repro -f -s train@{key.benchmark}-{key.method}` (its other seeds resume), or delete the run "
            f"folder and rerun `dvc repro`")


def check_finished_files(run_dir: Path, key: RunKey, n_experiences: int) -> None:
    """RunFolderError unless a finished run's folder holds exactly its records files
    ``records/train_exp_<i>.parquet`` (i = -1 … n_experiences-1) and ``experiences.parquet``."""
    expected = [records_path(run_dir, k).name for k in range(-1, n_experiences)]
    missing = [f"records/{name}" for name in expected if not (run_dir / "records" / name).is_file()]
    if not (run_dir / EXPERIENCES_FILE).is_file():
        missing.append(EXPERIENCES_FILE)
    if missing:
        raise RunFolderError(
            f"{run_dir}: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing, but the run is marked "
            f"finished (a finished run of {n_experiences} experiences has records/train_exp_-1.parquet … "
            f"records/train_exp_{n_experiences - 1}.parquet and {EXPERIENCES_FILE}); {rerun_fix(key)}")
    extra = sorted(p.name for p in (run_dir / "records").iterdir()
                   if p.name not in expected and not p.name.startswith((".", "_")))  # as pyarrow reads them
    if extra:
        raise RunFolderError(
            f"{run_dir}: records/{', records/'.join(extra)} should not be there: a run of {n_experiences} "
            f"experiences has records/train_exp_-1.parquet … records/train_exp_{n_experiences - 1}.parquet only; "
            f"{rerun_fix(key)}")


def check_identity(df: pd.DataFrame, path: Path, run_dir: Path, key: RunKey) -> None:
    """RunFolderError unless every row of ``df`` (records or experiences, read from ``path``)
    names this run: its ``run_id``, ``benchmark``, ``method`` and ``seed`` columns (those present)."""
    want = {"run_id": key.run_id, "benchmark": key.benchmark, "method": key.method, "seed": key.seed}
    for column, value in want.items():
        if column not in df.columns:
            continue
        found = sorted({str(v) for v in pd.unique(df[column])} - {str(value)})
        if found:
            raise RunFolderError(
                f"{run_dir}: {path.relative_to(run_dir) if path.is_relative_to(run_dir) else path} holds rows of "
                f"{column} {', '.join(found)}, but this folder is the run {key.run_id} ({column} {value}): the "
                f"folder was copied from another run; {rerun_fix(key)}")


def check_experiences_recorded(records: pd.DataFrame, run_dir: Path, key: RunKey, n_experiences: int) -> None:
    """RunFolderError unless ``records`` hold train_exp -1 … n_experiences-1, each exactly once."""
    trained = sorted(int(k) for k in pd.unique(records["train_exp"]))
    if trained != list(range(-1, n_experiences)):
        raise RunFolderError(f"{run_dir}: the records hold train_exp {trained}, expected -1 … {n_experiences - 1}; "
                             f"{rerun_fix(key)}")


def foreign_reason(run_dir: Path, key: RunKey) -> str | None:
    """Why ``run_dir``'s existing files belong to another run (status.json's ``run_id``, the
    ``run_id``/``seed`` columns of its records files), or None. Cheap: reads two columns.
    Unreadable files are not judged here (they fail, or are rewritten, later)."""
    import pyarrow.parquet as pq

    from clsuite.core.runs import read_status

    try:
        status = read_status(run_dir)
    except RunFolderError:
        status = None
    if status is not None and status.run_id not in (None, key.run_id):
        return f"status.json names run {status.run_id!r}"
    records = run_dir / "records"
    for path in sorted(records.glob("train_exp_*.parquet")) if records.is_dir() else []:
        try:
            cols = pq.read_table(path, columns=["run_id", "seed"]).to_pydict()
        except Exception:  # noqa: BLE001 - unreadable or another schema: judged where it is read
            continue
        ids, seeds = set(cols["run_id"]), set(cols["seed"])
        if ids - {key.run_id} or seeds - {key.seed}:
            return f"records/{path.name} holds rows of run {sorted(map(str, ids))} (seed {sorted(seeds)})"
    return None


# -- penultimate features of the final model (feature-space metrics) ---------------------

FEATURES_FILE = "features.npy"
FEATURE_IDS_FILE = "feature_ids.npy"


@torch.no_grad()
def predict_features(model: torch.nn.Module, x: np.ndarray, batch_size: int, device: torch.device) -> np.ndarray:
    """``model.features`` (N, D) float32 for uint8 images ``x`` (N, C, H, W), eval mode, batched."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(x), batch_size):
        xb = to_float(x[start : start + batch_size]).to(device, non_blocking=True)
        out.append(model.features(xb).flatten(1).float().cpu())
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def final_features(model: torch.nn.Module, prepared: PreparedBenchmark, batch_size: int,
                   device: torch.device) -> tuple[np.ndarray, np.ndarray] | None:
    """(features float32 (N, D), test rows int64 (N,)) of the whole clean test split, or None
    when the model has no ``features``. Domain-IL: inputs through the last experience's domain."""
    if not callable(getattr(model, "features", None)):
        return None
    rows = np.arange(len(prepared.test.y), dtype=np.int64)
    # the memory-mapped split itself when there is no domain transform (no copy of the whole split)
    x = prepared.experience_inputs("test", prepared.n_experiences - 1, rows) if prepared.manifest.domains else prepared.test.x
    return predict_features(model, x, batch_size, device), rows


def write_features(run_dir: Path, features: np.ndarray, ids: np.ndarray) -> None:
    """``features.npy`` (float32 (N, D)) and ``feature_ids.npy`` (int64 (N,)), each atomically."""
    if features.ndim != 2 or ids.shape != (features.shape[0],):
        raise ValueError(f"features must be (N, D) with ids (N,), got {features.shape} and {ids.shape}")
    for name, arr in ((FEATURES_FILE, features.astype(np.float32)), (FEATURE_IDS_FILE, ids.astype(np.int64))):
        with atomic_path(run_dir / name, suffix=".npy") as tmp, open(tmp, "wb") as f:
            np.save(f, arr)


def read_features(run_dir: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(features (N, D) float32, test rows (N,) int64) written by the train stage, or None if absent.

    A truncated, garbled or mismatched pair raises DataError naming the file (never pickles)."""
    fpath, ipath = run_dir / FEATURES_FILE, run_dir / FEATURE_IDS_FILE
    if not fpath.exists() or not ipath.exists():
        return None
    fix = "rerun the train stage for this run (`clsuite train ...`, or delete the run folder and `dvc repro`)"
    arrays = []
    for path in (fpath, ipath):
        try:
            arrays.append(np.load(path, allow_pickle=False))
        except Exception as exc:  # truncated (ValueError/EOFError), garbled header, object array, ...
            raise DataError(f"{path}: not a readable .npy array ({exc}); {fix}") from None
    feats, ids = arrays
    if (feats.ndim != 2 or not np.issubdtype(feats.dtype, np.floating) or ids.shape != (feats.shape[0],)
            or not np.issubdtype(ids.dtype, np.integer) or not np.isfinite(feats).all()):
        raise DataError(f"{fpath}: expected finite float (N, D) features with (N,) integer ids in {ipath.name}, got "
                        f"{feats.dtype} {feats.shape} and {ids.dtype} {ids.shape}; {fix}")
    if len(ids) and (ids.min() < 0 or len(np.unique(ids)) != len(ids)):
        raise DataError(f"{ipath}: test rows must be distinct and non-negative; {fix}")
    return feats.astype(np.float32, copy=False), ids.astype(np.int64, copy=False)
