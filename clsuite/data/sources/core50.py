"""CORe50 (Lomonaco & Maltoni 2017): 50 objects in 10 categories, 11 sessions, 128×128 PNG.

The official ``core50_128x128.zip`` (URL and md5 as in Avalanche 0.6.0,
``benchmarks/datasets/core50/core50_data.py``) is read in place; labels come from its
folder layout ``core50_128x128/s<session>/o<object>/C_<ss>_<oo>_<fff>.png`` (the
``paths.pkl``/``labels.pkl`` metadata files are not needed). Object o (1..50) belongs
to category (o − 1) // 5 (plug adapter, mobile phone, scissors, light bulb, can,
glass, ball, marker, cup, remote control).

Options: ``labels`` (``category``: 10 classes, default; ``object``: 50 classes),
``test_sessions`` (default 3, 7, 10: the paper's test sessions; every other session is
training data) and ``size`` (resize, default 128 = native). Per-row ``meta``:
``session`` and ``object`` (1-based). At 128 the 164 866 images take ~8.1 GB in memory with ``load``;
``prepare`` uses ``load_lazy`` and writes them chunk by chunk.
"""

from __future__ import annotations

import re
import zipfile
import zlib
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from clsuite.data.download import RemoteFile, download, verify
from clsuite.data.sources import ConfigurableSource, LabeledImages, LazyImages, SourceOptions, register_instance
from clsuite.data.sources.images import decode
from clsuite.core.errors import DataError

FILE = RemoteFile(
    "core50_128x128.zip", ("http://bias.csr.unibo.it/maltoni/download/core50/core50_128x128.zip",),
    md5="745f3373fed08d69343f1058ee559e13",
)
CATEGORIES = ["plug_adapter", "mobile_phone", "scissor", "light_bulb", "can", "glass", "ball", "marker", "cup",
              "remote_control"]  # order of Avalanche's name2cat = objects 1-5, 6-10, ...
MEMBER = re.compile(r"(?:^|/)s(\d+)/o(\d+)/[^/]+\.png$", re.IGNORECASE)
FIX = "delete it and rerun `clsuite fetch`"


class CORe50(ConfigurableSource):
    """CORe50 at 128×128 with the session-based official split."""

    class Options(SourceOptions):
        labels: Literal["category", "object"] = "category"
        test_sessions: tuple[int, ...] = (3, 7, 10)
        size: int = Field(128, ge=8, le=512)

        @field_validator("test_sessions")
        @classmethod
        def _sessions(cls, v: tuple[int, ...]) -> tuple[int, ...]:
            if not v or any(s < 1 or s > 11 for s in v) or len(set(v)) != len(v):
                raise ValueError("test_sessions must be distinct session numbers in 1..11")
            return tuple(sorted(v))

    citation = "lomonaco2017core50"
    raw_name = "core50"

    def fetch(self, raw_dir: Path) -> list[Path]:
        return [download(FILE, raw_dir)]

    def load(self, raw_dir: Path) -> LabeledImages:
        path = raw_dir / FILE.filename
        verify(path, FILE)
        return self.load_zip(path)

    def load_lazy(self, raw_dir: Path) -> LabeledImages:
        """As :meth:`load`, decoding only the rows asked for (prepare streams them to disk)."""
        path = raw_dir / FILE.filename
        verify(path, FILE)
        return self.load_zip(path, lazy=True)

    def load_zip(self, path: Path, lazy: bool = False) -> LabeledImages:
        size, test = self.opts.size, set(self.opts.test_sessions)
        rows = self._members(path)
        names = [name for name, _, _ in rows]
        if lazy:
            images = LazyImages((len(rows), 3, size, size), lambda r: self._decode(path, [names[i] for i in r]))
        else:
            images = self._decode(path, names)
        session = np.array([s for _, s, _ in rows], dtype=np.int64)
        obj = np.array([o for _, _, o in rows], dtype=np.int64)
        if self.opts.labels == "category":
            labels, classes = (obj - 1) // 5, list(CATEGORIES)
        else:
            labels, classes = obj - 1, [f"o{o}:{CATEGORIES[(o - 1) // 5]}" for o in range(1, 51)]
        split = np.where(np.isin(session, list(test)), "test", "train")
        return LabeledImages(images, labels, classes, split=split, meta={"session": session, "object": obj})

    @staticmethod
    def _members(path: Path) -> list[tuple[str, int, int]]:
        """(member name, session, object) of every s<session>/o<object>/*.png, sorted by name."""
        try:
            with zipfile.ZipFile(path) as zf:
                namelist = sorted(zf.namelist())
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
            raise DataError(f"{path}: not a complete zip file ({exc}); {FIX}") from None
        rows = []
        for name in namelist:
            m = MEMBER.search(name)
            if m:
                rows.append((name, int(m.group(1)), int(m.group(2))))
        if not rows:
            raise DataError(f"{path}: no s<session>/o<object>/*.png images inside; {FIX}")
        bad = sorted({o for _, _, o in rows if not 1 <= o <= 50})
        if bad:
            raise DataError(f"{path}: object numbers {bad[:5]} outside 1..50; {FIX}")
        return rows

    def _decode(self, path: Path, members: list[str]) -> np.ndarray:
        """uint8 (len(members), 3, size, size) of the named zip members, in that order."""
        size = self.opts.size
        images = np.empty((len(members), 3, size, size), dtype=np.uint8)
        try:
            with zipfile.ZipFile(path) as zf:
                for i, name in enumerate(members):
                    images[i] = decode(zf.read(name), f"{path}:{name}", size=size)
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise DataError(f"{path}: not a complete zip file ({exc}); {FIX}") from None
        return images


register_instance(CORe50("core50", description="CORe50, 10 categories, sessions 3/7/10 test, 3x128x128"))
register_instance(CORe50("core50_objects", labels="object",
                         description="CORe50, 50 objects, sessions 3/7/10 test, 3x128x128"))
register_instance(CORe50("core50_32", size=32, description="CORe50, 10 categories, sessions 3/7/10 test, 3x32x32"))
