"""Bounded, strict YAML loading for every YAML file clsuite reads (params.yaml, dvc.lock).

Hand-written on top of PyYAML because ``yaml.safe_load`` executes no code but has no
limits: an alias bomb ("billion laughs", a few hundred bytes) becomes a structure that
every later walk (validation, hashing, ``json.dumps``) expands to 10^9 nodes; a
recursive alias (``a: &x [*x]``) becomes a cyclic list that ends in ``RecursionError``;
and a duplicate key silently keeps the last value (DVC refuses the same file). Neither
PyYAML nor ruamel offers an alias-expansion limit or a duplicate-key check for safe loading.

So a file is read in three steps, each bounded by the size of the file:

1. at most ``max_bytes`` bytes are read (a FIFO or ``/dev/zero`` cannot hang the read);
2. libyaml (or PyYAML's pure-Python parser) composes the node graph, in which an alias is
   a second reference to the anchored node, so composing costs what the text costs;
3. one walk over the graph, visiting each distinct node once, computes the size and depth
   the document has once aliases are expanded, and refuses recursive aliases, documents
   whose aliases add more than ``MAX_ALIAS_NODES`` nodes, nesting deeper than ``MAX_DEPTH``,
   and duplicate keys (named by key path and both lines).

Only then are Python objects constructed (``SafeConstructor``: plain data, no tags that
build objects). Aliases of normal size keep working. Every problem is a ParamsError that
names the file, the line or key path, and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from clsuite.core.errors import ParamsError

try:  # libyaml: faster, and its parser has a nesting limit of its own
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

MAX_BYTES = 8 * 1024 * 1024
#: nodes that aliases may add on top of the nodes written in the file
MAX_ALIAS_NODES = 100_000
#: nesting of mappings and sequences (params.yaml needs about 7)
MAX_DEPTH = 64

_MERGE = "tag:yaml.org,2002:merge"
_STR = "tag:yaml.org,2002:str"


def load_yaml(path: str | Path, *, max_bytes: int = MAX_BYTES) -> Any:
    """Read and parse the YAML file ``path`` (see the module docstring); ParamsError on any problem."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found; run clsuite from the repository root") from None
    except OSError as exc:
        raise ParamsError(f"{path}: cannot be read ({exc}); pass a readable file") from None
    if len(data) > max_bytes:
        raise ParamsError(f"{path}: larger than {max_bytes:,} bytes; this is not a params file clsuite can use "
                          "(check that the right file is passed)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParamsError(f"{path}: not UTF-8 text ({exc}); save it as UTF-8") from None
    return parse_yaml(text, str(path))


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML ``text`` (from ``source``, for messages) under the limits above."""
    loader = _Loader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.YAMLError as exc:
            raise ParamsError(_syntax_message(exc, source, text)) from None
        except RecursionError:  # the pure-Python composer on very deep flow nesting
            raise ParamsError(f"{source}: nested more than {MAX_DEPTH} levels deep; flatten it") from None
        if node is None:
            return None
        _check_graph(node, source)
        try:
            return loader.construct_document(node)
        except yaml.YAMLError as exc:
            raise ParamsError(_syntax_message(exc, source, text)) from None
    finally:
        loader.dispose()


def _syntax_message(exc: yaml.YAMLError, source: str, text: str) -> str:
    """One line: file, line and column, what is wrong, how to fix it."""
    if isinstance(exc, yaml.reader.ReaderError):
        char = exc.character if isinstance(exc.character, int) else ord(exc.character[:1] or "\0")
        return (f"{source}: character {exc.position}: not valid YAML: {exc.reason} (#x{char:04x}); "
                "remove it (is this a text file?)")
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    what = " ".join(str(f"{problem} ({context})" if context else problem).split())
    lines = text.splitlines()
    tab = mark is not None and mark.line < len(lines) and "\t" in lines[mark.line]
    hint = "indent with spaces: YAML does not allow tabs there" if tab else "fix the YAML syntax there"
    return f"{source}: {where}not valid YAML: {what}; {hint}"


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _key_text(key: yaml.Node) -> str:
    return str(key.value) if isinstance(key, yaml.ScalarNode) else "?"


def _children(node: yaml.Node) -> list[tuple[str, yaml.Node]]:
    """(path component, child) of a collection node; keys are children too (they cost nodes)."""
    if isinstance(node, yaml.SequenceNode):
        return [(str(i), child) for i, child in enumerate(node.value)]
    if isinstance(node, yaml.MappingNode):
        out = []
        for key, value in node.value:
            out += [("?", key), (_key_text(key), value)]
        return out
    return []


def _check_graph(root: yaml.Node, source: str) -> None:
    """Refuse recursive aliases, alias bombs, deep nesting and duplicate keys; each distinct
    node is visited once, so the walk costs what composing cost."""
    size: dict[int, int] = {}  # id(node) -> nodes once aliases are expanded
    height: dict[int, int] = {}
    on_path: set[int] = set()
    # iterative depth-first walk: (node, key path, children not yet visited)
    stack: list[tuple[yaml.Node, tuple[str, ...], list]] = []

    def enter(node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            _check_duplicates(node, path, source)
        on_path.add(id(node))
        stack.append((node, path, _children(node)[::-1]))

    enter(root, ())
    while stack:
        node, path, todo = stack[-1]
        if todo:
            part, child = todo.pop()
            if id(child) in on_path:
                where = ".".join(path + (part,)) or "the top level"
                raise ParamsError(
                    f"{source}: {where} (line {_line(node)}): recursive alias: the value anchored at line "
                    f"{_line(child)} contains an alias to itself; YAML values must not contain themselves, "
                    "remove that alias")
            if id(child) not in size:
                if isinstance(child, (yaml.SequenceNode, yaml.MappingNode)):
                    enter(child, path + (part,))
                else:
                    size[id(child)], height[id(child)] = 1, 0
            continue
        stack.pop()
        on_path.discard(id(node))
        kids = [child for _, child in _children(node)]
        size[id(node)] = 1 + sum(size[id(c)] for c in kids)
        height[id(node)] = 1 + max((height[id(c)] for c in kids), default=0)
        if height[id(node)] > MAX_DEPTH:
            raise ParamsError(f"{source}: line {_line(node)}: nested more than {MAX_DEPTH} levels deep (lists and "
                              "mappings inside each other, aliases expanded); flatten it")
    written = len(size)  # distinct nodes
    expanded = size[id(root)]
    if expanded - written > MAX_ALIAS_NODES:
        raise ParamsError(
            f"{source}: its aliases (*name) expand {written:,} written nodes to {expanded:,}, more than "
            f"{MAX_ALIAS_NODES:,} extra nodes (an alias bomb?); write the values out or use fewer nested aliases")


def _check_duplicates(node: yaml.MappingNode, path: tuple[str, ...], source: str) -> None:
    """Two equal keys in one mapping (``<<`` merges may override: that is what they are for)."""
    seen: dict[Any, yaml.Node] = {}
    constructor = yaml.constructor.SafeConstructor()
    for key, _ in node.value:
        if key.tag == _MERGE or not isinstance(key, yaml.ScalarNode):
            continue
        ident = _key_identity(key, constructor)
        first = seen.setdefault(ident, key)
        if first is not key:
            where = ".".join(path + (_key_text(key),))
            raise ParamsError(f"{source}: {where}: duplicate key (lines {_line(first)} and {_line(key)}); "
                              "keep only one of them")


def _key_identity(key: yaml.ScalarNode, constructor: yaml.constructor.SafeConstructor) -> Any:
    """What the key becomes in the Python mapping (``1``, ``0x1`` and ``true`` are one key there)."""
    if key.tag == _STR:
        return key.value
    try:
        value = constructor.construct_object(key)
        hash(value)
    except Exception:  # a key the constructor refuses later with its own message
        return ("unconstructed", key.tag, key.value)
    return value
