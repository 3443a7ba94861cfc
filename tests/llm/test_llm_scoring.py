"""Text scores: EM/F1 by hand against the SQuAD v1.1 protocol; ROUGE-L and BLEU equal the
maintained implementations; LLM record schema errors name the table and the column."""

from __future__ import annotations

import pandas as pd
import pytest
import sacrebleu
from rouge_score import rouge_scorer

from clsuite.core.errors import SchemaError
from clsuite.llm.schemas import LLM_RECORDS
from clsuite.llm.scoring import bleu, exact_match, normalize_answer, rouge_l, score_example, token_f1
from clsuite.core.parquet import read_table, write_table


def test_normalisation_follows_squad():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"  # punctuation removed, not spaced
    assert normalize_answer("an Apple a day") == "apple day"
    assert normalize_answer("  A\tTheory\n") == "theory"


def test_exact_match_by_hand():
    assert exact_match("the Denver Broncos.", "Denver Broncos") == 1.0
    assert exact_match("Denver", "Denver Broncos") == 0.0


def test_token_f1_by_hand():
    # pred tokens {denver, broncos, won}, ref {denver, broncos}: P = 2/3, R = 1, F1 = 0.8
    assert token_f1("Denver Broncos won", "the Denver Broncos") == pytest.approx(0.8)
    # multiset overlap: pred "a b b", ref "b b b c" -> common 2 b's: P = 2/2 (a is an article), R = 2/4
    assert token_f1("a b b", "b b b c") == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0 and token_f1("x", "y") == 0.0


@pytest.mark.parametrize("pred,ref", [("the cat sat on the mat", "a cat sat on a mat"),
                                      ("grandfather", "grandmother"), ("7", "7"), ("", "something"),
                                      ("Yes it is", "Yes")])
def test_rouge_and_bleu_equal_reference_implementations(pred, ref):
    expected_rouge = rouge_scorer.RougeScorer(["rougeL"]).score(ref, pred)["rougeL"].fmeasure
    assert rouge_l(pred, ref) == expected_rouge
    assert bleu(pred, ref) == pytest.approx(min(1.0, sacrebleu.sentence_bleu(pred, [ref]).score / 100))


def test_primary_score_is_exact_match_without_a_task_scorer():
    s = score_example("q", "Paris", {}, "paris.")
    assert s["score"] == s["exact_match"] == 1.0 and s["task_score"] != s["task_score"]


def _records() -> pd.DataFrame:
    return pd.DataFrame({
        "run_id": ["s/m/seed0"], "sequence": ["s"], "method": ["m"], "seed": [0], "stage": [0], "task": ["t"],
        "task_index": [0], "heldout": [False], "example_id": ["test-0"], "reference": ["a"], "generated": ["a"],
        "n_new_tokens": [1], "exact_match": [1.0], "f1": [1.0], "rouge_l": [1.0], "bleu": [1.0],
        "task_score": [float("nan")], "score": [1.0],
    }).astype({"seed": "int64", "stage": "int64", "task_index": "int64", "n_new_tokens": "int64"})


def test_records_roundtrip_and_schema_errors_name_table_and_column(tmp_path):
    df = _records()
    write_table(df, tmp_path / "ok.parquet", LLM_RECORDS)
    assert read_table(tmp_path / "ok.parquet", LLM_RECORDS).equals(df)
    bad = df.assign(f1=[1.5])
    with pytest.raises(SchemaError, match=r"(?s)'llm_records'.*column 'f1'"):
        write_table(bad, tmp_path / "bad.parquet", LLM_RECORDS)
    assert not (tmp_path / "bad.parquet").exists()  # nothing half-written
    with pytest.raises(SchemaError, match=r"(?s)'llm_records'.*heldout"):
        write_table(df.assign(task_index=[-1]), tmp_path / "bad.parquet", LLM_RECORDS)
    # a file that violates the schema is rejected on read too
    bad.to_parquet(tmp_path / "foreign.parquet", index=False)
    with pytest.raises(SchemaError, match=r"(?s)'llm_records'.*column 'f1'"):
        read_table(tmp_path / "foreign.parquet", LLM_RECORDS)
