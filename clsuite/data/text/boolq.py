"""BoolQ (Clark et al. 2019): naturally occurring yes/no questions about a Wikipedia passage.

``train.jsonl`` (9 427) and ``dev.jsonl`` (3 270; the test labels are unpublished, so
dev is the test side), one ``{question, title, answer: bool, passage}`` per line. The
prompt is the passage, a blank line and ``Question: <question>?``; choices ``no``/``yes``
(label 0/1). sha256 and size from HF ``datasets/boolq/dataset_infos.json``.
"""

from __future__ import annotations

from pathlib import Path

from clsuite.data.download import RemoteFile
from clsuite.data.text.base import TextExample, TextSource, register_text_source
from clsuite.data.text.files import fetch_all, field_of, read_jsonl, verified

BASE = "https://storage.googleapis.com/boolq/"
FILES = {
    "train": RemoteFile("train.jsonl", (BASE + "train.jsonl",), size=6525813,
                        sha256="cc7a79d44479867e8323a7b0c5c1d82edf516ca34912201f9384c3a3d098d8db"),
    "validation": RemoteFile("dev.jsonl", (BASE + "dev.jsonl",), size=2238726,
                             sha256="ebc29ea3808c5c611672384b3de56e83349fe38fc1fe876fd29b674d81d0a80a"),
}
CHOICES = ["no", "yes"]


def parse(path: Path, split: str, task: str = "boolq") -> list[TextExample]:
    out = []
    for n, row in read_jsonl(path):
        where = f"{path}: line {n}"
        question = field_of(row, "question", where).strip()
        label = int(field_of(row, "answer", where, bool))
        out.append(TextExample(
            id=f"{split}-{len(out)}", prompt=f"{field_of(row, 'passage', where)}\n\nQuestion: {question}?",
            answer=CHOICES[label], choices=list(CHOICES), label=label, task=task, split=split,
            meta={"title": row.get("title", ""), "line": n}))
    return out


class BoolQ(TextSource):
    name = "boolq"
    description = "BoolQ yes/no questions on a passage, 9427 train / 3270 dev (dev as test)"
    citation = "clark2019boolq"
    test_split = "validation"

    def fetch(self, raw_dir: Path) -> list[Path]:
        return fetch_all(list(FILES.values()), raw_dir)

    def load(self, raw_dir: Path) -> list[TextExample]:
        return [e for split, f in FILES.items() for e in parse(verified(raw_dir, f), split, self.name)]


register_text_source(BoolQ())
