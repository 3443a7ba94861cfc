"""Per-method training settings (methods.<m>.train, methods.<m>.train_by_benchmark.<b>) and the
settings provenance table (clsuite/catalogue/settings_provenance.yaml, reports/data/settings)."""

from __future__ import annotations

import pytest

from clsuite.config import parse_params, read_params_raw
from clsuite.core.errors import ParamsError
from clsuite.core.parquet import write_table
from clsuite.image.records import read_records
from clsuite.image.report_sections import Grid, settings_section
from clsuite.image.schemas import SETTINGS
from clsuite.image.settings import ProvenanceTable, load_provenance, settings_table
from clsuite.image.train import train_run


def with_methods(**changes):
    """The repo's image params with ``methods.<name>`` updated by ``changes[name]``."""
    raw = read_params_raw()
    for name, update in changes.items():
        raw["methods"][name] = {**raw["methods"][name], **update}
    return parse_params(raw).image()


def with_grid(params, benchmarks, methods):
    return params.model_copy(update={"run": params.run.model_copy(update={"benchmarks": benchmarks,
                                                                          "methods": methods})})


def test_method_settings_override_the_benchmark_and_fall_back_to_it():
    p = with_methods(der={"train": {"lr": 0.03, "momentum": 0.5},
                          "train_by_benchmark": {"fmnist": {"lr": 0.01, "batch_size": 32}}})
    assert p.train_config("smnist", "der").lr == 0.03  # method level
    assert p.train_config("smnist", "der").momentum == 0.5
    assert p.train_config("smnist", "der").batch_size == 10  # benchmark's
    fm = p.train_config("fmnist", "der")
    assert (fm.lr, fm.batch_size, fm.momentum) == (0.01, 32, 0.5)  # (benchmark, method) wins over method
    assert p.train_config("fmnist", "lwf") == p.benchmark("fmnist").train  # other methods: the benchmark's
    assert p.method("der").config_dict()["alpha"] == 0.3  # the method's own config is unchanged
    assert p.method("der").train.level("fmnist", "lr") == "method_benchmark"
    assert p.method("der").train.level("smnist", "lr") == "method"
    assert p.method("der").train.level("smnist", "batch_size") == "benchmark"


@pytest.mark.parametrize("update, expected", [
    ({"train": {"lrr": 0.1}}, "methods.der.train.lrr: unknown key 'lrr'; allowed keys: batch_size, epochs, epochs_first, lr"),
    ({"train": {"lr": -1.0}}, "methods.der.train.lr: Input should be greater than 0"),
    ({"train": {"optimizer": "adam"}}, "methods.der.train.optimizer: unknown key"),
    ({"train": {"schedule": {"kind": "multistep"}}}, "methods.der.train.schedule: kind: multistep needs milestones"),
    ({"train_by_benchmark": {"nope": {"lr": 0.1}}}, "methods.der.train_by_benchmark: 'nope' not defined under benchmarks"),
    ({"train_by_benchmark": {"smnist": {"momentum": 1.5}}}, "methods.der.train_by_benchmark.smnist.momentum"),
])
def test_bad_method_settings_name_the_key_path(update, expected):
    with pytest.raises(ParamsError, match=expected.replace(".", r"\.").replace("(", r"\(")):
        with_methods(der=update)


def test_a_method_lr_changes_the_fingerprint_and_records_and_a_no_op_keeps_them(params, data_roots, tmp_path):
    """No override and an override equal to the benchmark's value train the same run byte for byte
    (and resume each other's checkpoint); another lr starts over and gives other records."""
    _, prepared = data_roots
    base = read_records(train_run(params, "smnist_smoke", "finetune", 0, prepared, tmp_path / "a"))
    same = with_methods(finetune={"train": {"lr": params.benchmark("smnist_smoke").train.lr}})
    run_dir = train_run(same, "smnist_smoke", "finetune", 0, prepared, tmp_path / "a")
    assert "resuming from checkpoint" in (run_dir / "log.txt").read_text()
    assert read_records(train_run(same, "smnist_smoke", "finetune", 0, prepared, tmp_path / "b")).equals(base)
    other = with_methods(finetune={"train_by_benchmark": {"smnist_smoke": {"lr": 0.01}}})
    train_run(other, "smnist_smoke", "finetune", 0, prepared, tmp_path / "a")
    log = (run_dir / "log.txt").read_text()
    assert log.count("resuming from checkpoint") == 1  # the changed lr did not resume
    assert "checkpoint checkpoint.pt refused" in log and '"lr":0.01' in log
    assert not read_records(run_dir).equals(base)


def test_shipped_provenance_table_loads_and_records_the_values_params_hold():
    """Every entry names defined methods and benchmarks and records the value params hold today
    (the file's entries; a search record's choices count only while params hold them)."""
    from clsuite.config import load_params

    full = load_params()
    table = load_provenance(tuned_dir=None)
    p = full.image()
    assert set(table.benchmarks) <= set(p.benchmarks)
    for e in table.settings:
        for b in e.benchmarks or [None]:
            assert b is None or b in p.benchmarks, e
            if e.key.startswith("train.") and not e.methods and b is not None:
                value = getattr(p.benchmark(b).train, e.key[6:])
                if hasattr(value, "model_dump"):  # schedule, augment, normalize: as JSON, unset parts left out
                    value = value.model_dump(mode="json", exclude_none=True)
                assert value == e.value, e
        for m in e.methods:
            assert m in p.methods, e
            if not e.key.startswith("train."):
                assert p.method(m).config_dict()[e.key] == e.value, e


def test_borrowed_value_is_flagged_and_a_published_one_is_not():
    full = with_grid(with_methods(), ["smnist", "scifar10"], ["der_500", "derpp_500"])
    df = settings_table(full, load_provenance())
    SETTINGS.validate(df)
    row = lambda b, m, k: df[(df.benchmark == b) & (df.method == m) & (df.key == k)].iloc[0]  # noqa: E731
    der_alpha = row("smnist", "der_500", "alpha")
    assert der_alpha.value == "0.3" and der_alpha.source == "Mammoth best-args seq-cifar10 buffer 500"
    assert "published for seq-cifar10, used on smnist" in der_alpha.flag
    assert row("scifar10", "der_500", "alpha").flag == ""  # published for S-CIFAR-10 at buffer 500
    assert row("scifar10", "der_500", "train.lr").flag == ""
    assert row("smnist", "der_500", "train.lr").flag.startswith("untuned default")


def test_flags_buffer_mismatch_changed_values_and_method_overrides():
    p = with_grid(with_methods(der={"alpha": 0.5, "train_by_benchmark": {"scifar10": {"lr": 0.05}}}),
                  ["scifar10"], ["der", "derpp"])
    df = settings_table(p, load_provenance()).set_index(["method", "key"])
    assert df.loc[("derpp", "alpha"), "flag"] == ""  # published for seq-cifar10 at buffer 200
    assert df.loc[("der", "alpha"), "flag"].startswith("no recorded source for this value (recorded: 0.3")
    lr = df.loc[("der", "train.lr")]
    assert (lr["value"], lr["set_at"], lr["flag"]) == ("0.05", "method_benchmark", "no recorded source")
    assert df.loc[("derpp", "train.lr"), "set_at"] == "benchmark"


def test_provenance_table_rejects_bad_entries(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("benchmarks: {}\nsettings:\n  - {key: alpha, value: 0.3, source: DER paper}\n")
    with pytest.raises(ParamsError, match=r"p\.yaml: invalid settings provenance\n.*name the datasets"):
        load_provenance(bad)
    bad.write_text("benchmarks: {}\nsettings:\n  - {key: alpha, value: 0.3, methods: [der], source: x, datasets: [a], "
                   "bufer: 2}\n")
    with pytest.raises(ParamsError, match=r"settings\.0\.bufer: unknown key"):
        load_provenance(bad)
    two = {"key": "alpha", "value": 0.3, "methods": ["der"], "source": "untuned default"}
    with pytest.raises(ValueError, match="listed twice"):
        ProvenanceTable.model_validate({"benchmarks": {}, "settings": [two, two]})


def test_report_has_the_settings_and_provenance_section(tmp_path):
    p = with_grid(with_methods(), ["smnist"], ["replay", "der"])
    df = settings_table(p, load_provenance())
    df.loc[df.index[0], "note"] = "<script>alert(1)</script>"
    data = tmp_path / "data"
    write_table(df, data / "settings.parquet", SETTINGS)
    grid = Grid(["smnist"], ["replay", "der"], [0], "embedded", "finetune", "0" * 64)
    md = "\n".join(settings_section(grid, data, tmp_path / "out"))
    assert "## Settings and provenance" in md and "### smnist" in md
    assert "⚑ published for seq-cifar10, used on smnist" in md  # DER's alpha
    assert "<script>" not in md
    assert (tmp_path / "out" / "tables" / "settings_smnist.csv").exists()
    # the train settings the two methods share are one row, naming both
    assert "replay, der" in md
