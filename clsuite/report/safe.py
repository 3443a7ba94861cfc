"""Escaping of untrusted text for every report format, and the safe Markdown → HTML renderer.

Names, descriptions, run ids, failure reasons, citation keys and anything else that comes
from params.yaml, plugins or run records is *data*: a report shows it, never interprets it.

- Markdown (``index.md``, ``tables/*.md``): :func:`md_text` for prose and table cells,
  :func:`md_code` for a name shown as code, :func:`md_fence` for a fenced block.
- HTML (``index.html``): :func:`render_html` renders Markdown with raw HTML switched off
  (it shows as text) and keeps only links and images that stay inside the report folder;
  only PNG files under it are embedded.
- LaTeX (``tables/*.tex``): :func:`latex_escape` for every cell, header and caption,
  :func:`latex_label` for ``\\label``.
- CSV (``tables/*.csv``, ``plots/*.csv``): :func:`csv_cell` neutralises spreadsheet formulas.

Each escape leaves the ordinary text of a report (names of ``[A-Za-z0-9_.-]``, descriptions
without Markdown or HTML markup, numbers) byte for byte as it was.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from xml.etree.ElementTree import Element

import markdown
import pandas as pd
from markdown.treeprocessors import Treeprocessor

from clsuite.core.errors import ReportError

_NEWLINES = re.compile(r"\r\n|[\r\n\v\f\x85\u2028\u2029]")
#: a code span: a run of backticks, content, the same run (CommonMark and python-markdown agree)
_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)")
#: ``]`` that could close a link or image text (or a reference definition): followed by ``(``,
#: ``[`` or ``:``; a lone ``]`` (``[8.1, 100.0]``) cannot, and keeps its bytes
_LINK_CLOSE = re.compile(r"\](?=\s*[(\[:])")
_ENTITY = re.compile(r"&(?=#?[A-Za-z0-9]+;)")


def _text_segment(s: str) -> str:
    s = s.replace("\\", "\\\\").replace("`", "\\`").replace("|", "\\|")
    s = _ENTITY.sub("&amp;", s).replace("<", "&lt;")
    return _LINK_CLOSE.sub("\\\\]", s)


def md_text(value: object) -> str:
    """``value`` as inline Markdown text that renders as itself: no HTML, no link, no image,
    no table cell break, no line break. Code spans written in it stay code spans (their
    content is shown literally by every renderer); every other special character is escaped:
    ``\\``, an unpaired backtick, ``|``, ``<``, ``&`` starting an entity, and ``]`` where it
    could close a link. Emphasis characters (``*``, ``_``) are left alone: harmless, and
    ``replay_50`` keeps its bytes."""
    s = _NEWLINES.sub(" ", str(value))
    out, pos = [], 0
    for m in _CODE_SPAN.finditer(s):
        out += [_text_segment(s[pos:m.start()]), m.group(0).replace("|", "\\|")]
        pos = m.end()
    out.append(_text_segment(s[pos:]))
    return "".join(out)


def md_code(value: object) -> str:
    """``value`` as an inline code span (shown literally), or as :func:`md_text` if it holds a
    backtick or a line break."""
    s = str(value)
    if "`" in s or _NEWLINES.search(s):
        return md_text(s)
    return f"`{s}`"


def md_fence(body: str, info: str = "") -> list[str]:
    """Lines of a fenced code block holding ``body`` verbatim: the fence is longer than any run
    of backticks in ``body``, so nothing in it can close the block."""
    runs = [len(r) for r in re.findall(r"`+", body)]
    fence = "`" * max(3, max(runs, default=0) + 1)
    return [fence + info, body, fence]


def md_table_frame(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with :func:`md_text` applied to every header and every string cell."""
    out = df.map(lambda v: md_text(v) if isinstance(v, str) else v)
    out.columns = [md_text(c) for c in df.columns]
    return out


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}",
          ">": r"\textgreater{}", "|": r"\textbar{}", "±": r"$\pm$"}
_LATEX_RE = re.compile("|".join(map(re.escape, _LATEX)))


def latex_escape(value: object) -> str:
    """``value`` as LaTeX text that typesets as itself: every special character escaped in one
    pass (no ``\\input``, no comment, no math), line breaks as spaces, ``±`` as ``$\\pm$``."""
    return _LATEX_RE.sub(lambda m: _LATEX[m.group(0)], _NEWLINES.sub(" ", str(value)))


def latex_label(value: str) -> str:
    """A ``\\label`` key: characters other than ``[A-Za-z0-9_.:-]`` become ``-``."""
    return re.sub(r"[^A-Za-z0-9_.:-]", "-", value)


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+|inf|nan)(?:[eE][-+]?\d+)?(?: ± (?:\d+\.?\d*|inf|nan))?")


def csv_cell(value: object) -> object:
    """A string that a spreadsheet would run as a formula (starts with ``= + - @``, tab or a line
    break, and is not a plain number such as ``-3.2`` or ``-3.2 ± 1.0``) gets a leading ``'``
    (OWASP's advice); anything else is returned unchanged."""
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def to_csv(df: pd.DataFrame) -> str:
    """``df`` as CSV (no index) with :func:`csv_cell` applied to every header and cell."""
    out = df.map(csv_cell)
    out.columns = [csv_cell(c) for c in df.columns]
    return out.to_csv(index=False)


# -- HTML ---------------------------------------------------------------------------------------

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_IGNORED_BY_BROWSERS = re.compile(r"[\x00-\x20\x7f]")  # browsers drop these inside URLs


def local_target(url: str, base: Path) -> Path | None:
    """The file a relative ``url`` of a report in ``base`` points to, if it stays inside
    ``base`` (symlinks resolved); None for a URL with a scheme (``javascript:``, ``file:``,
    ``data:``, ``https:``...), an absolute or protocol-relative path, a backslash, or a path
    that leaves ``base``. A bare ``#fragment`` points to ``base`` itself."""
    u = _IGNORED_BY_BROWSERS.sub("", url)
    if not u or _SCHEME.match(u) or u.startswith("/") or "\\" in u:
        return None
    path = re.split(r"[?#]", u, maxsplit=1)[0]
    root = base.resolve()
    target = (root / path).resolve()
    return target if target == root or target.is_relative_to(root) else None


def _neutralise(el: Element, text: str | None) -> None:
    """Turn a link or image into a plain ``<span>`` holding its text."""
    tail = el.tail
    el.clear()
    el.tag, el.text, el.tail = "span", text, tail


class _LocalOnly(Treeprocessor):
    """Links stay only if they point inside the report folder; PNG images inside it are
    embedded as data URIs, a missing one is a :class:`ReportError`; any other image or link
    is reduced to its text."""

    def __init__(self, md: markdown.Markdown, base: Path) -> None:
        super().__init__(md)
        self.base = base

    def run(self, root: Element) -> None:
        for el in list(root.iter()):
            if el.tag == "a":
                if local_target(el.get("href", ""), self.base) is None:
                    _neutralise(el, "".join(el.itertext()))
            elif el.tag == "img":
                src = el.get("src", "")
                target = local_target(src, self.base)
                if target is None or target == self.base.resolve() or target.suffix != ".png":
                    _neutralise(el, el.get("alt"))
                    continue
                if not target.is_file():
                    raise ReportError(
                        f"{self.base / src}: the report shows this figure but the file is missing; rebuild the "
                        "report with `clsuite report` (or `dvc repro report`), which writes every figure again")
                el.set("src", "data:image/png;base64," + base64.b64encode(target.read_bytes()).decode())


def render_html(text: str, base: Path) -> str:
    """HTML body of the Markdown ``text`` of a report in folder ``base``: tables and fenced
    code rendered; raw HTML is not passed through (it shows as text); links and images are
    kept only inside ``base`` (see :class:`_LocalOnly`)."""
    md = markdown.Markdown(extensions=["tables", "fenced_code"])
    md.preprocessors.deregister("html_block")
    md.inlinePatterns.deregister("html")
    md.treeprocessors.register(_LocalOnly(md, base), "local_only", 5)
    return md.convert(text)
