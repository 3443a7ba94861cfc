"""Tiny fake files in the official formats of the text corpora (for tests only).

Each writer follows the published layout (CSV columns, JSON nesting, archive member
names) and returns the path it wrote. :func:`serve_as` points a module's RemoteFile at
the fake through a ``file://`` URL with its real sha256 (computed here with hashlib), so
the real download + verification code runs.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

from clsuite.data.download import RemoteFile


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def remote_for(path: Path, name: str | None = None, **overrides) -> RemoteFile:
    """A RemoteFile serving ``path`` over file:// with its true sha256 and size."""
    fields = {"sha256": sha256(path), "size": path.stat().st_size, **overrides}
    return RemoteFile(name or path.name, (path.resolve().as_uri(),), **fields)


def truncate(path: Path, keep: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# -- AG News: headerless CSV, "class","title","description", all fields quoted -----------------


AGNEWS_ROWS = {
    "train": [("3", "Stocks rally", 'Shares rose, "strongly", on Monday.'),
              ("2", "Cup final", "The home side won 2-1."),
              ("1", "Summit ends", "Leaders agreed on a plan."),
              ("4", "New chip", "A faster processor\\was announced.")],
    "test": [("4", "Space probe", "It reached orbit."), ("2", "Marathon", "A record time.")],
}


def write_agnews(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, rows in AGNEWS_ROWS.items():
        path = folder / f"{split}.csv"
        with open(path, "w", newline="") as f:
            csv.writer(f, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(rows)
        out[split] = path
    return out


# -- SQuAD v1.1: {"data": [{"title", "paragraphs": [{"context", "qas": [...]}]}], "version"} ---


def write_squad(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    ctx = "Paris is the capital of France. It lies on the Seine."
    train = {"version": "1.1", "data": [{"title": "Paris", "paragraphs": [{"context": ctx, "qas": [
        {"id": "q1", "question": "What is the capital of France?", "answers": [{"answer_start": 0, "text": "Paris"}]},
        {"id": "q2", "question": "Which river?", "answers": [{"answer_start": 46, "text": "Seine"}]},
    ]}]}]}
    dev = {"version": "1.1", "data": [{"title": "Paris", "paragraphs": [{"context": ctx, "qas": [
        {"id": "d1", "question": "Where is Paris?", "answers": [
            {"answer_start": 24, "text": "France"}, {"answer_start": 20, "text": "of France"}]},
    ]}]}]}
    out = {"train": folder / "train-v1.1.json", "validation": folder / "dev-v1.1.json"}
    out["train"].write_text(json.dumps(train))
    out["validation"].write_text(json.dumps(dev))
    return out


# -- BoolQ: JSON Lines {question, title, answer: bool, passage} --------------------------------


def write_boolq(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rows = {
        "train": [{"question": "is the sky blue", "title": "Sky", "answer": True, "passage": "The sky is blue."},
                  {"question": "is ice hot", "title": "Ice", "answer": False, "passage": "Ice is frozen water."}],
        "validation": [{"question": "do fish swim", "title": "Fish", "answer": True, "passage": "Fish swim."}],
    }
    out = {"train": folder / "train.jsonl", "validation": folder / "dev.jsonl"}
    for split, path in out.items():
        path.write_text("".join(json.dumps(r) + "\n" for r in rows[split]))
    return out


# -- SciQ: SciQ.zip / "SciQ dataset-2 3"/{train,valid,test}.json -----------------------------


def sciq_row(i: int) -> dict:
    return {"question": f"Question {i}?", "distractor1": f"wrong {i}a", "distractor2": f"wrong {i}b",
            "distractor3": f"wrong {i}c", "correct_answer": f"right {i}", "support": "" if i % 2 else f"Fact {i}."}


def write_sciq(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "SciQ.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, rows in (("train", range(6)), ("valid", range(6, 8)), ("test", range(8, 11))):
            zf.writestr(f"SciQ dataset-2 3/{name}.json", json.dumps([sciq_row(i) for i in rows]))
        zf.writestr("__MACOSX/SciQ dataset-2 3/._train.json", b"\x00\x05")
    return path


# -- ARC: ARC-V1-Feb2018.zip / ARC-V1-Feb2018-2/ARC-{Easy,Challenge}/ARC-*-{Train,Dev,Test}.jsonl


def arc_row(qid: str, labels: str = "ABCD", key: str = "B") -> dict:
    return {"id": qid, "question": {"stem": f"Stem of {qid}?", "choices": [
        {"text": f"option {lab}", "label": lab} for lab in labels]}, "answerKey": key}


def write_arc(folder: Path, easy_train: list[dict] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "ARC-V1-Feb2018.zip"
    files = {
        ("Easy", "Train"): easy_train or [arc_row("E-1"), arc_row("E-2", "1234", "3"), arc_row("E-3", "ABC", "C")],
        ("Easy", "Dev"): [arc_row("E-4")],
        ("Easy", "Test"): [arc_row("E-5", "ABCDE", "E")],
        ("Challenge", "Train"): [arc_row("C-1", key="A")],
        ("Challenge", "Dev"): [arc_row("C-2")],
        ("Challenge", "Test"): [arc_row("C-3", key="D"), arc_row("C-4")],
    }
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ARC-V1-Feb2018-2/ARC_Corpus.txt", "a corpus sentence\n")
        for (subset, part), rows in files.items():
            base = f"ARC-V1-Feb2018-2/ARC-{subset}/ARC-{subset}-{part}"
            zf.writestr(base + ".jsonl", "".join(json.dumps(r) + "\n" for r in rows))
            zf.writestr(base + ".csv", "questionID,AnswerKey\n")
    return path


# -- GSM8K: JSON Lines {question, answer: "<solution>\n#### <number>"} --------------------------


def write_gsm8k(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rows = {
        "train": [{"question": "Tom has 3 apples and buys 4. How many?", "answer": "3+4=<<3+4=7>>7\n#### 7"},
                  {"question": "A car costs 1,000 dollars twice. Total?", "answer": "2*1000=2000\n#### 2,000"},
                  {"question": "Half of 9?", "answer": "9/2=4.5\n#### 4.5"}],
        "test": [{"question": "What is 10 - 15?", "answer": "10-15=-5\n#### -5"}],
    }
    out = {"train": folder / "train.jsonl", "test": folder / "test.jsonl"}
    for split, path in out.items():
        path.write_text("".join(json.dumps(r) + "\n" for r in rows[split]))
    return out


# -- MATH: MATH.tar / MATH/{train,test}/<subject>/<n>.json {problem, level, type, solution} -----


MATH_PROBLEMS = {
    "MATH/train/algebra/1.json": {"problem": "Solve $x+1=3$.", "level": "Level 1", "type": "Algebra",
                                  "solution": "So $x = \\boxed{2}$."},
    "MATH/train/algebra/2.json": {"problem": "Simplify.", "level": "Level 5", "type": "Algebra",
                                  "solution": "First $\\boxed{1}$ then $\\boxed{\\frac{1}{2}}$."},
    "MATH/train/number_theory/7.json": {"problem": "Which set?", "level": "Level ?", "type": "Number Theory",
                                        "solution": "The set is $\\boxed{\\{1, 2\\}}$."},
    "MATH/train/geometry/3.json": {"problem": "Area?", "level": "Level 3", "type": "Geometry",
                                   "solution": "The area is $\\fbox{4\\pi}$."},
    "MATH/train/geometry/4.json": {"problem": "No answer here.", "level": "Level 2", "type": "Geometry",
                                   "solution": "We cannot say."},
    "MATH/test/prealgebra/10.json": {"problem": "2+2?", "level": "Level 2", "type": "Prealgebra",
                                     "solution": "It is $\\boxed 4$."},
}


def write_math(folder: Path, problems: dict[str, dict] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "MATH.tar"
    with tarfile.open(path, "w") as tar:
        for name, obj in (problems or MATH_PROBLEMS).items():
            data = json.dumps(obj).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


# -- Alpaca-GPT4: a JSON list of {instruction, input, output} -----------------------------------


def write_alpaca(folder: Path, n: int = 40) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"instruction": f"Write word {i}.", "input": "" if i % 3 else f"context {i}", "output": f"word {i}"}
            for i in range(n)]
    path = folder / "alpaca_gpt4_data.json"
    path.write_text(json.dumps(rows, indent=4))
    return path
