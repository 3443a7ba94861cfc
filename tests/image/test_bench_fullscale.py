"""The full-scale benchmark (benchmarks/bench_fullscale.py) in its reduced form on CPU: a
generated ImageNet-100-shaped tree through the real imagenet100 source, then the GPU check's
contenders (bare torchvision loop, clsuite's streamed trainer) and the memory measurement."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))


@pytest.mark.slow
def test_fullscale_benchmark_runs_reduced_on_cpu(tmp_path):
    import bench_fullscale

    result = bench_fullscale.main(["--gpu", "--memory", "--quick", "--device", "cpu", "--no-write",
                                   "--data", str(tmp_path)])
    assert result["clsuite"]["streamed"] and not result["train_in_memory"]["streamed"]
    assert result["clsuite"]["images"] == result["bare"]["images"] == 20  # 10 classes x 2 images, 1 epoch
    assert result["clsuite_over_bare_time_per_image"] > 0
    for key in ("old_stream", "train_in_memory", "train_streamed"):
        assert result[key]["peak_rss_mb"] > 0
    assert result["float32_stream_mb"] == pytest.approx(4 * result["prepared_uint8_mb"])
