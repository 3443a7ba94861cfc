"""SciQ (Welbl et al. 2017): 13 679 crowdsourced science exam questions, 4 options each.

The AllenAI ``SciQ.zip`` holds ``SciQ dataset-2 3/{train,valid,test}.json`` (11 679 /
1 000 / 1 000), each a list of ``{question, distractor1-3, correct_answer, support}``.
The prompt is the supporting paragraph (when there is one), a blank line and
``Question: <question>``; the four options are shuffled with a seed fixed per question
(stable across runs). sha256 and size from HF ``datasets/sciq/dataset_infos.json``
(recorded for the older ``s3-us-west-2…/ai2-website/data/SciQ.zip`` address, kept as a
mirror).
"""

from __future__ import annotations

import random
from pathlib import Path

from clsuite.data.download import RemoteFile
from clsuite.data.text.base import TextExample, TextSource, register_text_source
from clsuite.data.text.files import FIX, decode, fetch_all, field_of, parse_json, verified, zip_members
from clsuite.core.errors import DataError

FILE = RemoteFile(
    "SciQ.zip",
    ("https://ai2-public-datasets.s3.amazonaws.com/sciq/SciQ.zip",
     "https://s3-us-west-2.amazonaws.com/ai2-website/data/SciQ.zip"),
    size=2821345, sha256="7f3312f6ac6b09970b32942d106a8c44ec0dad46a0369f17d635aff8e348a87c",
)
MEMBERS = {"train": "/train.json", "validation": "/valid.json", "test": "/test.json"}


def parse_split(rows: object, where: str, split: str, task: str = "sciq") -> list[TextExample]:
    if not isinstance(rows, list):
        raise DataError(f"{where}: expected a JSON list of questions; {FIX}")
    out = []
    for i, row in enumerate(rows):
        w = f"{where}: [{i}]"
        correct = field_of(row, "correct_answer", w)
        options = [correct] + [field_of(row, f"distractor{k}", w) for k in (1, 2, 3)]
        order = list(range(4))
        random.Random(f"sciq:{split}:{i}").shuffle(order)
        choices = [options[k] for k in order]
        support = row.get("support") or ""
        question = field_of(row, "question", w)
        prompt = f"{support}\n\nQuestion: {question}" if support.strip() else question
        out.append(TextExample(id=f"{split}-{i}", prompt=prompt, answer=correct, choices=choices,
                               label=order.index(0), task=task, split=split, meta={"support": support}))
    return out


def parse(path: Path, task: str = "sciq") -> list[TextExample]:
    out = []
    for split, (member, data) in zip_members(path, MEMBERS).items():
        where = f"{path}:{member}"
        out += parse_split(parse_json(decode(data, where), where), where, split, task)
    return out


class SciQ(TextSource):
    name = "sciq"
    description = "SciQ science questions, 4 options, 11679 train / 1000 valid / 1000 test (official split)"
    citation = "welbl2017sciq"

    def fetch(self, raw_dir: Path) -> list[Path]:
        return fetch_all([FILE], raw_dir)

    def load(self, raw_dir: Path) -> list[TextExample]:
        return parse(verified(raw_dir, FILE), self.name)


register_text_source(SciQ())
