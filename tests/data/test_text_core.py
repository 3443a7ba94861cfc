"""The text example, the prepared table's schema, the \\boxed{} extractor, stable splits,
the registry and `clsuite list text-sources`."""

from __future__ import annotations

import pandas as pd
import pytest

from clsuite.cli import main
from clsuite.data.text import TEXT_SOURCES, TextExample, from_frame, read_text_table, to_frame, write_text_table
from clsuite.data.text.base import hash_split, stable_seed, subsample
from clsuite.data.text.boxed import last_boxed
from clsuite.core.errors import DataError, RegistryError, SchemaError


def ex(i: int = 0, **kw) -> TextExample:
    fields = dict(id=f"e{i}", prompt=f"p{i}", answer="b", choices=["a", "b"], label=1, task="t", split="train",
                  meta={"k": [i, "é"]})
    fields.update(kw)
    return TextExample(**fields)


def test_example_checks_label_answer_and_split():
    with pytest.raises(DataError, match=r"t/train/e0: label 2 needs choices"):
        ex(label=2)
    with pytest.raises(DataError, match=r"answer 'a' is not choices\[1\] 'b'"):
        ex(answer="a")
    with pytest.raises(DataError, match=r"split must be one of train, validation, test"):
        ex(split="dev")
    assert ex(choices=None, label=None, answer="free text").label is None


def test_table_round_trip_and_atomic_write(tmp_path):
    rows = [ex(0), ex(1, choices=None, label=None, answer="42", split="test", meta={})]
    path = tmp_path / "t.parquet"
    write_text_table(rows, path)
    df = read_text_table(path)
    assert list(df.columns) == ["task", "split", "id", "prompt", "answer", "choices", "label", "meta"]
    assert from_frame(df) == rows
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]  # no temp file left behind


@pytest.mark.parametrize("change, column", [
    (lambda df: df.assign(split=["train", "dev"]), "split"),
    (lambda df: df.assign(id=["e0", "e0"]), "id"),
    (lambda df: df.assign(meta=["{}", "[1]"]), "meta"),
    (lambda df: df.assign(label=pd.array([5, None], dtype="Int64")), "label"),
])
def test_schema_rejects_bad_tables_naming_the_column(tmp_path, change, column):
    df = change(to_frame([ex(0), ex(1, choices=None, label=None, answer="x")]))
    with pytest.raises(SchemaError, match=r"bad.parquet: table 'text_examples' fails its schema") as err:
        write_text_table(df, tmp_path / "bad.parquet")
    assert column in str(err.value) or "label must index into choices" in str(err.value)
    assert not (tmp_path / "bad.parquet").exists()


def test_truncated_table_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "t.parquet"
    write_text_table([ex(0)], path)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(SchemaError, match=rf"{path}: not a readable Parquet file"):
        read_text_table(path)


@pytest.mark.parametrize("text, expected", [
    (r"so $x=\boxed{5}$", "5"),
    (r"$\boxed{1}$ and finally $\boxed{\frac{a}{b}}$", r"\frac{a}{b}"),
    (r"$\boxed{\{1,2\}}$", r"\{1,2\}"),
    (r"$\boxed{\left\{ x \right.}$", r"\left\{ x \right."),  # an unbalanced escaped brace is not a group
    (r"$\boxed{a\\{b}}$", r"a\\{b}"),  # \\ is a line break, the brace after it is real
    (r"$\boxed {7}$", "7"),
    (r"$\boxed 4$.", "4"),
    (r"$\fbox{9}$", "9"),
    (r"$\fbox{9}$ then $\boxed{3}$", "3"),
    (r"$\boxed{\text{(C)}}$", r"\text{(C)}"),
    (r"no box here", None),
    (r"$\boxed{unclosed", None),
    (r"$\boxedx{1}$", None),  # another command, not \boxed
])
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def test_hash_split_is_stable_and_near_the_fraction():
    keys = [str(i) for i in range(4000)]
    splits = [hash_split(k, 0.25, "s") for k in keys]
    assert splits == [hash_split(k, 0.25, "s") for k in keys]
    assert 0.22 < splits.count("test") / len(keys) < 0.28
    assert splits != [hash_split(k, 0.25, "other") for k in keys]
    assert stable_seed(1, "a") == stable_seed(1, "a") != stable_seed(2, "a")


def test_subsample_keeps_file_order_and_is_seeded():
    rows = [ex(i) for i in range(50)]
    a, b = subsample(rows, 10, "x"), subsample(rows, 10, "x")
    assert a == b and [r.id for r in a] == sorted((r.id for r in a), key=lambda s: int(s[1:]))
    assert subsample(rows, 10, "y") != a and subsample(rows, None, "x") == rows


def test_registry_and_cli_list(capsys):
    names = TEXT_SOURCES.names()
    for name in ["agnews", "squad", "sciq", "boolq", "arc_easy", "arc_challenge", "gsm8k", "math", "alpaca_gpt4",
                 "reasoning_gym", "rg_basic_arithmetic", "rg_gsm_symbolic", "rg_family_relationships",
                 "rg_syllogism", "wordnet_supersense"]:
        assert name in names
        assert TEXT_SOURCES.get(name).citation
    with pytest.raises(RegistryError, match=r"unknown text source 'imdb'; available: agnews"):
        TEXT_SOURCES.get("imdb")
    assert main(["list", "text-sources"]) == 0
    out = capsys.readouterr().out
    assert "wordnet_supersense" in out and "rg_syllogism" in out and "SQuAD v1.1" in out


def test_every_source_citation_has_a_bibtex_entry():
    from clsuite.report.citations import ENTRIES

    for name in TEXT_SOURCES.names():
        for key in TEXT_SOURCES.get(name).citation.split(","):
            assert key in ENTRIES, f"{name}: no BibTeX entry {key!r}"
