"""Text corpora end to end on tiny fake files in the official formats: fetch (real
download code over file:// URLs, checksums verified), parse, garbled/truncated files and
checksum mismatches → DataError naming the file, offline → FetchError saying what to put where.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from clsuite.data.download import RemoteFile
from clsuite.data.text import TEXT_SOURCES, TextExample
from clsuite.data.text import agnews, alpaca_gpt4, arc, boolq, gsm8k, hendrycks_math, sciq, squad
from clsuite.data.text.prepared_table import read_text_table, write_text_table
from clsuite.core.errors import DataError, FetchError, ParamsError
from fakes.text import (
    AGNEWS_ROWS, MATH_PROBLEMS, arc_row, remote_for, truncate, write_agnews, write_alpaca, write_arc, write_boolq,
    write_gsm8k, write_math, write_sciq, write_squad,
)


def fetched(monkeypatch, module, src: dict[str, Path], raw: Path, source: str) -> list[TextExample]:
    """Point ``module.FILES`` at the fakes, fetch them into ``raw`` and load them."""
    files = {split: remote_for(path, module.FILES[split].filename) for split, path in src.items()}
    monkeypatch.setattr(module, "FILES", files)
    paths = TEXT_SOURCES.get(source).fetch(raw)
    assert sorted(p.name for p in paths) == sorted(f.filename for f in files.values())
    return TEXT_SOURCES.get(source).load(raw)


def by_split(examples: list[TextExample], split: str) -> list[TextExample]:
    return [e for e in examples if e.split == split]


# -- AG News -------------------------------------------------------------------------------------


def test_agnews_csv_parsed_with_quotes_commas_and_labels(monkeypatch, tmp_path):
    ex = fetched(monkeypatch, agnews, write_agnews(tmp_path / "src"), tmp_path / "raw", "agnews")
    train, test = by_split(ex, "train"), by_split(ex, "test")
    assert len(train) == len(AGNEWS_ROWS["train"]) and len(test) == len(AGNEWS_ROWS["test"])
    first = train[0]
    assert first.prompt == 'Stocks rally\nShares rose, "strongly", on Monday.'
    assert (first.label, first.answer) == (2, "Business")  # class index 3 = Business (classes.txt)
    assert [e.answer for e in train[1:]] == ["Sports", "World", "Sci/Tech"]
    assert train[3].prompt.endswith("processor\\was announced.")  # the release's escapes kept as is
    assert first.choices == ["World", "Sports", "Business", "Sci/Tech"]


def test_agnews_garbled_row_names_file_and_line(tmp_path):
    path = write_agnews(tmp_path)["train"]
    path.write_text(path.read_text() + '"2","only a title"\n')
    with pytest.raises(DataError, match=rf"{path}: line 5: 2 fields, expected 3"):
        agnews.parse(path, "train")
    path.write_text('"9","t","d"\n')
    with pytest.raises(DataError, match=r"line 1: class index '9' is not 1-4"):
        agnews.parse(path, "train")


def test_agnews_checksum_mismatch_on_download_and_on_load(monkeypatch, tmp_path):
    src = write_agnews(tmp_path / "src")
    bad = {"train": remote_for(src["train"], "train.csv", sha256="0" * 64), "test": remote_for(src["test"], "test.csv")}
    monkeypatch.setattr(agnews, "FILES", bad)
    with pytest.raises(DataError, match=r"train.csv: downloaded from .*sha256 .* does not match the published 0{64}"):
        TEXT_SOURCES.get("agnews").fetch(tmp_path / "raw")
    assert not (tmp_path / "raw" / "train.csv").exists() and not (tmp_path / "raw" / "train.csv.part").exists()
    # a file already in the raw folder whose bytes changed is refused by load, naming it
    fetched(monkeypatch, agnews, src, tmp_path / "raw2", "agnews")
    raw_test = tmp_path / "raw2" / "test.csv"
    raw_test.write_text(raw_test.read_text().replace("orbit", "ORBIT"))
    with pytest.raises(DataError, match=rf"{raw_test}: sha256 .* does not match"):
        TEXT_SOURCES.get("agnews").load(tmp_path / "raw2")


def test_offline_fetch_says_what_to_download_and_where(monkeypatch, tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    dead = RemoteFile("train.jsonl", (f"http://127.0.0.1:{port}/train.jsonl",), sha256="a" * 64, size=10)
    monkeypatch.setattr(gsm8k, "FILES", {"train": dead, "test": dead})
    with pytest.raises(FetchError) as err:
        TEXT_SOURCES.get("gsm8k").fetch(tmp_path / "raw")
    msg = str(err.value)
    assert "download train.jsonl (sha256 " + "a" * 64 + ")" in msg
    assert f"place it at {tmp_path / 'raw' / 'train.jsonl'}" in msg


# -- SQuAD ---------------------------------------------------------------------------------------


def test_squad_nested_json_first_answer_and_all_answers(monkeypatch, tmp_path):
    ex = fetched(monkeypatch, squad, write_squad(tmp_path / "src"), tmp_path / "raw", "squad")
    train, dev = by_split(ex, "train"), by_split(ex, "validation")
    assert [e.id for e in train] == ["q1", "q2"] and [e.answer for e in train] == ["Paris", "Seine"]
    assert train[0].prompt.endswith("\n\nQuestion: What is the capital of France?")
    assert train[0].prompt.startswith("Paris is the capital")
    assert dev[0].answer == "France" and dev[0].meta["answers"] == ["France", "of France"]
    assert dev[0].meta["answer_starts"] == [24, 20] and dev[0].meta["title"] == "Paris"
    assert TEXT_SOURCES.get("squad").test_split == "validation"


def test_squad_truncated_or_malformed_json_names_the_file(tmp_path):
    paths = write_squad(tmp_path)
    truncate(paths["train"])
    with pytest.raises(DataError, match=rf"{paths['train']}: not valid JSON .*truncated or garbled"):
        squad.parse(paths["train"], "train")
    paths["validation"].write_text('{"data": [{"title": "x", "paragraphs": [{"qas": []}]}]}')
    with pytest.raises(DataError, match=r"dev-v1.1.json: data\[0\].paragraphs\[0\]: no 'context' field"):
        squad.parse(paths["validation"], "validation")


# -- BoolQ ---------------------------------------------------------------------------------------


def test_boolq_jsonl_yes_no_labels(monkeypatch, tmp_path):
    ex = fetched(monkeypatch, boolq, write_boolq(tmp_path / "src"), tmp_path / "raw", "boolq")
    train = by_split(ex, "train")
    assert [(e.answer, e.label) for e in train] == [("yes", 1), ("no", 0)]
    assert train[0].prompt == "The sky is blue.\n\nQuestion: is the sky blue?"
    assert by_split(ex, "validation")[0].meta["title"] == "Fish"


def test_boolq_garbled_line_and_wrong_type(tmp_path):
    path = write_boolq(tmp_path)["train"]
    path.write_text(path.read_text() + '{"question": "cut off", "ans\n')
    with pytest.raises(DataError, match=rf"{path}: line 3: not valid JSON"):
        boolq.parse(path, "train")
    path.write_text('{"question": "q", "answer": "yes", "passage": "p"}\n')
    with pytest.raises(DataError, match=r"line 1: field 'answer' must be bool, got str"):
        boolq.parse(path, "train")


# -- SciQ ----------------------------------------------------------------------------------------


def test_sciq_zip_splits_and_shuffled_choices(monkeypatch, tmp_path):
    zpath = write_sciq(tmp_path / "src")
    monkeypatch.setattr(sciq, "FILE", remote_for(zpath))
    source = TEXT_SOURCES.get("sciq")
    source.fetch(tmp_path / "raw")
    ex = source.load(tmp_path / "raw")
    assert [len(by_split(ex, s)) for s in ("train", "validation", "test")] == [6, 2, 3]
    assert [e.id for e in by_split(ex, "test")] == ["test-0", "test-1", "test-2"]
    for e in ex:
        i = int(e.answer.split()[1])  # the fake's row number, counted across the three files
        assert sorted(e.choices) == sorted([f"right {i}", f"wrong {i}a", f"wrong {i}b", f"wrong {i}c"])
        assert e.choices[e.label] == e.answer == f"right {i}"
        assert e.prompt == (f"Question {i}?" if i % 2 else f"Fact {i}.\n\nQuestion: Question {i}?")
    assert len({e.label for e in ex}) > 1  # the right answer is not always in the same place
    assert [e.choices for e in source.load(tmp_path / "raw")] == [e.choices for e in ex]  # stable


def test_sciq_truncated_zip_names_the_file(tmp_path):
    zpath = write_sciq(tmp_path)
    truncate(zpath, 0.5)
    with pytest.raises(DataError, match=rf"{zpath}: cannot be read as a zip archive"):
        sciq.parse(zpath)


# -- ARC -----------------------------------------------------------------------------------------


def test_arc_easy_and_challenge_from_one_zip(monkeypatch, tmp_path):
    monkeypatch.setattr(arc, "FILE", remote_for(write_arc(tmp_path / "src")))
    easy, challenge = TEXT_SOURCES.get("arc_easy"), TEXT_SOURCES.get("arc_challenge")
    assert easy.raw_dir(tmp_path) == challenge.raw_dir(tmp_path) == tmp_path / "arc"
    easy.fetch(tmp_path / "arc")
    ex = easy.load(tmp_path / "arc")
    assert [e.id for e in ex] == ["E-1", "E-2", "E-3", "E-4", "E-5"]
    assert [e.split for e in ex] == ["train", "train", "train", "validation", "test"]
    assert [(e.label, e.answer) for e in ex[:3]] == [(1, "option B"), (2, "option 3"), (2, "option C")]
    assert ex[1].meta == {"choice_labels": ["1", "2", "3", "4"], "answer_key": "3"}
    assert len(ex[4].choices) == 5 and ex[4].answer == "option E"
    ch = challenge.load(tmp_path / "arc")
    assert [e.id for e in ch] == ["C-1", "C-2", "C-3", "C-4"] and {e.task for e in ch} == {"arc_challenge"}


def test_arc_bad_answer_key_and_missing_member(tmp_path):
    zpath = write_arc(tmp_path, easy_train=[arc_row("E-9", "ABCD", "Z")])
    with pytest.raises(DataError, match=r"ARC-Easy-Train.jsonl: line 1: answerKey 'Z' is not one of"):
        arc.parse(zpath, "Easy", "arc_easy")
    with pytest.raises(DataError, match=r"expected one member ending in '/ARC-Hard/ARC-Hard-Train.jsonl', found none"):
        arc.parse(zpath, "Hard", "arc_hard")


# -- GSM8K ---------------------------------------------------------------------------------------


def test_gsm8k_answer_after_hashes(monkeypatch, tmp_path):
    ex = fetched(monkeypatch, gsm8k, write_gsm8k(tmp_path / "src"), tmp_path / "raw", "gsm8k")
    assert [e.answer for e in ex] == ["7", "2000", "4.5", "-5"]
    assert ex[0].meta["solution"].startswith("3+4=<<3+4=7>>7") and by_split(ex, "test")[0].id == "test-0"


def test_gsm8k_missing_final_answer(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"question": "q", "answer": "no final line"}\n')
    with pytest.raises(DataError, match=rf"{path}: line 1: the answer has no '#### <final answer>' line"):
        gsm8k.parse(path, "train")


# -- MATH ----------------------------------------------------------------------------------------


def test_math_tar_levels_types_and_boxed_answers(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(hendrycks_math, "FILE", remote_for(write_math(tmp_path / "src")))
    source = TEXT_SOURCES.get("math")
    source.fetch(tmp_path / "raw")
    with caplog.at_level(logging.WARNING):
        ex = {e.id: e for e in source.load(tmp_path / "raw")}
    assert "1 problem(s) without a \\boxed answer skipped" in caplog.text  # geometry/4
    assert sorted(ex) == ["test/prealgebra/10", "train/algebra/1", "train/algebra/2", "train/geometry/3",
                          "train/number_theory/7"]
    assert ex["train/algebra/1"].answer == "2" and ex["train/algebra/1"].meta["level"] == 1
    assert ex["train/algebra/2"].answer == "\\frac{1}{2}"  # the last box
    assert ex["train/number_theory/7"].answer == "\\{1, 2\\}" and ex["train/number_theory/7"].meta["level"] is None
    assert ex["train/geometry/3"].answer == "4\\pi"  # \fbox when there is no \boxed
    assert ex["test/prealgebra/10"].answer == "4" and ex["test/prealgebra/10"].split == "test"
    assert ex["train/algebra/2"].meta["type"] == "Algebra"
    hard = source.with_options({"levels": [5]}, "t").load(tmp_path / "raw")
    assert [e.id for e in hard] == ["train/algebra/2"]
    geo = source.with_options({"types": ["Geometry"]}, "t").load(tmp_path / "raw")
    assert [e.id for e in geo] == ["train/geometry/3"]
    with pytest.raises(ParamsError, match=r"t.types: .*unknown type\(s\) \['Topology'\]"):
        source.with_options({"types": ["Topology"]}, "t")


def test_math_truncated_tar_and_bad_level(tmp_path):
    path = write_math(tmp_path)
    truncate(path, 0.5)
    with pytest.raises(DataError, match=rf"{path}"):
        hendrycks_math.parse(path)
    bad = dict(MATH_PROBLEMS)
    bad["MATH/train/algebra/1.json"] = {**bad["MATH/train/algebra/1.json"], "level": "Level 9"}
    path = write_math(tmp_path / "b", bad)
    with pytest.raises(DataError, match=r"MATH.tar:MATH/train/algebra/1.json: level 'Level 9'"):
        hendrycks_math.parse(path)


# -- Alpaca-GPT4 ---------------------------------------------------------------------------------


def git_hash_object(path: Path) -> str:
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    return subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True, check=True).stdout.strip()


def test_alpaca_git_blob_check_prompt_and_stable_split(monkeypatch, tmp_path):
    src = write_alpaca(tmp_path / "src")
    monkeypatch.setattr(alpaca_gpt4, "FILE", RemoteFile(src.name, (src.resolve().as_uri(),)))
    monkeypatch.setattr(alpaca_gpt4, "GIT_BLOB", git_hash_object(src))
    source = TEXT_SOURCES.get("alpaca_gpt4")
    source.fetch(tmp_path / "raw")
    ex = source.load(tmp_path / "raw")
    assert len(ex) == 40 and ex[3].prompt == "Write word 3.\n\nInput:\ncontext 3" and ex[1].prompt == "Write word 1."
    assert ex[3].answer == "word 3" and ex[3].meta == {"instruction": "Write word 3.", "input": "context 3"}
    assert {e.split for e in ex} == {"train", "test"}
    half = source.with_options({"test_fraction": 0.5}, "t").load(tmp_path / "raw")
    tests5 = {e.id for e in ex if e.split == "test"}
    assert tests5 <= {e.id for e in half if e.split == "test"}  # a larger fraction only adds test rows
    raw = tmp_path / "raw" / src.name
    raw.write_text(raw.read_text().replace("word 7", "word 8"))
    with pytest.raises(DataError, match=rf"{raw}: git blob id .* does not match the published"):
        source.load(tmp_path / "raw")


def test_git_blob_id_is_git_hash_object(tmp_path):
    from clsuite.data.text.files import git_blob_sha1

    path = write_alpaca(tmp_path, n=3)
    assert git_blob_sha1(path) == git_hash_object(path)


# -- the prepared table --------------------------------------------------------------------------


def test_every_fake_corpus_round_trips_through_the_table(monkeypatch, tmp_path):
    ex = fetched(monkeypatch, boolq, write_boolq(tmp_path / "b"), tmp_path / "rb", "boolq")
    ex += fetched(monkeypatch, squad, write_squad(tmp_path / "s"), tmp_path / "rs", "squad")
    monkeypatch.setattr(hendrycks_math, "FILE", remote_for(write_math(tmp_path / "m")))
    TEXT_SOURCES.get("math").fetch(tmp_path / "rm")
    ex += TEXT_SOURCES.get("math").load(tmp_path / "rm")
    write_text_table(ex, tmp_path / "all.parquet")
    from clsuite.data.text.prepared_table import from_frame

    assert from_frame(read_text_table(tmp_path / "all.parquet")) == ex


def test_checksums_pinned_for_every_downloaded_file():
    """Every downloaded text file is pinned by sha256 and size, except Alpaca-GPT4 (git blob id)."""
    files = [*agnews.FILES.values(), *squad.FILES.values(), *boolq.FILES.values(), *gsm8k.FILES.values(),
             sciq.FILE, arc.FILE, hendrycks_math.FILE]
    for f in files:
        assert f.sha256 and len(f.sha256) == 64 and f.size, f.filename
    assert alpaca_gpt4.FILE.checksum is None and len(alpaca_gpt4.GIT_BLOB) == 40
    assert hashlib.sha256(b"").hexdigest() not in {f.sha256 for f in files}
