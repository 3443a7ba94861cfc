"""``buffer_update``: when reservoir-buffer methods (ER, DER(++), MGSER-SAM, SAM variants) add
trained samples to their buffer, online (after every step) or at the end of each experience."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from clsuite.core.errors import ParamsError
from clsuite.methods import METHODS, MethodContext
from clsuite.methods.der import DERPlugin
from clsuite.methods.mgser import MGSERSAMPlugin
from clsuite.methods.replay import BufferStateMixin, ReservoirBuffer, ReservoirReplayPlugin

from test_replay_buffer import assert_same_buffer, ids_of, stream
from test_report_extended import _evaluate, grid  # noqa: F401 (the module-scoped fixture)

REPLAY_FAMILY = ("replay", "er_sam", "der", "derpp", "derpp_sam", "mgser_sam")


def _er_step(plugin: ReservoirReplayPlugin, batch) -> None:
    strategy = SimpleNamespace(mbatch=list(batch))
    plugin.before_forward(strategy)
    plugin.after_training_iteration(strategy)


def _end(plugin, model=None) -> None:
    plugin.after_training_exp(SimpleNamespace(model=model))


def test_every_replay_family_method_takes_buffer_update_defaulting_to_online():
    ctx = MethodContext(seed=0, n_classes=4, experiences=[[0, 1], [2, 3]], input_shape=(1, 2, 2))
    for name in REPLAY_FAMILY:
        spec = METHODS.get(name)
        assert spec.config_cls().buffer_update == "online", name
        cfg = spec.config_cls.model_validate({"buffer_update": "end_of_experience"}, strict=True)
        plugins = [p for p in spec.build(cfg, ctx) if isinstance(p, BufferStateMixin)]
        assert [p.buffer_update for p in plugins] == ["end_of_experience"], name


def test_a_bad_buffer_update_is_a_params_error_naming_the_key(params):
    raw = params.image().model_copy(deep=True)
    raw.methods["der_bad"] = {"type": "der", "buffer_update": "end_of_task"}
    with pytest.raises(ParamsError, match="methods.der_bad.*buffer_update"):
        raw.method("der_bad")


def test_online_buffer_holds_current_experience_samples_end_of_experience_does_not():
    online = ReservoirReplayPlugin(mem_size=100, batch_size_mem=4, seed=0)
    eoe = ReservoirReplayPlugin(mem_size=100, batch_size_mem=4, seed=0, buffer_update="end_of_experience")
    for plugin in (online, eoe):
        for i in range(3):  # experience 0: ids 0..14
            _er_step(plugin, stream(5 * i, 5, task=0))
            if plugin is online:
                assert set(plugin.buffer.y.tolist()) == set(range(5 * i + 5))
            else:
                assert len(plugin.buffer) == 0  # nothing before the experience ends
        _end(plugin)
        assert sorted(plugin.buffer.y.tolist()) == list(range(15))
        for i in range(3):  # experience 1: ids 15..29
            _er_step(plugin, stream(15 + 5 * i, 5, task=1))
            has_current = bool(set(plugin.buffer.y.tolist()) & set(range(15, 30)))
            assert has_current == (plugin is online)
        _end(plugin)
        assert sorted(plugin.buffer.y.tolist()) == list(range(30)) and plugin.buffer.n_seen == 30


def test_end_of_experience_equals_offering_the_experience_in_order_to_a_fresh_buffer():
    plugin = ReservoirReplayPlugin(mem_size=7, batch_size_mem=3, seed=5, buffer_update="end_of_experience")
    batches = [stream(5 * i, 5) for i in range(6)]  # 30 rows into 7 slots: reservoir draws happen
    for batch in batches:
        _er_step(plugin, batch)
    _end(plugin)
    ref = ReservoirBuffer(7, seed=5)
    for batch in batches:
        ref.add(*batch)
    assert_same_buffer(plugin.buffer, ref)
    assert ids_of(plugin.buffer.x) == plugin.buffer.y.tolist()


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 8), torch.nn.Dropout(0.5),
                               torch.nn.Linear(8, 3))


def _der_step(plugin, model, x, y) -> None:
    out = model(x)
    s = SimpleNamespace(model=model, device=torch.device("cpu"), mb_x=x, mb_y=y, mb_task_id=torch.zeros_like(y),
                        mb_output=out, loss=F.cross_entropy(out, y))
    plugin.before_backward(s)
    plugin.after_training_iteration(s)


@pytest.mark.parametrize("make", [
    lambda u: DERPlugin(mem_size=50, batch_size_mem=4, alpha=0.5, beta=0.5, seed=0, buffer_update=u),
    lambda u: MGSERSAMPlugin(mem_size=50, batch_size_mem=4, alpha=0.1, gamma=1.0, rho=0.05, memory_loss="soft",
                             seed=0, buffer_update=u),
], ids=["der", "mgser_sam"])
def test_end_of_experience_stores_the_final_models_eval_logits(make):
    model = _model().train()
    plugin = make("end_of_experience")
    xs = [torch.randn(6, 1, 2, 2) for _ in range(3)]
    ys = [torch.randint(0, 3, (6,)) for _ in range(3)]
    for x, y in zip(xs, ys):
        _der_step(plugin, model, x, y)
        with torch.no_grad():  # "training" moves the model between steps
            model[1].weight.add_(0.1)
        assert len(plugin.buffer) == 0
    _end(plugin, model)
    assert model.training  # the model's mode is restored
    model.eval()
    with torch.no_grad():
        want = torch.cat([model(x) for x in xs])
    assert torch.equal(plugin.buffer.field("logits"), want)
    assert torch.equal(plugin.buffer.x, torch.cat(xs)) and torch.equal(plugin.buffer.y, torch.cat(ys))


def test_online_der_keeps_the_logits_of_each_step():
    model = _model().eval()
    plugin = DERPlugin(mem_size=50, batch_size_mem=4, alpha=0.5, beta=0.0, seed=0)
    x, y = torch.randn(6, 1, 2, 2), torch.randint(0, 3, (6,))
    with torch.no_grad():
        want = model(x)
    _der_step(plugin, model, x, y)
    with torch.no_grad():
        model[1].weight.add_(1.0)
    _end(plugin, model)  # nothing held back: the end of the experience changes nothing
    assert torch.equal(plugin.buffer.field("logits"), want) and plugin.buffer.n_seen == 6


def test_checkpoint_between_experiences_round_trips_and_none_mid_experience():
    plugin = ReservoirReplayPlugin(mem_size=10, batch_size_mem=2, seed=1, buffer_update="end_of_experience")
    _er_step(plugin, stream(0, 4))
    with pytest.raises(RuntimeError, match="middle of an experience"):
        plugin.state_dict()
    _end(plugin)
    restored = ReservoirReplayPlugin(mem_size=10, batch_size_mem=2, seed=9, buffer_update="end_of_experience")
    restored.load_state_dict(plugin.state_dict())
    assert_same_buffer(restored.buffer, plugin.buffer)


def test_methods_table_and_report_name_the_buffer_update(params, tmp_path):
    from clsuite.core.parquet import read_table, write_table
    from clsuite.image.evaluate import grid_tables
    from clsuite.image.report import buffer_update_md
    from clsuite.image.schemas import METHODS as METHODS_SCHEMA

    base = params.image()
    methods = {**base.methods, "replay_eoe": {"type": "replay", "buffer_update": "end_of_experience"}}
    image = base.model_copy(update={"methods": methods, "run": base.run.model_copy(
        update={"methods": ["finetune", "replay", "replay_eoe", "der"]})})
    methods, schema = grid_tables(image)["methods"]
    assert schema is METHODS_SCHEMA
    write_table(methods, tmp_path / "methods.parquet", METHODS_SCHEMA)
    methods = read_table(tmp_path / "methods.parquet", METHODS_SCHEMA)
    write_table(methods.iloc[:1], tmp_path / "none.parquet", METHODS_SCHEMA)  # a column of nulls only
    assert read_table(tmp_path / "none.parquet", METHODS_SCHEMA)["buffer_update"].isna().all()
    assert {m: None if pd.isna(v) else v for m, v in zip(methods["method"], methods["buffer_update"])} == {
        "finetune": None, "replay": "online", "replay_eoe": "end_of_experience", "der": "online"}
    line = buffer_update_md(methods.set_index("method"), ["finetune", "replay", "replay_eoe", "der"])
    assert line == ["Replay buffer updates: online, after every training step (Mammoth, the DER paper): `replay`, "
                    "`der`; at the end of each experience (Avalanche's ReplayPlugin): `replay_eoe`.", ""]
    # no reservoir method (or a methods table written before the column existed): no line
    assert buffer_update_md(methods.set_index("method").loc[["finetune"]], ["finetune"]) == []
    assert buffer_update_md(pd.DataFrame({"type": ["replay"]}, index=["replay"]), ["replay"]) == []


def test_report_names_the_timing_and_changes_nothing_else(grid, tmp_path):  # noqa: F811 (fixture)
    """The report built from the evaluated tables has the buffer-update line under "How to
    cite"; built from a methods table without the column, it is the same text minus that line."""
    import shutil

    from clsuite.core.parquet import read_table, write_table
    from clsuite.image.report import build_report
    from clsuite.image.schemas import METHODS as METHODS_SCHEMA

    _, data, _ = _evaluate(grid, True)
    older = tmp_path / "data_without_column"
    shutil.copytree(data, older)
    methods = read_table(older / "methods.parquet", METHODS_SCHEMA)
    write_table(methods.drop(columns="buffer_update"), older / "methods.parquet", METHODS_SCHEMA)
    cwd = os.getcwd()
    os.chdir(tmp_path)  # the report's provenance reads the working directory
    try:
        new = build_report(data, tmp_path / "new").read_text()
        old = build_report(older, tmp_path / "old").read_text()
    finally:
        os.chdir(cwd)
    line = ("Replay buffer updates: online, after every training step (Mammoth, the DER paper): `replay_small`, "
            "`replay`.\n\n")
    assert "## How to cite\n\n" + line + "```bibtex" in new
    assert new.replace(line, "", 1) == old
