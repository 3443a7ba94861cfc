"""SQuAD v1.1 (Rajpurkar et al. 2016): extractive QA over Wikipedia paragraphs.

``train-v1.1.json`` (87 599 questions) and ``dev-v1.1.json`` (10 570; the test set is
hidden, so dev is the test side). Nested ``data[].paragraphs[].qas[]``; the prompt is
the paragraph, a blank line and ``Question: <question>``; the answer is the first
reference answer (``meta.answers`` holds all of them, dev has up to five). sha256 and size
from HF ``datasets/squad/dataset_infos.json``; the md5s torchtext pins agree.
"""

from __future__ import annotations

from pathlib import Path

from clsuite.data.download import RemoteFile
from clsuite.data.text.base import TextExample, TextSource, register_text_source
from clsuite.data.text.files import FIX, fetch_all, field_of, read_json, verified
from clsuite.core.errors import DataError

BASE = "https://rajpurkar.github.io/SQuAD-explorer/dataset/"
FILES = {
    "train": RemoteFile("train-v1.1.json", (BASE + "train-v1.1.json",), size=30288272,
                        sha256="3527663986b8295af4f7fcdff1ba1ff3f72d07d61a20f487cb238a6ef92fd955"),
    "validation": RemoteFile("dev-v1.1.json", (BASE + "dev-v1.1.json",), size=4854279,
                             sha256="95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9"),
}


def parse(path: Path, split: str, task: str = "squad") -> list[TextExample]:
    doc = read_json(path)
    out = []
    for a, article in enumerate(field_of(doc, "data", str(path), list)):
        title = field_of(article, "title", f"{path}: data[{a}]")
        for p, paragraph in enumerate(field_of(article, "paragraphs", f"{path}: data[{a}]", list)):
            where = f"{path}: data[{a}].paragraphs[{p}]"
            context = field_of(paragraph, "context", where)
            for q, qa in enumerate(field_of(paragraph, "qas", where, list)):
                wq = f"{where}.qas[{q}]"
                answers = field_of(qa, "answers", wq, list)
                if not answers:
                    raise DataError(f"{wq}: no reference answer; {FIX}")
                texts = [field_of(ans, "text", f"{wq}.answers[{i}]") for i, ans in enumerate(answers)]
                starts = [field_of(ans, "answer_start", f"{wq}.answers[{i}]", int) for i, ans in enumerate(answers)]
                out.append(TextExample(
                    id=field_of(qa, "id", wq), prompt=f"{context}\n\nQuestion: {field_of(qa, 'question', wq)}",
                    answer=texts[0], choices=None, label=None, task=task, split=split,
                    meta={"title": title, "answers": texts, "answer_starts": starts}))
    return out


class SQuAD(TextSource):
    name = "squad"
    description = "SQuAD v1.1 extractive QA, 87599 train / 10570 dev (dev as test)"
    citation = "rajpurkar2016squad"
    test_split = "validation"

    def fetch(self, raw_dir: Path) -> list[Path]:
        return fetch_all(list(FILES.values()), raw_dir)

    def load(self, raw_dir: Path) -> list[TextExample]:
        return [e for split, f in FILES.items() for e in parse(verified(raw_dir, f), split, self.name)]


register_text_source(SQuAD())
