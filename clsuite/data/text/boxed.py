r"""The content of the last ``\boxed{…}`` in a LaTeX solution (MATH's answer convention).

Like the MATH repository's ``last_boxed_only_string``: the last ``\boxed``, else the last
``\fbox``. Unlike it, braces are matched LaTeX-aware: an escaped brace (``\{``, ``\}``)
does not open or close a group, and ``\\`` is a line break, not an escape, so
``\boxed{\{1, 2\}}`` gives ``\{1, 2\}``. The brace-less form ``\boxed 5`` gives the
text up to the next ``$`` (or the end).
"""

from __future__ import annotations

import re

_COMMAND = re.compile(r"\\(boxed|fbox)(?![A-Za-z])")


def last_boxed(text: str) -> str | None:
    r"""The content of the last ``\boxed`` (else ``\fbox``) in ``text``; None if there is
    none or its braces never close."""
    hits = [m for m in _COMMAND.finditer(text)]
    boxed = [m for m in hits if m.group(1) == "boxed"] or hits
    if not boxed:
        return None
    start = boxed[-1].end()
    rest = text[start:]
    stripped = rest.lstrip()
    if not stripped.startswith("{"):
        content = stripped.split("$", 1)[0].strip()
        return content or None
    return _group(text, start + len(rest) - len(stripped))


def _group(text: str, open_at: int) -> str | None:
    """The text inside the brace group opening at ``text[open_at] == "{"``."""
    depth, i = 0, open_at
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2  # a control symbol: \{ \} \\ \$ … never opens or closes a group
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1:i]
        i += 1
    return None
