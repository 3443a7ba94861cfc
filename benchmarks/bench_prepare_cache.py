"""The `prepare` cache (memory-mapped uint8 .npy) vs decoding image files every epoch.

The smnist training split (4000 digits, 1x28x28) is written once to a temporary folder
as PNG files (lossless) and as JPEG files (quality 95, lossy; the usual format of
image folders), from the very arrays `clsuite prepare` wrote. Each contender then
delivers one epoch: every image as float32 in [0, 1], in a shuffled order, in batches
of 10, i.e. the input of a training epoch without the model:

- ``prepare_cache``: what the trainer does: open the .npy memory-mapped, convert the
  experience rows to float once, gather each batch from the tensor;
- ``png_pil`` / ``jpeg_pil``: open + decode every file of the batch with PIL, stack,
  convert (an ImageFolder-style dataset with num_workers=0).

The files are small and stay in the OS page cache, so this measures decoding and
per-sample overhead, not disk reads (which would favour the cache further).

    python benchmarks/bench_prepare_cache.py [--reps 5]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import common
import numpy as np
import torch
from PIL import Image

from clsuite.image.streams import load_prepared, to_float

BATCH = 10


def write_images(x: np.ndarray, folder: Path, fmt: str) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    for i, img in enumerate(x):
        p = folder / f"{i:05d}.{fmt}"
        Image.fromarray(img[0]).save(p, **({"quality": 95} if fmt == "jpg" else {}))
        paths.append(p)
    return paths


def epoch_from_cache(folder: Path, experiences: list[np.ndarray], seed: int) -> float:
    x = np.load(folder / "train_x.npy", mmap_mode="r", allow_pickle=False)
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    for rows in experiences:
        xt = to_float(x[rows])
        for idx in torch.randperm(len(rows), generator=g).split(BATCH):
            total += float(xt.index_select(0, idx)[0, 0, 0, 0])
    return total


def epoch_from_files(paths: list[Path], experiences: list[np.ndarray], seed: int) -> float:
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    for rows in experiences:
        for idx in torch.randperm(len(rows), generator=g).split(BATCH):
            imgs = [np.asarray(Image.open(paths[r]).convert("L"))[None] for r in rows[idx.numpy()]]
            xb = to_float(np.stack(imgs))
            total += float(xb[0, 0, 0, 0])
    return total


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    common.pin_threads(args.threads)
    params = common.smnist_params()
    with common.workdir() as tmp:
        folder = common.prepare_smnist(tmp, params) / "smnist"
        prepared = load_prepared(folder)
        x = np.asarray(prepared.train.x)
        experiences = prepared.experience_rows("train")
        png, jpg = write_images(x, tmp / "png", "png"), write_images(x, tmp / "jpg", "jpg")
        png_equal = all(np.array_equal(np.asarray(Image.open(p))[None], x[i]) for i, p in enumerate(png))
        sizes = {"prepare_cache": (folder / "train_x.npy").stat().st_size,
                 "png_pil": sum(p.stat().st_size for p in png), "jpeg_pil": sum(p.stat().st_size for p in jpg)}
        seeds = iter(range(10**6))
        contenders = {
            "prepare_cache": lambda: (epoch_from_cache(folder, experiences, next(seeds)), None)[1],
            "png_pil": lambda: (epoch_from_files(png, experiences, next(seeds)), None)[1],
            "jpeg_pil": lambda: (epoch_from_files(jpg, experiences, next(seeds)), None)[1],
        }
        before = common.machine()
        times = common.interleaved(contenders, args.reps)
    summary = common.summarise(times, baseline="prepare_cache")
    result = {
        "benchmark": "prepare_cache",
        "what": "one epoch of float32 inputs (smnist train split, 4000 x 1x28x28, shuffled, batches of 10): "
                "memory-mapped uint8 cache vs PIL-decoding PNG / JPEG files every epoch; ratios are other / cache",
        "reps": args.reps, "n_images": int(len(x)), "bytes_on_disk": sizes, "png_decodes_to_cache_bytes": png_equal,
        "machine_before": before, "machine_after": common.machine(), **summary,
    }
    common.print_ratios("prepare cache vs decoding image files per epoch (ratio = other / cache)", summary)
    print(f"  bytes on disk: {sizes}; PNG decodes to the cached bytes: {png_equal}")
    if not args.no_write:
        print("  wrote", common.write_result("prepare_cache", result))
    return result


if __name__ == "__main__":
    main()
