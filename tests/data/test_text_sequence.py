"""Task sequences: the offline reasoning-gym sequence of issue #7, a sequence over
(fake) downloaded corpora, limits, determinism, errors, and the written folder."""

from __future__ import annotations

import json

import pytest

from clsuite.data.text import TEXT_SOURCES
from clsuite.data.text import agnews, gsm8k
from clsuite.data.text.sequence import OFFLINE_REASONING, build_sequence, read_sequence, write_sequence
from clsuite.core.errors import DataError, ParamsError
from fakes.text import remote_for, write_agnews, write_gsm8k


def test_offline_sequence_in_order_with_limits_and_deterministic(tmp_path):
    seq = build_sequence(OFFLINE_REASONING, tmp_path, seed=1, train=8, test=4)
    assert [s.task for s in seq] == ["rg_basic_arithmetic", "rg_gsm_symbolic", "rg_family_relationships",
                                     "rg_syllogism"]
    for step in seq:
        assert (len(step.train), len(step.test)) == (8, 4)
        assert set(step.train.split) == {"train"} and set(step.test.split) == {"test"}
        assert set(step.train.task) == {step.task}
    again = build_sequence(OFFLINE_REASONING, tmp_path, seed=1, train=8, test=4)
    assert all(a.train.equals(b.train) and a.test.equals(b.test) for a, b in zip(seq, again))
    other = build_sequence(OFFLINE_REASONING[:1], tmp_path, seed=2, train=8, test=4)
    assert not other[0].train.equals(seq[0].train)


def test_per_task_specs_rename_limit_and_configure(tmp_path):
    seq = build_sequence(
        [{"source": "rg_basic_arithmetic", "name": "easy_sums", "train": 3,
          "options": {"config": {"operators": ["+"], "min_terms": 2, "max_terms": 2}}},
         {"source": "rg_basic_arithmetic", "name": "all_ops", "test": 2}],
        tmp_path, seed=0, train=5, test=1)
    assert [(s.task, len(s.train), len(s.test)) for s in seq] == [("easy_sums", 3, 1), ("all_ops", 5, 2)]
    assert all("*" not in p and "/" not in p for p in seq[0].train.prompt)


def test_bad_specs_name_the_task_and_key(tmp_path):
    with pytest.raises(ParamsError, match=r"tasks\[1\].source: unknown text source 'imdb'"):
        build_sequence(["rg_syllogism", "imdb"], tmp_path)
    with pytest.raises(ParamsError, match=r"tasks: task name\(s\) rg_syllogism occur twice"):
        build_sequence(["rg_syllogism", {"source": "rg_syllogism"}], tmp_path)
    with pytest.raises(ParamsError, match=r"tasks\[0\].trian: unknown key 'trian'"):
        build_sequence([{"source": "rg_syllogism", "trian": 3}], tmp_path)
    with pytest.raises(ParamsError, match=r"tasks\[0\].options.levels: unknown key"):
        build_sequence([{"source": "rg_syllogism", "options": {"levels": [1]}}], tmp_path)
    with pytest.raises(ParamsError, match=r"tasks\[0\].name: not a valid name"):
        build_sequence([{"source": "rg_syllogism", "name": "../up"}], tmp_path)
    with pytest.raises(ParamsError, match=r"tasks: the sequence has no task"):
        build_sequence([], tmp_path)


def test_corpus_sequence_samples_official_splits(monkeypatch, tmp_path):
    raw = tmp_path / "raw"
    for module, fakes in ((agnews, write_agnews(tmp_path / "a")), (gsm8k, write_gsm8k(tmp_path / "g"))):
        monkeypatch.setattr(module, "FILES", {s: remote_for(p, module.FILES[s].filename) for s, p in fakes.items()})
    for name in ("agnews", "gsm8k"):
        source = TEXT_SOURCES.get(name)
        source.fetch(source.raw_dir(raw))
    seq = build_sequence(["agnews", "gsm8k"], raw, seed=0, train=2)
    assert [(s.task, len(s.train), len(s.test)) for s in seq] == [("agnews", 2, 2), ("gsm8k", 2, 1)]
    all_agnews = [e.id for e in TEXT_SOURCES.get("agnews").load(raw / "agnews") if e.split == "train"]
    assert set(seq[0].train.id) <= set(all_agnews)
    assert list(seq[0].train.id) == [i for i in all_agnews if i in set(seq[0].train.id)]  # file order kept
    assert build_sequence(["agnews"], raw, seed=0, train=2)[0].train.equals(seq[0].train)
    with pytest.raises(DataError, match=r"squad/train-v1.1.json: missing; run `clsuite fetch` first"):
        build_sequence(["squad"], raw)


def test_write_and_read_sequence(tmp_path):
    seq = build_sequence(OFFLINE_REASONING[2:], tmp_path, seed=0, train=4, test=2)
    out = write_sequence(seq, tmp_path / "seq", info={"seed": 0})
    manifest = json.loads((out / "sequence.json").read_text())
    assert manifest["seed"] == 0 and [t["folder"] for t in manifest["tasks"]] == [
        "00_rg_family_relationships", "01_rg_syllogism"]
    back = read_sequence(out)
    assert [s.task for s in back] == [s.task for s in seq]
    assert all(a.train.equals(b.train) and a.test.equals(b.test) for a, b in zip(seq, back))
    write_sequence(seq[:1], out)  # replaced as a whole
    assert [s.task for s in read_sequence(out)] == ["rg_family_relationships"]
    assert not (out / "01_rg_syllogism").exists()
    (out / "sequence.json").write_text("{")
    with pytest.raises(DataError, match=r"sequence.json: missing or unreadable"):
        read_sequence(out)
