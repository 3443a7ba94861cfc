"""The worked example package (examples/clsuite-er-ace) registers through the entry point,
trains, and shows up in the evaluate output, without any change to clsuite.

ER-ACE is also built in (``er_ace``, clsuite/methods/er_ace.py); the package registers the same
logic as ``er_ace_example`` (tests/image/test_staples.py checks that both give the same loss)."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import torch

from clsuite.image.evaluate import evaluate_grid
from clsuite.methods import METHODS
from clsuite.image.train import train_run

BIN = Path(sys.executable).parent


def _installed() -> None:
    names = [ep.name for ep in entry_points(group="clsuite.methods")]
    assert "er_ace_example" in names, (
        "the example package is not installed (or installed before its method was renamed er_ace_example): "
        "run `make setup` "
        "(or `pip install --no-deps -e examples/clsuite-er-ace`)"
    )


def test_entry_point_registers_the_method():
    _installed()
    assert "er_ace_example" in METHODS
    assert METHODS.origin("er_ace_example") == "clsuite_er_ace"
    assert METHODS.origin("er_ace").startswith("clsuite.methods.")  # the built-in keeps its name
    assert not METHODS.broken()
    out = subprocess.run([str(BIN / "clsuite"), "list", "methods"], capture_output=True, text=True, check=True)
    assert any(line.startswith("er_ace_example") and "clsuite_er_ace" in line for line in out.stdout.splitlines())


def test_ace_mask_by_hand():
    _installed()
    from clsuite_er_ace import ace_mask

    logits = torch.arange(12.0).view(2, 6)
    masked = ace_mask(logits, present=torch.tensor([2, 3]), seen=torch.tensor([0, 1, 2, 3]))
    lo = torch.finfo(torch.float32).min
    # classes 0, 1 seen but absent: masked; 2, 3 present: kept; 4, 5 never seen: kept
    assert masked[0].tolist() == [lo, lo, 2.0, 3.0, 4.0, 5.0]


def test_example_method_trains_and_appears_in_evaluate_output(params, data_roots, tmp_path):
    _installed()
    _, prepared = data_roots
    grid = params.run.model_copy(update={"benchmarks": ["smnist_smoke"], "methods": ["finetune", "er_ace_example"],
                                         "seeds": [0]})
    p = params.model_copy(update={"run": grid, "methods": {**params.methods, "er_ace_example": {"mem_size": 100}}})
    for method in grid.methods:
        train_run(p, "smnist_smoke", method, 0, prepared, tmp_path / "runs")
    tables = evaluate_grid(p, runs_root=tmp_path / "runs", out_dir=tmp_path / "tables",
                           headline_dir=tmp_path / "metrics")
    summary = tables["summary"]
    last = summary[(summary["metric"] == "last_acc") & (summary["protocol"] == "class_il")].set_index("method")["mean"]
    assert set(last.index) == {"finetune", "er_ace_example"}
    assert last["er_ace_example"] > last["finetune"], last  # replay with ACE retains old classes; finetune does not
