"""ARC, the AI2 Reasoning Challenge (Clark et al. 2018): grade-school science questions.

The official ``ARC-V1-Feb2018.zip`` (680 MB, nearly all of it the ARC corpus, unused
here) holds ``ARC-V1-Feb2018-2/ARC-{Easy,Challenge}/ARC-*-{Train,Dev,Test}.jsonl``: one
``{id, question: {stem, choices: [{text, label}]}, answerKey}`` per line, 3–5 options
labelled A–E or 1–5. ``arc_easy`` (2251 / 570 / 2376) and ``arc_challenge`` (1119 / 299
/ 1172) share the raw folder ``arc``. sha256 and size from HF
``datasets/ai2_arc/dataset_infos.json`` (recorded for the older
``s3-us-west-2…/ai2-website/data/`` address, kept as a mirror).
"""

from __future__ import annotations

from pathlib import Path

from clsuite.data.download import RemoteFile
from clsuite.data.text.base import TextExample, TextSource, register_text_source
from clsuite.data.text.files import FIX, decode, fetch_all, field_of, parse_jsonl, verified, zip_members
from clsuite.core.errors import DataError

FILE = RemoteFile(
    "ARC-V1-Feb2018.zip",
    ("https://ai2-public-datasets.s3.amazonaws.com/arc/ARC-V1-Feb2018.zip",
     "https://s3-us-west-2.amazonaws.com/ai2-website/data/ARC-V1-Feb2018.zip"),
    size=680841265, sha256="6d2d5ab50b2ceec6ba5f79c921be77cf2de712ea25a2b3f4fff3acc101cecfa0",
)
SPLIT_FILES = {"train": "Train", "validation": "Dev", "test": "Test"}


def members(subset: str) -> dict[str, str]:
    """split → member-name suffix for ``subset`` ("Easy" or "Challenge")."""
    return {split: f"/ARC-{subset}/ARC-{subset}-{part}.jsonl" for split, part in SPLIT_FILES.items()}


def parse_split(text: str, where: str, split: str, task: str) -> list[TextExample]:
    out = []
    for n, row in parse_jsonl(text, where):
        w = f"{where}: line {n}"
        question = field_of(row, "question", w, dict)
        options = field_of(question, "choices", f"{w}: question", list)
        labels = [field_of(c, "label", f"{w}: choice {i}") for i, c in enumerate(options)]
        texts = [field_of(c, "text", f"{w}: choice {i}") for i, c in enumerate(options)]
        key = field_of(row, "answerKey", w)
        if key not in labels:
            raise DataError(f"{w}: answerKey {key!r} is not one of the choice labels {labels}; {FIX}")
        label = labels.index(key)
        out.append(TextExample(id=field_of(row, "id", w), prompt=field_of(question, "stem", f"{w}: question"),
                               answer=texts[label], choices=texts, label=label, task=task, split=split,
                               meta={"choice_labels": labels, "answer_key": key}))
    return out


def parse(path: Path, subset: str, task: str) -> list[TextExample]:
    out = []
    for split, (member, data) in zip_members(path, members(subset)).items():
        where = f"{path}:{member}"
        out += parse_split(decode(data, where), where, split, task)
    return out


class ARC(TextSource):
    citation = "clark2018arc"
    raw_name = "arc"
    subset = ""

    def fetch(self, raw_dir: Path) -> list[Path]:
        return fetch_all([FILE], raw_dir)

    def load(self, raw_dir: Path) -> list[TextExample]:
        return parse(verified(raw_dir, FILE), self.subset, self.name)


class ARCEasy(ARC):
    name = "arc_easy"
    subset = "Easy"
    description = "ARC-Easy science questions, 2251 train / 570 dev / 2376 test (official split)"


class ARCChallenge(ARC):
    name = "arc_challenge"
    subset = "Challenge"
    description = "ARC-Challenge science questions, 1119 train / 299 dev / 1172 test (official split)"


register_text_source(ARCEasy())
register_text_source(ARCChallenge())
