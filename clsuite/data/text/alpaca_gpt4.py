"""Alpaca-GPT4 (Peng et al. 2023): the 52 002 Alpaca instructions answered by GPT-4.

``data/alpaca_gpt4_data.json`` of Instruction-Tuning-with-GPT-4/GPT-4-LLM: a JSON list of
``{instruction, input, output}``. The prompt is the instruction, plus ``Input:`` and the
input when there is one; the answer is GPT-4's output. There is no official split: a
stable ``test_fraction`` (default 0.05) of instructions, chosen by a hash of the
instruction and input, is the test side. No sha256, md5 or size is published: the URL
is pinned to commit 80cda62 and the file is checked against the git blob id the
repository's tree lists for it (``git hash-object``).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from clsuite.data.download import RemoteFile, download
from clsuite.data.text.base import TextExample, TextOptions, TextSource, hash_split, register_text_source
from clsuite.data.text.files import FIX, field_of, git_blob_sha1, read_json
from clsuite.core.errors import DataError

COMMIT = "80cda626ea305004be42426671c66efebbf22144"
FILE = RemoteFile(
    "alpaca_gpt4_data.json",
    (f"https://raw.githubusercontent.com/Instruction-Tuning-with-GPT-4/GPT-4-LLM/{COMMIT}/data/alpaca_gpt4_data.json",),
)
GIT_BLOB = "25508714b7879a1e5a6764ba7f979a980f549f1a"


class AlpacaOptions(TextOptions):
    test_fraction: float = Field(0.05, gt=0.0, lt=1.0)


def check_blob(path: Path, expected: str | None = None) -> Path:
    """DataError naming ``path`` unless its git blob id is ``expected`` (default GIT_BLOB)."""
    expected = expected or GIT_BLOB
    if not path.exists():
        raise DataError(f"{path}: missing; run `clsuite fetch` first")
    actual = git_blob_sha1(path)
    if actual != expected:
        raise DataError(f"{path}: git blob id {actual} does not match the published {expected}; {FIX}")
    return path


def parse(path: Path, test_fraction: float, task: str = "alpaca_gpt4") -> list[TextExample]:
    rows = read_json(path)
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a JSON list of instructions; {FIX}")
    out = []
    for i, row in enumerate(rows):
        where = f"{path}: [{i}]"
        instruction, extra = field_of(row, "instruction", where), field_of(row, "input", where)
        prompt = f"{instruction}\n\nInput:\n{extra}" if extra.strip() else instruction
        split = hash_split(f"{instruction}\x00{extra}", test_fraction, "alpaca_gpt4")
        out.append(TextExample(id=str(i), prompt=prompt, answer=field_of(row, "output", where), choices=None,
                               label=None, task=task, split=split, meta={"instruction": instruction, "input": extra}))
    return out


class AlpacaGPT4(TextSource):
    name = "alpaca_gpt4"
    description = "Alpaca-GPT4 instruction following, 52002 examples, stable hash split (5% test)"
    citation = "peng2023gpt4llm"
    Options = AlpacaOptions

    def fetch(self, raw_dir: Path) -> list[Path]:
        path = download(FILE, raw_dir)
        return [check_blob(path)]

    def load(self, raw_dir: Path) -> list[TextExample]:
        return parse(check_blob(raw_dir / FILE.filename), self.opts.test_fraction, self.name)


register_text_source(AlpacaGPT4())
