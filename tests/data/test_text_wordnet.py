"""WordNet noun supersenses: a tiny data.noun written in the wndb(5WN) format (licence
lines, byte offsets, hex word counts, pointers), garbled and truncated copies, and the
real Debian file when wordnet-base is installed."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from clsuite.data.download import RemoteFile
from clsuite.data.text import TEXT_SOURCES
from clsuite.data.text import wordnet
from clsuite.core.errors import DataError, FetchError

LICENCE = [b"  1 This software and database is being provided to you, the LICENSEE, by  \n",
           b"  2 Princeton University under the following license.  \n"]
#: (lex_filenum, words, pointers, gloss)
SYNSETS = [
    (3, ["entity"], [("~", "n")], "that which is perceived or known"),
    (5, ["dog", "domestic_dog", "Canis_familiaris"], [("@", "n"), ("#m", "n")],
     'a member of the genus Canis; "the dog barked all night"'),
    (28, ["noon", "twelve_noon", "high_noon", "midday", "noonday", "noontide"] + [f"w{i}" for i in range(11)], [],
     "the middle of the day"),
    (4, ["thing"], [("+", "v")], 'an action; "how could you do such a thing?"'),
    (13, ["apple"], [("@", "n")], "fruit with red or yellow or green skin"),
]


def synset_line(offset: int, lex: int, words: list[str], pointers: list[tuple[str, str]], gloss: str) -> bytes:
    """One data.noun line: offset lex_filenum n w_cnt(hex) word lex_id … p_cnt ptr… | gloss."""
    parts = [f"{offset:08d}", f"{lex:02d}", "n", f"{len(words):02x}"]
    for w in words:
        parts += [w, "0"]
    parts.append(f"{len(pointers):03d}")
    for sym, pos in pointers:
        parts += [sym, "00001740", pos, "0000"]
    return (" ".join(parts) + f" | {gloss}  \n").encode()


def write_data_noun(path: Path, synsets=SYNSETS) -> Path:
    data = b"".join(LICENCE)
    for lex, words, pointers, gloss in synsets:
        data += synset_line(len(data), lex, words, pointers, gloss)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_fake_data_noun_parsed_into_supersense_examples(tmp_path):
    path = write_data_noun(tmp_path / "data.noun")
    ex = wordnet.parse(path, test_fraction=0.5)
    assert len(ex) == 4  # noun.Tops (03) left out
    dog = ex[0]
    assert dog.prompt == 'dog, domestic dog, Canis familiaris: a member of the genus Canis; "the dog barked all night"'
    assert (dog.answer, dog.label, dog.meta["lexname"]) == ("animal", 1, "noun.animal")
    assert dog.id == f"{len(b''.join(LICENCE)) + len(synset_line(0, *SYNSETS[0])):08d}"  # the byte offset
    assert ex[1].answer == "time" and len(ex[1].meta["words"]) == 17  # w_cnt 0x11
    assert ex[2].answer == "act" and ex[3].answer == "food"
    assert dog.choices == wordnet.SUPERSENSES and len(wordnet.SUPERSENSES) == 25
    gloss_only = wordnet.parse(path, with_words=False)
    assert gloss_only[3].prompt == "fruit with red or yellow or green skin"
    assert [e.split for e in wordnet.parse(path, 0.5)] == [e.split for e in ex]  # a stable split


def test_garbled_offset_fields_and_truncation_name_the_line(tmp_path):
    path = write_data_noun(tmp_path / "data.noun")
    good = path.read_bytes()
    path.write_bytes(good.replace(b"00000", b"00001", 1))  # first synset's offset off by 100000
    with pytest.raises(DataError, match=rf"{path}: line 3: .*synset_offset .* is not the line's byte offset"):
        wordnet.parse(path)
    lines = good.splitlines(keepends=True)
    assert b" Canis_familiaris 0 002 " in lines[3]
    path.write_bytes(b"".join(lines[:3]) + lines[3].replace(b" 0 002 ", b" 0 004 ", 1) + b"".join(lines[4:]))
    with pytest.raises(DataError, match=r"line 4: .*fields do not match w_cnt 3 and p_cnt 4"):
        wordnet.parse(path)
    path.write_bytes(good[:-30])
    with pytest.raises(DataError, match=rf"{path}: does not end with a newline: truncated"):
        wordnet.parse(path)
    path.write_bytes(b"".join(lines[:-1]) + lines[-1].split(b" | ")[0] + b"\n")  # last line cut before its gloss
    with pytest.raises(DataError, match=r"line 7: .*no ' \| gloss' part"):
        wordnet.parse(path)


def test_fetch_copies_the_system_file_checked_by_md5(monkeypatch, tmp_path):
    system = write_data_noun(tmp_path / "usr" / "data.noun")
    import hashlib

    md5 = hashlib.md5(system.read_bytes()).hexdigest()
    monkeypatch.setattr(wordnet, "SYSTEM_DIR", system.parent)
    monkeypatch.setattr(wordnet, "FILE", RemoteFile("data.noun", (system.as_uri(),), md5=md5))
    source = TEXT_SOURCES.get("wordnet_supersense")
    assert source.fetch(tmp_path / "raw") == [tmp_path / "raw" / "data.noun"]
    assert len(source.load(tmp_path / "raw")) == 4
    monkeypatch.setattr(wordnet, "FILE", RemoteFile("data.noun", (system.as_uri(),), md5="0" * 32))
    with pytest.raises(DataError, match=r"raw/data.noun: md5 .* does not match the published 0{32}"):
        source.load(tmp_path / "raw")
    monkeypatch.setattr(wordnet, "SYSTEM_DIR", tmp_path / "nowhere")
    with pytest.raises(FetchError, match=r"apt-get install wordnet-base.*place WordNet 3.0's dict/data.noun"):
        source.fetch(tmp_path / "raw_empty")


REAL = Path("/usr/share/wordnet/data.noun")


@pytest.mark.skipif(not REAL.exists(), reason="Debian package wordnet-base not installed")
def test_real_debian_data_noun(tmp_path):
    source = TEXT_SOURCES.get("wordnet_supersense")
    source.fetch(tmp_path)  # checks the md5 the Debian package records
    ex = source.load(tmp_path)
    labels = Counter(e.answer for e in ex)
    assert set(labels) == set(wordnet.SUPERSENSES) and len(labels) == 25
    assert len(ex) > 50_000  # tens of thousands of glosses
    dog = next(e for e in ex if e.id == "02084071")  # dog.n.01 in WordNet 3.0
    assert dog.answer == "animal" and dog.prompt.startswith("dog, domestic dog, Canis familiaris: ")
    splits = Counter(e.split for e in ex)
    assert 0.15 < splits["test"] / len(ex) < 0.25
