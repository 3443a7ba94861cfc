"""AG News topic classification (Zhang et al. 2015), the char-CNN release's CSV files.

``train.csv`` (120 000 rows) and ``test.csv`` (7 600): headerless, three quoted
columns: class index 1–4, title, description (``classes.txt``: World, Sports,
Business, Sci/Tech). The prompt is the title and the description on two lines, as in
the files (the release writes newlines as a backslash + ``n``; kept as is, like
torchtext and HF ``ag_news``). URLs: the copy of the release torchtext and HF
``ag_news`` read; sha256 and size from HF ``datasets/ag_news/dataset_infos.json``, the
test file's md5 also as torchtext pins it.
"""

from __future__ import annotations

from pathlib import Path

from clsuite.data.download import RemoteFile
from clsuite.data.text.base import TextExample, TextSource, register_text_source
from clsuite.data.text.files import FIX, fetch_all, read_csv_rows, verified
from clsuite.core.errors import DataError

BASE = "https://raw.githubusercontent.com/mhjabreel/CharCnn_Keras/master/data/ag_news_csv/"
FILES = {
    "train": RemoteFile("train.csv", (BASE + "train.csv",), size=29470338,
                        sha256="76a0a2d2f92b286371fe4d4044640910a04a803fdd2538e0f3f29a5c6f6b672e"),
    "test": RemoteFile("test.csv", (BASE + "test.csv",), size=1857427,
                       sha256="521465c2428ed7f02f8d6db6ffdd4b5447c1c701962353eb2c40d548c3c85699"),
}
CLASSES = ["World", "Sports", "Business", "Sci/Tech"]


def parse(path: Path, split: str, task: str = "agnews") -> list[TextExample]:
    out = []
    for n, (cls, title, description) in read_csv_rows(path, 3):
        if cls.strip() not in ("1", "2", "3", "4"):
            raise DataError(f"{path}: line {n}: class index {cls!r} is not 1-4; {FIX}")
        label = int(cls) - 1
        out.append(TextExample(id=f"{split}-{len(out)}", prompt=f"{title}\n{description}", answer=CLASSES[label],
                               choices=list(CLASSES), label=label, task=task, split=split,
                               meta={"title": title, "line": n}))
    return out


class AGNews(TextSource):
    name = "agnews"
    description = "AG News, 4-way topic classification, 120000 train / 7600 test (official split)"
    citation = "zhang2015charcnn"

    def fetch(self, raw_dir: Path) -> list[Path]:
        return fetch_all(list(FILES.values()), raw_dir)

    def load(self, raw_dir: Path) -> list[TextExample]:
        return [e for split, f in FILES.items() for e in parse(verified(raw_dir, f), split, self.name)]


register_text_source(AGNews())
