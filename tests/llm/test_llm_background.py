"""Sparse memory finetuning's background corpus (issue #18, item 7): general text declared per
sequence, disjoint from every trained and held-out task — refused at params load by task
name and corpus, at llm_prepare by example text — and what the sparse memory run counts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

import clsuite.llm.encode as llm_encode
import clsuite.llm.memory.sparse as sparse
from clsuite.config import parse_params
from clsuite.data.text.sequence import TaskData
from clsuite.core.errors import DataError, ParamsError
from clsuite.llm.config import LLMParams
from clsuite.llm.prepare import check_disjoint, prepare_sequence
from clsuite.llm.train import load_background, load_prepared, run_dir_of, train_llm_run

from fakes.llm import repo_params, smoke_llm  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def raw_params() -> dict:
    return repo_params()


@pytest.fixture(scope="module")
def llm(raw_params) -> LLMParams:
    return smoke_llm(raw_params, ["sparse_memory"], sparse_memory={"n_keys": 8, "k": 4, "top_t": 16})


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, llm) -> Path:
    root = tmp_path_factory.mktemp("llm_bg")
    return prepare_sequence("llm_smoke", llm.sequences["llm_smoke"], root / "raw", root / "prepared")


def _rows(t: TaskData) -> pd.DataFrame:
    return pd.concat([t.train, t.test])


def test_background_shares_no_example_or_task_with_any_evaluated_task(prepared, llm):
    tasks, held = load_prepared(prepared)
    bg = load_background(prepared)
    assert bg is not None and len(bg.train) == llm.sequences["llm_smoke"].background.n
    evaluated = tasks + [held]
    assert bg.task not in {t.task for t in evaluated}
    bg_prompts = set(_rows(bg).prompt)
    for t in evaluated:
        assert not bg_prompts & set(_rows(t).prompt), t.task
        assert not set(_rows(bg).id) & set(_rows(t).id) or bg.task != t.task
    # every background row is from its own corpus, none from an evaluated reasoning-gym dataset
    datasets = {json.loads(m)["rg_dataset"] for m in _rows(bg).meta}
    assert datasets == {"word_sorting"}
    assert not datasets & {json.loads(m)["rg_dataset"] for t in evaluated for m in _rows(t).meta}


@pytest.mark.parametrize("background, what", [
    ({"source": "rg_syllogism"}, "task name 'rg_syllogism'"),  # a trained task itself
    ({"source": "reasoning_gym", "options": {"dataset": "syllogism"}}, "corpus 'syllogism'"),  # same dataset
    ({"source": "reasoning_gym", "options": {"dataset": "letter_counting"}}, "heldout"),  # the held-out probe
    ({"source": "reasoning_gym", "name": "rg_letter_counting", "options": {"dataset": "spell_backward"}},
     "task name 'rg_letter_counting'"),
])
def test_params_refuse_a_background_that_overlaps_an_evaluated_task(raw_params, background, what):
    raw = json.loads(json.dumps(raw_params))
    raw["llm"]["sequences"]["llm_smoke"]["background"] = background
    with pytest.raises(ParamsError, match=r"llm\.sequences\.llm_smoke\.background: ") as err:
        parse_params(raw, check_components=False)
    assert what in str(err.value)


def test_heldout_background_key_is_gone_with_a_clear_message(raw_params):
    raw = json.loads(json.dumps(raw_params))
    raw["llm"]["sequences"]["llm_smoke"]["heldout"]["background"] = 32
    with pytest.raises(ParamsError, match=r"llm\.sequences\.llm_smoke\.heldout.*heldout\.background was removed"):
        parse_params(raw, check_components=False)


def test_prepare_refuses_a_background_sharing_an_example():
    def table(task: str, prompts: list[str]) -> pd.DataFrame:
        return pd.DataFrame({"task": task, "split": "train", "id": [str(i) for i in range(len(prompts))],
                             "prompt": prompts, "answer": "a", "choices": None, "label": None, "meta": "{}"})

    bg = TaskData("bg", "x", table("bg", ["general text", "a shared question"]), table("bg", ["more"]))
    other = TaskData("t", "y", table("t", ["q1"]), table("t", ["a shared question"]))
    with pytest.raises(DataError, match=r"where: 1 background example\(s\) also occur in the evaluated task 't'"):
        check_disjoint(bg, [other], "where")
    with pytest.raises(ParamsError, match="task name 'bg'"):
        check_disjoint(bg, [TaskData("bg", "z", table("bg", ["q"]), table("bg", ["r"]))], "where")
    check_disjoint(bg, [TaskData("t", "y", table("t", ["q1"]), table("t", ["q2"]))], "where")  # disjoint: fine


def test_sparse_memory_counts_the_declared_background(llm, prepared, tmp_path, monkeypatch):
    seen: dict = {}
    documents, counts = llm_encode.encode_documents, sparse.background_counts

    def spy_documents(tok, df, max_length):
        seen["df"] = df
        return documents(tok, df, max_length)

    def spy_counts(model, batches):
        seen["batches"] = list(batches)
        return counts(model, batches)

    monkeypatch.setattr(llm_encode, "encode_documents", spy_documents)
    monkeypatch.setattr(sparse, "background_counts", spy_counts)
    rd = train_llm_run(llm, "llm_smoke", "sparse_memory", 0, prepared,
                       run_dir_of(tmp_path, "llm_smoke", "sparse_memory", 0), threads=1, progress=False)
    bg = load_background(prepared)
    pd.testing.assert_frame_equal(seen["df"], bg.train)  # the background corpus, not the held-out task
    cfg = llm.sequences["llm_smoke"]
    assert len(seen["batches"]) == math.ceil(cfg.background.n / cfg.protocol.batch_size)
    assert all(torch.all(b["labels"] == -100) for b in seen["batches"])  # plain documents, no answer
    assert json.loads((rd / "status.json").read_text())["state"] == "finished"


def test_sparse_memory_without_a_background_is_a_params_error(llm, prepared, tmp_path):
    import shutil

    bare = tmp_path / "prepared"
    shutil.copytree(prepared, bare)
    shutil.rmtree(bare / "background")
    with pytest.raises(ParamsError, match=r"llm\.sequences\.llm_smoke\.background: sparse_memory needs a background"):
        train_llm_run(llm, "llm_smoke", "sparse_memory", 0, bare, run_dir_of(tmp_path, "llm_smoke", "sparse_memory", 0),
                      threads=1, progress=False)
