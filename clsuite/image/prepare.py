"""prepare: a source's images → a deterministic train/test split and experience layout.

Output folder ``data/prepared/<benchmark>/`` (format version 2, documented in
docs/data-format.md):

- ``{train,test}_x.npy``: uint8 (N, C, H, W), memory-mappable;
- ``{train,test}_y.npy``: int64 (N,) class labels (source labels, renumbered when
  classes are held out as OOD);
- ``{train,test}_src.npy``: int64 (N,) row of each sample in the source (provenance);
- variants (``variants:`` in params, :mod:`clsuite.data.variants`): ``c_*.npy``
  (corrupted copies of test images), ``ood_*.npy`` (out-of-distribution images); a
  long-tailed train split replaces ``train_*.npy``;
- ``manifest.json``: classes, class order, classes of each experience, counts, what the
  variants hold, the sha256 of every array file and what the folder was built from (the
  benchmark's prepare params, the code fingerprint of the prepare path, the raw inputs).

A sample's id in the prediction records is its row in ``{split}_x.npy``.

An existing folder built from the same inputs is kept as it is (:func:`reuse_check`), so
that ``dvc repro`` after editing one benchmark of the catalogue rebuilds only that one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from clsuite.image.config import BenchmarkConfig, VariantsConfig
from clsuite.image.domains import domain_specs
from clsuite.image.integrity import check_arrays, check_manifest, prepare_params
from clsuite.image.manifest import Manifest
from clsuite.data.sources import SOURCES, LabeledImages, Source, benchmark_source
from clsuite.data.variants.build import build_variants
from clsuite.data.variants.long_tail import subsample_long_tail
from clsuite.data.variants.ood import ClassMap
from clsuite.core.code_fingerprint import code_fingerprint, modules_of
from clsuite.core.errors import DataError, ParamsError
from clsuite.core.io import replace_dir, sha256_file, temp_dir_beside, write_json
from clsuite.core.paths import under

FORMAT_VERSION = 2  # 2: variant arrays (corrupted, OOD, long-tailed) and labels renumbered after holdout
SPLITS = ("train", "test")
ARRAYS = ("x", "y", "src")
CHUNK_BYTES = 256 << 20  # images decoded and written per step when streaming (bounded memory)
#: libraries whose version enters the prepare code fingerprint (split, decoding, arrays)
PREPARE_LIBRARIES = ("numpy", "scikit-learn", "pillow")
#: raw files up to this size enter the raw fingerprint by content, larger ones by name and size
#: (every large raw file is a download that its source verifies against a checksum pinned in its
#: module, which the code fingerprint covers)
RAW_CONTENT_BYTES = 16 << 20

log = logging.getLogger(__name__)


def write_rows(path: Path, images, rows: np.ndarray, chunk_bytes: int = CHUNK_BYTES) -> None:
    """Write ``images[rows]`` (uint8 (len(rows), C, H, W)) to the ``.npy`` file ``path``
    through ``np.lib.format.open_memmap``, ``chunk_bytes`` of images at a time.

    ``images``: an array or :class:`~clsuite.data.sources.LazyImages` (then only one chunk
    of decoded images is in memory at once). The file is byte-identical to
    ``np.save(path, images[rows])``.
    """
    shape = (len(rows), *(int(s) for s in images.shape[1:]))
    per_image = max(1, math.prod(shape[1:]))
    step = max(1, chunk_bytes // per_image)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    try:
        for i in range(0, len(rows), step):
            out[i : i + step] = images[rows[i : i + step]]
        out.flush()
    finally:
        del out


def class_layout(cfg: BenchmarkConfig, n_classes: int, where: str) -> tuple[list[int], list[list[int]]]:
    """Class order and the classes of each experience (equal-sized consecutive groups)."""
    order = list(cfg.class_order) if cfg.class_order is not None else list(range(n_classes))
    if sorted(order) != list(range(n_classes)):
        raise ParamsError(
            f"{where}.class_order: must be a permutation of 0..{n_classes - 1} "
            f"(the source has {n_classes} classes), got {order}"
        )
    if cfg.scenario == "domain_il":  # every experience holds every class (in its own domain)
        return order, [list(order) for _ in range(cfg.n_experiences)]
    if n_classes % cfg.n_experiences:
        raise ParamsError(
            f"{where}.n_experiences: {n_classes} classes cannot be split into {cfg.n_experiences} "
            f"equal experiences; choose a divisor of {n_classes}"
        )
    per = n_classes // cfg.n_experiences
    return order, [order[i : i + per] for i in range(0, n_classes, per)]


def split_indices(data: LabeledImages, cfg: BenchmarkConfig) -> tuple[np.ndarray, np.ndarray]:
    """Train/test source rows (sorted), seeded by ``split_seed``.

    Without an official split (``data.split`` is None): stratified split with
    ``test_fraction``, after optionally keeping ``subsample_per_class`` images per class.
    With one: its train and test rows; ``subsample_per_class`` S then keeps, per class,
    S − ceil(S · test_fraction) training rows and ceil(S · test_fraction) test rows (the
    per-class counts of the stratified case), drawn from the official sides, or all rows
    of a side that has fewer.
    """
    if data.split is not None:
        return _official_split_indices(data, cfg)
    rng = np.random.default_rng(cfg.split_seed)
    idx = np.arange(len(data.labels))
    if cfg.subsample_per_class is not None:
        keep = []
        for c in np.unique(data.labels):
            members = idx[data.labels == c]
            take = min(cfg.subsample_per_class, len(members))
            keep.append(np.sort(rng.choice(members, size=take, replace=False)))
        idx = np.concatenate(keep)
    train, test = train_test_split(
        idx, test_size=cfg.test_fraction, stratify=data.labels[idx], random_state=cfg.split_seed
    )
    return np.sort(train), np.sort(test)


def _official_split_indices(data: LabeledImages, cfg: BenchmarkConfig) -> tuple[np.ndarray, np.ndarray]:
    sides = {side: np.flatnonzero(data.split == side) for side in SPLITS}
    if cfg.subsample_per_class is None:
        return sides["train"], sides["test"]
    rng = np.random.default_rng(cfg.split_seed)
    n_test = math.ceil(cfg.subsample_per_class * cfg.test_fraction)
    quota = {"train": cfg.subsample_per_class - n_test, "test": n_test}
    out = {}
    for side in SPLITS:
        keep = []
        for c in np.unique(data.labels):
            members = sides[side][data.labels[sides[side]] == c]
            keep.append(rng.choice(members, size=min(quota[side], len(members)), replace=False))
        out[side] = np.sort(np.concatenate(keep)).astype(np.int64)
    return out["train"], out["test"]


def load_source(source, raw_dir: Path, stream: bool | None) -> LabeledImages:
    """The source's images: streamed (:class:`LazyImages`) when it can and ``stream`` is not
    False, else in memory; ``stream=True`` on a source that cannot stream is an error."""
    data = source.load_lazy(raw_dir) if stream is not False else None
    if data is None:
        if stream:
            raise ParamsError(f"source {source.name!r} cannot stream (it has no load_lazy); prepare it in memory")
        data = source.load(raw_dir)
    return data


def input_sources(name: str, cfg: BenchmarkConfig) -> list[Source]:
    """The sources prepare reads for ``benchmarks.<name>``: its own (with its options), the
    OOD source (``variants.ood.source``) and the official corrupted copies
    (``variants.corruptions.source``)."""
    sources = [benchmark_source(name, cfg)]
    variants = cfg.variants
    if variants is not None:
        others = (variants.ood.source if variants.ood else None,
                  variants.corruptions.source if variants.corruptions else None)
        sources += [SOURCES.get(other) for other in others if other is not None]
    return sources


def raw_fingerprint(sources: list[Source], raw_root: Path) -> dict[str, str]:
    """{source: sha256 over its raw folder}: each file's path, size and, up to
    :data:`RAW_CONTENT_BYTES`, its content (modification times are left out, so a re-fetch of
    the same files keeps it). A missing folder hashes as empty."""
    out = {}
    for source in sources:
        folder = source.raw_dir(raw_root)
        files = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
        h = hashlib.sha256()
        for path in files:
            size = path.stat().st_size
            content = sha256_file(path) if size <= RAW_CONTENT_BYTES else "-"
            h.update(f"{path.relative_to(folder).as_posix()}\0{size}\0{content}\n".encode())
        out[source.name] = h.hexdigest()
    return out


def prepare_code(sources: list[Source]) -> dict[str, Any]:
    """:func:`clsuite.core.code_fingerprint.code_fingerprint` of the prepare path
    (``clsuite.image.prepare``'s import closure) and the modules of ``sources``."""
    return code_fingerprint("clsuite.image.prepare", modules_of(*sources), PREPARE_LIBRARIES)


def reuse_check(folder: Path, name: str, cfg: BenchmarkConfig, code: dict[str, Any], raw: dict[str, str]
                ) -> tuple[Manifest | None, str]:
    """(manifest, "") when the prepared ``folder`` was built from the same inputs: a current,
    consistent manifest (:func:`read_manifest`) for benchmark ``name`` whose ``params``
    equal :func:`~clsuite.image.integrity.prepare_params` of ``cfg``, whose ``code`` and
    ``raw_sha256`` equal ``code`` and ``raw``, and whose arrays all match their sha256
    (:func:`~clsuite.image.integrity.check_arrays`); else (None, why not). Cheapest checks first."""
    if not (folder / "manifest.json").is_file():
        return None, "no manifest.json"
    try:
        m = read_manifest(folder)
    except DataError as exc:
        return None, str(exc)
    differ = [what for what, old, new in (
        ("benchmark name", m.benchmark, name), ("prepare params", m.params, prepare_params(cfg)),
        ("code fingerprint", m.code, code), ("raw inputs", m.raw_sha256, raw)) if old != new]
    if differ:
        return None, f"{', '.join(differ)} changed (or not recorded)"
    try:
        check_arrays(m, folder)
    except DataError as exc:
        return None, str(exc)
    return m, ""


def prepare_benchmark(name: str, cfg: BenchmarkConfig, raw_root: Path, out_root: Path, *,
                      stream: bool | None = None, chunk_bytes: int = CHUNK_BYTES, force: bool = False,
                      corruption_cache: Path | None = None, workers: int | None = None) -> Manifest:
    """Write ``out_root/<name>/`` atomically (built in a temp folder, then swapped in), unless
    it exists and was built from the same inputs (:func:`reuse_check`): then nothing is
    rewritten ("up to date" in the log). ``force``: rebuild anyway.

    ``stream``: None (default) streams the images of sources that offer ``load_lazy``
    (ImageNet-100, CORe50): decoded and written ``chunk_bytes`` at a time, never all in
    memory; False loads every image first; True requires streaming. Both give the same bytes.

    ``corruption_cache``: folder of the corrupted-block cache shared by all benchmarks
    (:mod:`clsuite.data.variants.corruption_cache`; None: no cache); ``workers``: processes that
    corrupt test images (None: ``$CLSUITE_PREPARE_WORKERS`` or the usable CPUs). Neither
    changes a byte of the folder.
    """
    sources = input_sources(name, cfg)
    source = sources[0]
    code, raw = prepare_code(sources), raw_fingerprint(sources, raw_root)
    dest = under(out_root, name)
    if not force and dest.exists():
        reused, why = reuse_check(dest, name, cfg, code, raw)
        if reused is not None:
            log.info("%s: up to date (same prepare params, code and raw inputs; arrays match manifest.json), "
                     "nothing rewritten", dest)
            return reused
        log.info("%s: rebuilding: %s", dest, why)
    data = load_source(source, source.raw_dir(raw_root), stream)
    variants, where = cfg.variants or VariantsConfig(), f"benchmarks.{name}.variants"
    classes = ClassMap.build(len(data.class_names), variants.ood, f"{where}.ood")  # identity unless holdout
    n_classes = classes.n_classes
    order, experiences = class_layout(cfg, n_classes, f"benchmarks.{name}")
    try:
        train_idx, test_idx = split_indices(data, cfg)
    except ValueError as exc:  # sklearn: a class too small for a stratified split
        raise ParamsError(
            f"benchmarks.{name}.test_fraction / subsample_per_class: cannot split ({exc}); every class needs "
            f"samples on both sides: raise subsample_per_class or bring test_fraction closer to 0.5"
        ) from None
    train_idx, test_idx, held_idx = classes.drop_held_out(data.labels, train_idx, test_idx)
    long_tail = None
    if variants.long_tail is not None:
        train_idx, long_tail = subsample_long_tail(
            train_idx, classes.labels(data.labels[train_idx]), order, variants.long_tail, f"{where}.long_tail")
    tmp = temp_dir_beside(dest)
    try:
        extra, variants_info = build_variants(
            variants, where, source=cfg.source, images=data.images, test_rows=test_idx,
            test_y=classes.labels(data.labels[test_idx]), held_rows=held_idx, classes=classes, long_tail=long_tail,
            raw_root=raw_root, class_names=data.class_names, meta=data.meta, out_dir=tmp,
            corruption_cache=corruption_cache, workers=workers)
        sha = {}
        for split, rows in zip(SPLITS, (train_idx, test_idx)):
            write_rows(tmp / f"{split}_x.npy", data.images, rows, chunk_bytes)
            sha[f"{split}_x.npy"] = sha256_file(tmp / f"{split}_x.npy")
            arrays = {"y": classes.labels(data.labels[rows]), "src": rows.astype(np.int64)}
            for key, arr in arrays.items():
                fname = f"{split}_{key}.npy"
                np.save(tmp / fname, np.ascontiguousarray(arr))
                sha[fname] = sha256_file(tmp / fname)
        counts = {}
        for key, arr in extra.items():
            path = tmp / f"{key}.npy"
            if isinstance(arr, Path):  # written there chunk by chunk by build_variants
                if arr != path:
                    raise DataError(f"variant array {key} was written to {arr}, expected {path}")
            else:
                np.save(path, np.ascontiguousarray(arr))
            sha[path.name] = sha256_file(path)
            if key.endswith("_x"):
                counts[key[: -len("_x")]] = len(np.load(path, mmap_mode="r", allow_pickle=False))
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            benchmark=name,
            source=cfg.source,
            scenario=cfg.scenario,
            n_classes=n_classes,
            class_names=[data.class_names[c] for c in classes.kept],
            class_order=order,
            experiences=experiences,
            input_shape=tuple(int(s) for s in data.images.shape[1:]),
            counts={"train": len(train_idx), "test": len(test_idx), **counts},
            split_seed=cfg.split_seed,
            test_fraction=cfg.test_fraction,
            subsample_per_class=cfg.subsample_per_class,
            variants=variants_info if cfg.variants is not None else None,
            sha256=sha,
            domains=domain_specs(cfg.domain.kind, cfg.n_experiences, cfg.domain.seed, cfg.domain.max_degrees)
            if cfg.domain is not None else [],
            split="stratified" if data.split is None else "official",
            params=prepare_params(cfg),
            code=code,
            raw_sha256=raw,
        )
        write_json(tmp / "manifest.json", manifest.model_dump(mode="json"))
        replace_dir(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return manifest


def read_manifest(folder: Path) -> Manifest:
    path = folder / "manifest.json"
    if not path.exists():
        raise DataError(f"{path}: missing; run `clsuite prepare --benchmark {folder.name}` (or `dvc repro`)")
    try:
        version = json.loads(path.read_text()).get("format_version")
    except (ValueError, AttributeError, OSError):
        version = None
    if isinstance(version, int) and version != FORMAT_VERSION:
        raise DataError(f"{path}: prepared with format version {version}, this clsuite reads version "
                        f"{FORMAT_VERSION}; rerun `clsuite prepare --benchmark {folder.name}` (or `dvc repro`)")
    try:
        manifest = Manifest.model_validate_json(path.read_text())
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: not a valid manifest ({exc}); rerun `clsuite prepare --benchmark {folder.name}`") from None
    check_manifest(manifest, path, format_version=FORMAT_VERSION, arrays=[f"{s}_{a}.npy" for s in SPLITS for a in ARRAYS])
    return manifest
