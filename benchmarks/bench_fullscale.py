"""Full-scale training in bounded memory, and the GPU check (issue #20).

A generated ImageNet-100-shaped tree (``<root>/{train,val}/<wnid>/*.JPEG`` for the 100
``sorted_first100`` synsets, smooth random images) is fetched and prepared by the real
``imagenet100`` source (decode, resize, centre crop to ``--size`` px), then:

``--memory`` (CPU, minutes): peak host RSS (``ru_maxrss`` of a fresh child process) of

- ``old_stream``: the stream as the train stage built it before issue #20 (every experience
  of train and test converted to float32 tensors up front, ``tensors_benchmark``);
- ``train_in_memory``: ``train_run`` of the benchmark's first experience, default settings
  (that experience fits ``run.in_memory_mb``: converted once);
- ``train_streamed``: the same with ``run.in_memory_mb: 0`` (every batch read from the
  memory-mapped uint8 arrays by a DataLoader with ``run.loader_workers`` workers).

``--gpu`` (CUDA, a few minutes): ResNet-18 at ``--size`` px on the prepared uint8 arrays,
with the same AMP (bf16 where supported) and channels_last settings on both sides:

- ``bare``: a hand-written torchvision loop (DataLoader over the memory-mapped rows with
  workers and pinned memory, conversion on the device, SGD);
- ``clsuite``: ``train_run`` of the first experience of the imagenet100 stream (finetune),
  i.e. the trainer's streamed path, evaluation excluded from the throughput;

reporting images/s of each, their ratio and the peak GPU memory. ``--quick`` shrinks
everything (2 images per class at 32 px, 1 epoch) so the tests run it on CPU
(tests/image/test_bench_fullscale.py).

    python benchmarks/bench_fullscale.py --memory [--per-class 100 --size 224]
    python benchmarks/bench_fullscale.py --gpu [--per-class 100 --size 224 --epochs 1]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402

BENCH = "imagenet100"


def make_tree(root: Path, per_class: int, val_per_class: int, size: int, seed: int = 0) -> Path:
    """``root/{train,val}/<wnid>/*.JPEG``: smooth random RGB images (an 8x8 random grid upscaled
    bilinearly to ``size`` + 32 px, so that prepare resizes and crops as for ImageNet)."""
    from importlib import resources

    from PIL import Image

    wnids = resources.files("clsuite.data.sources").joinpath("imagenet100_lists", "classes_sorted_first100.txt").read_text().split()
    rng = np.random.default_rng(seed)
    side = size + 32
    for part, n in (("train", per_class), ("val", val_per_class)):
        for label, w in enumerate(wnids):
            folder = root / part / w
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                path = folder / f"{w}_{part}_{i}.JPEG"
                if path.exists():
                    continue
                grid = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                grid[..., label % 3] = (grid[..., label % 3] // 2 + 128)
                buf = io.BytesIO()
                Image.fromarray(grid).resize((side, side), Image.BILINEAR).save(buf, format="JPEG", quality=90)
                path.write_bytes(buf.getvalue())
    return root


def bench_params(tree: Path, size: int, epochs: int, batch: int, **run):
    """params.yaml with benchmark imagenet100 pointed at ``tree`` (no variants, ``size`` px,
    ``epochs`` per experience) and ``run`` overrides."""
    from clsuite.config import load_params
    from clsuite.image.config import BenchmarkConfig

    params = load_params(common.REPO / "params.yaml")
    raw = params.benchmark(BENCH).model_dump()
    raw.update(variants=None, source_options={"root": str(tree), "size": size})
    raw["train"].update(epochs=epochs, epochs_first=None, batch_size=batch, eval_batch_size=max(batch, 64))
    bench = BenchmarkConfig.model_validate(raw)
    return params.model_copy(update={"benchmarks": {**params.benchmarks, BENCH: bench},
                                     "run": params.run.model_copy(update={"threads": None, **run})})


def prepare(tree: Path, data: Path, size: int) -> Path:
    """Fetch + prepare the generated tree with the real source; returns the prepared root."""
    from clsuite.data.sources import benchmark_source
    from clsuite.image.prepare import prepare_benchmark

    params = bench_params(tree, size, 1, 32)
    bench = params.benchmark(BENCH)
    if not (data / "prepared" / BENCH / "manifest.json").exists():
        benchmark_source(BENCH, bench).fetch(data / "raw" / bench.source)
        prepare_benchmark(BENCH, bench, data / "raw", data / "prepared")
    return data / "prepared"


# -- one measurement per fresh child process (ru_maxrss is a high-water mark) -----------------------------------


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_old_stream(tree: Path, prepared: Path, size: int) -> dict:
    """The stream as built before issue #20: every experience converted to float32 up front."""
    import torch
    from avalanche.benchmarks import tensors_benchmark

    from clsuite.image.streams import load_prepared, to_float

    p = load_prepared(prepared / BENCH)
    t0 = time.perf_counter()
    streams = {s: [(to_float(p.experience_inputs(s, k, rows)), torch.from_numpy((p.train if s == "train" else p.test).y[rows]))
                   for k, rows in enumerate(p.experience_rows(s))] for s in ("train", "test")}
    tensors_benchmark(train_tensors=streams["train"], test_tensors=streams["test"], task_labels=[0] * p.n_experiences)
    return {"seconds": time.perf_counter() - t0, "peak_rss_mb": _peak_rss_mb()}


class _StopAfterFirst(Exception):
    pass


def child_train(tree: Path, prepared: Path, size: int, epochs: int, batch: int, device: str,
                in_memory_mb: int, workers: int, method: str = "finetune") -> dict:
    """``train_run`` of the first experience (stopped after its records), timed from the log."""
    import shutil

    import torch

    from clsuite.image.train import train_run

    params = bench_params(tree, size, epochs, batch, device=device, in_memory_mb=in_memory_mb, loader_workers=workers)
    runs = prepared.parent / f"runs-{os.getpid()}"

    def stop(strategy, stream, k):
        raise _StopAfterFirst

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    try:
        train_run(params.image(), BENCH, method, 0, prepared, runs, on_experience=stop)
    except _StopAfterFirst:
        pass
    log = next(runs.rglob("log.txt")).read_text()
    line = next(x for x in log.splitlines() if "experience 1/10: train" in x)
    train_s = float(line.split("train ")[1].split("s")[0])
    n = int(line.split("(")[1].split(" samples")[0])
    out = {"train_seconds": train_s, "images": n, "images_per_second": n / train_s, "peak_rss_mb": _peak_rss_mb(),
           "streamed": "streamed from the prepared arrays" in log}
    if device.startswith("cuda"):
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    shutil.rmtree(runs, ignore_errors=True)
    return out


def child_bare(tree: Path, prepared: Path, size: int, epochs: int, batch: int, device: str, workers: int) -> dict:
    """A hand-written torchvision loop over the first experience's rows, same AMP/channels_last."""
    import torch
    import torchvision
    from torch.utils.data import DataLoader, Dataset

    from clsuite.image.streams import load_prepared
    from clsuite.image.trainer import resolve_amp

    p = load_prepared(prepared / BENCH)
    rows = p.experience_rows("train")[0]
    x_all, y_all = p.train.x, p.train.y
    dev = torch.device(device)

    class Batches(Dataset):
        def __init__(self, order):
            self.batches = [order[i : i + batch] for i in range(0, len(order), batch)]

        def __len__(self):
            return len(self.batches)

        def __getitem__(self, b):
            r = rows[self.batches[b]]
            return torch.from_numpy(np.ascontiguousarray(x_all[r])), torch.from_numpy(y_all[r])

    model = torchvision.models.resnet18(num_classes=p.manifest.n_classes).to(dev)
    amp_dtype, use_scaler = resolve_amp("auto", dev)
    cl = dev.type == "cuda"
    if cl:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
    scaler = torch.amp.GradScaler(dev.type) if use_scaler else None
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    n = 0
    for _ in range(epochs):
        order = torch.randperm(len(rows), generator=gen).numpy()
        loader = DataLoader(Batches(order), batch_size=None, num_workers=workers, pin_memory=dev.type == "cuda")
        for xb, yb in loader:
            xb = xb.to(dev, non_blocking=True).float().div_(255.0)
            if cl:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yb = yb.to(dev, non_blocking=True)
            opt.zero_grad()
            with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = torch.nn.functional.cross_entropy(model(xb).float(), yb)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            n += len(yb)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    s = time.perf_counter() - t0
    out = {"train_seconds": s, "images": n, "images_per_second": n / s, "peak_rss_mb": _peak_rss_mb()}
    if dev.type == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


CHILDREN = {"old_stream": child_old_stream, "train": child_train, "bare": child_bare}


def in_child(kind: str, **kwargs) -> dict:
    """Run ``CHILDREN[kind](**kwargs)`` in a fresh interpreter; returns its JSON result."""
    args = json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in kwargs.items()})
    code = (f"import json, sys; sys.path.insert(0, {str(HERE)!r}); from pathlib import Path; import bench_fullscale as b; "
            f"a = json.loads({args!r}); a = {{k: Path(v) if k in ('tree', 'prepared') else v for k, v in a.items()}}; "
            f"print('RESULT', json.dumps(b.CHILDREN[{kind!r}](**a)))")
    env = {**os.environ, "PYTHONPATH": f"{common.REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "CLSUITE_WARM": "0"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=common.REPO)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return json.loads(next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))[7:])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--memory", action="store_true", help="peak host RSS: old stream vs train_run (CPU)")
    ap.add_argument("--gpu", action="store_true", help="throughput vs a bare loop and peak GPU memory (CUDA)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (tests): 2 images per class at 32 px")
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--val-per-class", type=int, default=10)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--device", default=None, help="default: cuda for --gpu, else cpu")
    ap.add_argument("--data", type=Path, default=None, help="keep the tree and prepared data here (default: temporary)")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args(argv)
    if a.quick:
        a.per_class, a.val_per_class, a.size, a.batch, a.workers = 2, 1, 32, 8, 1
    if not (a.memory or a.gpu):
        ap.error("give --memory and/or --gpu")
    device = a.device or ("cuda" if a.gpu else "cpu")
    result: dict = {"machine": common.machine(), "per_class": a.per_class, "size": a.size, "epochs": a.epochs,
                    "batch": a.batch, "workers": a.workers, "device": device}
    with common.workdir() as tmp:
        data = a.data or tmp
        t0 = time.perf_counter()
        tree = make_tree(data / "tree", a.per_class, a.val_per_class, a.size)
        prepared = prepare(tree, data, a.size)
        result["prepare_seconds"] = time.perf_counter() - t0
        files = sorted((prepared / BENCH).glob("*_x.npy"))
        result["prepared_uint8_mb"] = sum(f.stat().st_size for f in files) / 2**20
        result["float32_stream_mb"] = 4 * result["prepared_uint8_mb"]
        common_kw = {"tree": tree, "prepared": prepared, "size": a.size}
        if a.memory:
            result["old_stream"] = in_child("old_stream", **common_kw)
            for name, mb in (("train_in_memory", 1024), ("train_streamed", 0)):
                result[name] = in_child("train", **common_kw, epochs=a.epochs, batch=a.batch, device=device,
                                        in_memory_mb=mb, workers=a.workers)
        if a.gpu:
            result["bare"] = in_child("bare", **common_kw, epochs=a.epochs, batch=a.batch, device=device, workers=a.workers)
            result["clsuite"] = in_child("train", **common_kw, epochs=a.epochs, batch=a.batch, device=device,
                                         in_memory_mb=0, workers=a.workers)
            result["clsuite_over_bare_time_per_image"] = (result["bare"]["images_per_second"]
                                                          / result["clsuite"]["images_per_second"])
    print(json.dumps(result, indent=2))
    if not a.no_write and not a.quick:
        common.write_result("fullscale_gpu" if a.gpu else "fullscale_memory", result)
    return result


if __name__ == "__main__":
    main()
