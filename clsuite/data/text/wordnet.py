"""WordNet noun supersenses (Miller 1995; Ciaramita & Johnson 2003): gloss → lexicographer file.

Each noun synset of WordNet 3.0's ``data.noun`` becomes one example: the prompt is its
words and gloss (``dog, domestic dog, Canis familiaris: a member of the genus Canis…``),
the label its lexicographer file (``lex_filenum``), one of the 25 noun supersenses
``noun.act`` … ``noun.time`` (lexnames(5WN) numbers 04–28; the 51 ``noun.Tops`` unique
beginners, number 03, are left out). 82 064 glosses; no official split, so a stable
``test_fraction`` (default 0.2) of synsets, by a hash of the synset offset, is the test side.

``data.noun`` is parsed by hand from its documented format (wndb(5WN)): licence lines
start with two spaces; every other line is ``offset lex_filenum ss_type w_cnt (word
lex_id)×w_cnt p_cnt (ptr)×p_cnt | gloss``, ``w_cnt`` two hex digits, ``p_cnt`` three
decimal digits, a pointer four fields; ``offset`` is the line's byte offset in the file,
which the parser checks (a garbled or truncated file fails naming the line). ``fetch``
copies the Debian package ``wordnet-base`` (``/usr/share/wordnet/data.noun``), checked by
the md5 that package records (1:3.0-37); without that copy, ``load`` reads the Debian file
itself (same check), so the LLM track's background corpus needs no fetch.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field

from clsuite.data.download import RemoteFile, mismatch
from clsuite.data.text.base import TextExample, TextOptions, TextSource, hash_split, register_text_source
from clsuite.data.text.files import FIX, read_bytes
from clsuite.core.errors import DataError, FetchError
from clsuite.core.io import copy_file

SYSTEM_DIR = Path(os.environ.get("CLSUITE_WORDNET_DIR", "/usr/share/wordnet"))
DEBIAN_MD5 = "5be921c6e8381ec85d52c715f43f1f11"  # /var/lib/dpkg/info/wordnet-base.md5sums, 1:3.0-37
FILE = RemoteFile("data.noun", (f"file://{SYSTEM_DIR / 'data.noun'}",), md5=DEBIAN_MD5)
#: lexnames(5WN) 04..28: the 25 noun supersenses (03 noun.Tops is left out)
SUPERSENSES = ["act", "animal", "artifact", "attribute", "body", "cognition", "communication", "event", "feeling",
               "food", "group", "location", "motive", "object", "person", "phenomenon", "plant", "possession",
               "process", "quantity", "relation", "shape", "state", "substance", "time"]
FIRST_LEX = 4  # lex_filenum of noun.act
TOPS = 3


class WordNetOptions(TextOptions):
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    with_words: bool = True  # prompt = "words: gloss" (False: the gloss alone)


def parse_line(line: bytes, offset: int, where: str) -> tuple[int, list[str], str]:
    """(lex_filenum, words, gloss) of one synset line of ``data.noun``."""
    text = line.decode("utf-8", errors="strict")
    head, sep, gloss = text.partition(" | ")
    fields = head.split()
    try:
        if not sep or len(fields) < 6:
            raise ValueError("no ' | gloss' part or too few fields")
        if int(fields[0]) != offset or len(fields[0]) != 8:
            raise ValueError(f"synset_offset {fields[0]} is not the line's byte offset {offset:08d}")
        lex, ss_type, w_cnt = int(fields[1]), fields[2], int(fields[3], 16)
        if ss_type != "n":
            raise ValueError(f"ss_type {ss_type!r} is not 'n'")
        words = fields[4:4 + 2 * w_cnt:2]
        p_cnt = int(fields[4 + 2 * w_cnt])
        if len(words) != w_cnt or len(fields) != 5 + 2 * w_cnt + 4 * p_cnt:
            raise ValueError(f"{len(fields)} fields do not match w_cnt {w_cnt} and p_cnt {p_cnt}")
    except (ValueError, IndexError) as exc:
        raise DataError(f"{where}: not a data.noun synset line ({exc}); {FIX}") from None
    return lex, [w.replace("_", " ") for w in words], gloss.strip()


def parse(path: Path, test_fraction: float = 0.2, with_words: bool = True,
          task: str = "wordnet_supersense") -> list[TextExample]:
    data = read_bytes(path)
    if data and not data.endswith(b"\n"):
        raise DataError(f"{path}: does not end with a newline: truncated; {FIX}")
    out, offset = [], 0
    for n, line in enumerate(data.splitlines(keepends=True), start=1):
        start, offset = offset, offset + len(line)
        if line.startswith(b"  "):
            continue  # licence header
        try:
            lex, words, gloss = parse_line(line.rstrip(b"\n"), start, f"{path}: line {n}")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: line {n}: not UTF-8 ({exc}); {FIX}") from None
        if lex == TOPS:
            continue
        if not FIRST_LEX <= lex < FIRST_LEX + len(SUPERSENSES):
            raise DataError(f"{path}: line {n}: lex_filenum {lex:02d} is not a noun file (03-28); {FIX}")
        label = lex - FIRST_LEX
        key = f"{start:08d}"
        out.append(TextExample(
            id=key, prompt=f"{', '.join(words)}: {gloss}" if with_words else gloss, answer=SUPERSENSES[label],
            choices=list(SUPERSENSES), label=label, task=task, split=hash_split(key, test_fraction, "wordnet"),
            meta={"words": words, "lexname": f"noun.{SUPERSENSES[label]}"}))
    if not out:
        raise DataError(f"{path}: no noun synset line; {FIX}")
    return out


class WordNetSupersense(TextSource):
    name = "wordnet_supersense"
    description = "WordNet 3.0 noun glosses, 25-way supersense classification (Debian wordnet-base)"
    citation = "miller1995wordnet,ciaramita2003supersense"
    Options = WordNetOptions

    def fetch(self, raw_dir: Path) -> list[Path]:
        dest = raw_dir / FILE.filename
        system = SYSTEM_DIR / FILE.filename
        if not dest.exists():
            if not system.exists():
                raise FetchError(
                    f"{system}: missing; install the Debian package (`apt-get install wordnet-base`) or place "
                    f"WordNet 3.0's dict/data.noun (md5 {DEBIAN_MD5}) at {dest}, then rerun `clsuite fetch`")
            copy_file(system, dest)
        check(dest)
        return [dest]

    def load(self, raw_dir: Path) -> list[TextExample]:
        path = raw_dir / FILE.filename
        if not path.exists() and (SYSTEM_DIR / FILE.filename).exists():
            path = SYSTEM_DIR / FILE.filename  # the Debian copy itself (same md5 check): works offline unfetched
        path = check(path)
        return parse(path, self.opts.test_fraction, self.opts.with_words, self.name)


def check(path: Path) -> Path:
    if not path.exists():
        raise DataError(f"{path}: missing; run `clsuite fetch` first")
    problem = mismatch(path, FILE)
    if problem:
        raise DataError(f"{path}: {problem} (the Debian wordnet-base 1:3.0-37 copy); {FIX}")
    return path


register_text_source(WordNetSupersense())
