"""GSM8K (Cobbe et al. 2021): grade-school maths word problems with worked solutions.

``grade_school_math/data/{train,test}.jsonl`` of openai/grade-school-math (7 473 / 1 319),
one ``{question, answer}`` per line; the solution ends with ``#### <final answer>``.
The answer is the text after the last ``####`` with thousands separators removed (as
the repository's own ``extract_answer``); the worked solution goes to ``meta``. The URLs
are pinned to commit 3101c7d; no checksum is published: the sha256s are of the files at
that commit (the test file's value matches an independent public pin).
"""

from __future__ import annotations

from pathlib import Path

from clsuite.data.download import RemoteFile
from clsuite.data.text.base import TextExample, TextSource, register_text_source
from clsuite.data.text.files import FIX, fetch_all, field_of, read_jsonl, verified
from clsuite.core.errors import DataError

COMMIT = "3101c7d5072418e28b9008a6636bde82a006892c"
BASE = f"https://raw.githubusercontent.com/openai/grade-school-math/{COMMIT}/grade_school_math/data/"
FILES = {
    "train": RemoteFile("train.jsonl", (BASE + "train.jsonl",), size=4166206,
                        sha256="17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465"),
    "test": RemoteFile("test.jsonl", (BASE + "test.jsonl",), size=749738,
                       sha256="3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14"),
}


def final_answer(solution: str, where: str) -> str:
    """The text after the last ``####``, stripped, without thousands separators."""
    if "####" not in solution:
        raise DataError(f"{where}: the answer has no '#### <final answer>' line; {FIX}")
    answer = solution.rsplit("####", 1)[1].strip().replace(",", "")
    if not answer:
        raise DataError(f"{where}: nothing after '####'; {FIX}")
    return answer


def parse(path: Path, split: str, task: str = "gsm8k") -> list[TextExample]:
    out = []
    for n, row in read_jsonl(path):
        where = f"{path}: line {n}"
        solution = field_of(row, "answer", where)
        out.append(TextExample(id=f"{split}-{len(out)}", prompt=field_of(row, "question", where),
                               answer=final_answer(solution, where), choices=None, label=None, task=task,
                               split=split, meta={"solution": solution}))
    return out


class GSM8K(TextSource):
    name = "gsm8k"
    description = "GSM8K maths word problems, 7473 train / 1319 test (official split), numeric answer"
    citation = "cobbe2021gsm8k"

    def fetch(self, raw_dir: Path) -> list[Path]:
        return fetch_all(list(FILES.values()), raw_dir)

    def load(self, raw_dir: Path) -> list[TextExample]:
        return [e for split, f in FILES.items() for e in parse(verified(raw_dir, f), split, self.name)]


register_text_source(GSM8K())
