"""Bounded-memory training input (clsuite/image/trainer.py StreamedRows, clsuite/image/streams.py
PreparedRows): streaming the memory-mapped uint8 arrays, with or without loader workers, gives
the records of the in-memory path, also with augmentation and on a domain-IL stream."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from clsuite.image.config import BenchmarkConfig, TrainConfig
from clsuite.image.prepare import prepare_benchmark
from clsuite.image.records import read_records
from clsuite.image.streams import PreparedRows, load_prepared, make_avalanche_benchmark, to_float
from clsuite.image.train import train_run


def _with(params, benchmark: str, bench: BenchmarkConfig | None = None, **run):
    bench = bench or params.benchmark(benchmark)
    return params.model_copy(update={"benchmarks": {**params.benchmarks, benchmark: bench},
                                     "run": params.run.model_copy(update=run)})


def _augmented(params, benchmark: str = "smnist_smoke") -> BenchmarkConfig:
    bench = params.benchmark(benchmark)
    train = TrainConfig.model_validate({**bench.train.model_dump(), "epochs": 2,
                                        "augment": {"random_crop": {"padding": 2}, "hflip": True}})
    return bench.model_copy(update={"train": train})


@pytest.mark.parametrize("method", ["replay", "der"])
def test_streamed_input_gives_the_in_memory_records(params, data_roots, tmp_path, method):
    _, prepared = data_roots
    bench = _augmented(params)
    ref = read_records(train_run(_with(params, "smnist_smoke", bench), "smnist_smoke", method, 0, prepared,
                                 tmp_path / "mem"))
    for workers in (0, 2):
        run_dir = train_run(_with(params, "smnist_smoke", bench, in_memory_mb=0, loader_workers=workers),
                            "smnist_smoke", method, 0, prepared, tmp_path / f"stream{workers}")
        assert "streamed from the prepared arrays" in (run_dir / "log.txt").read_text()
        pd.testing.assert_frame_equal(read_records(run_dir), ref, check_exact=True)


def test_streamed_domain_il_gives_the_in_memory_records(params, data_roots, tmp_path):
    raw, _ = data_roots
    base = params.benchmark("pmnist").model_dump()
    base.update(subsample_per_class=20, test_fraction=0.25)
    cfg = BenchmarkConfig.model_validate(base)
    prepare_benchmark("pmnist", cfg, raw, tmp_path / "prep")
    ref = read_records(train_run(_with(params, "pmnist", cfg), "pmnist", "replay", 0, tmp_path / "prep", tmp_path / "a"))
    run_dir = train_run(_with(params, "pmnist", cfg, in_memory_mb=0, loader_workers=1), "pmnist", "replay", 0,
                        tmp_path / "prep", tmp_path / "b")
    pd.testing.assert_frame_equal(read_records(run_dir), ref, check_exact=True)


def test_stream_datasets_read_rows_lazily_and_equal_the_converted_rows(data_roots):
    _, prepared_root = data_roots
    prepared = load_prepared(prepared_root / "smnist_smoke")
    stream = make_avalanche_benchmark(prepared, "task_il")
    for k, exp in enumerate(stream.train_stream):
        rows = prepared.experience_rows("train")[k]
        x = torch.stack([exp.dataset[i][0] for i in range(len(exp.dataset))])
        assert torch.equal(x, to_float(prepared.train.x[rows]))
        assert [exp.dataset[i][1] for i in range(3)] == prepared.train.y[rows[:3]].tolist()
        assert set(exp.dataset.targets_task_labels) == {k}
    # nothing is converted up front: each dataset holds the row indices of a memory-mapped array
    data = PreparedRows(prepared, "train", 0, prepared.experience_rows("train")[0])
    assert isinstance(prepared.train.x, np.memmap) or isinstance(prepared.train.x.base, np.memmap)
    assert all(not isinstance(v, torch.Tensor) or v.dtype != torch.float32 for v in vars(data).values())
