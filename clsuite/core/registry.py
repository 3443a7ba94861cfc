"""Name → component registries, extensible through Python entry points.

Modelled on timm's registry: built-ins register themselves on import with a
decorator; third-party packages add entries through the entry-point group
(e.g. ``[project.entry-points."clsuite.methods"] mymethod = "pkg.module"``). The
entry point's target is imported lazily the first time a registry is queried;
importing it must register the component (the module's decorators do that).

One broken plugin never takes the others down: an entry point whose import raises
(``SystemExit`` included), that registers nothing, or that tries to take a name
already registered (built-ins are loaded first, so they always win) is rolled back
and kept in :meth:`Registry.broken` with its package and error. ``clsuite list``
shows those; looking up such a name raises a :class:`RegistryError` naming the
package. ``KeyboardInterrupt`` is not caught: it is a real interrupt, and it exits
non-zero anyway. A plugin that calls ``os._exit`` cannot be stopped: installed
packages are trusted code (docs/security.md).
"""

from __future__ import annotations

import importlib
import inspect
import logging
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Callable, Generic, Iterator, TypeVar

from clsuite.core.errors import RegistryError

T = TypeVar("T")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokenPlugin:
    """An entry point that failed to load: what it was, where it came from, why."""

    name: str  # the entry point's name (the component name it was meant to register)
    value: str  # its target, ``module`` or ``module:attr``
    group: str  # its entry-point group
    package: str  # "distribution version" that declares it, or "unknown package"
    error: str  # one line

    def describe(self, kind: str) -> str:
        fix = "fix or uninstall that package"
        if self.package != UNKNOWN_PACKAGE:
            fix += f" (`pip uninstall {self.package.split()[0]}`)"
        return (f"{kind} {self.name!r} from package {self.package} (entry point {self.name} = {self.value!r} "
                f"in group {self.group!r}) failed to load: {self.error}; {fix}")


UNKNOWN_PACKAGE = "unknown package"


def _package(ep: EntryPoint) -> str:
    """``name version`` of the distribution that declares ``ep``."""
    dist = getattr(ep, "dist", None)
    try:
        name, ver = dist.name, dist.version
    except Exception:  # no distribution (an EntryPoint made by hand) or malformed METADATA
        return UNKNOWN_PACKAGE
    return f"{name} {ver}" if name else UNKNOWN_PACKAGE


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"called sys.exit({exc.code!r}) while being imported"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Registry(Generic[T]):
    """A named collection of components of one kind (methods, models, sources)."""

    def __init__(self, kind: str, group: str, builtins: str | None = None) -> None:
        """``kind``: human name for messages; ``group``: entry-point group;
        ``builtins``: module whose import registers the built-in entries."""
        self.kind = kind
        self.group = group
        self._builtins = builtins
        self._entries: dict[str, T] = {}
        self._origin: dict[str, str] = {}
        self._broken: list[BrokenPlugin] = []
        self._builtin_names: frozenset[str] = frozenset()
        self._loaded = False
        self._load_error: BaseException | None = None

    def register(self, name: str, entry: T, origin: str = "clsuite") -> T:
        """Add ``entry`` under ``name``; registering a different object twice is an error."""
        existing = self._entries.get(name)
        if existing is not None and existing is not entry:
            raise RegistryError(
                f"{self.kind} {name!r} is registered twice "
                f"(by {self._origin[name]} and {origin}); rename one of them"
            )
        self._entries[name] = entry
        self._origin[name] = origin
        return entry

    def _load(self) -> None:
        """Import built-ins, then every entry point, once. Built-ins failing to import is a
        bug in clsuite and is raised again on every query; a failing plugin is recorded."""
        if self._load_error is not None:
            raise self._load_error
        if self._loaded:
            return
        self._loaded = True
        if self._builtins:
            try:
                importlib.import_module(self._builtins)
            except Exception as exc:
                self._load_error = exc
                raise
        self._builtin_names = frozenset(self._entries)
        for ep in entry_points(group=self.group):
            self._load_entry_point(ep)

    def _load_entry_point(self, ep: EntryPoint) -> None:
        """Load one plugin; on any failure undo what it registered and record it as broken."""
        entries, origin = dict(self._entries), dict(self._origin)
        try:
            self._register_entry_point(ep)
        except (Exception, SystemExit) as exc:  # not KeyboardInterrupt: that one is the user's
            self._entries.clear()
            self._entries.update(entries)
            self._origin.clear()
            self._origin.update(origin)
            broken = BrokenPlugin(ep.name, ep.value, self.group, _package(ep), _one_line(exc))
            self._broken.append(broken)
            log.warning("clsuite: %s (see `clsuite list`)", broken.describe(self.kind))

    def _register_entry_point(self, ep: EntryPoint) -> None:
        if ep.name in self._builtin_names:
            raise RegistryError(f"the name is taken by the built-in {self.kind} from {self._origin[ep.name]}; "
                                "a plugin cannot replace it, give it another name")
        obj = ep.load()
        if inspect.ismodule(obj):
            # A module whose import registered the component under the entry point's name.
            if ep.name not in self._entries:
                raise RegistryError(f"its import did not register a {self.kind} named {ep.name!r}")
            return
        if ep.name in self._entries and self._origin[ep.name] in (ep.module, ep.value):
            return  # the module registered itself on import; the entry point names it again
        self.register(ep.name, obj, origin=ep.value)

    def broken(self) -> list[BrokenPlugin]:
        """Entry points of this group that failed to load, in the order they were tried."""
        self._load()
        return list(self._broken)

    def unknown(self, name: object) -> str:
        """Why ``name`` is not registered: the broken plugin that meant to provide it, or the
        list of available names."""
        self._load()
        for b in self._broken:
            if b.name == name:
                return b.describe(self.kind)
        msg = f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}"
        if self._broken:
            msg += f" (plugins that failed to load: {', '.join(sorted({b.name for b in self._broken}))})"
        return msg

    def get(self, name: str) -> T:
        """Return the entry for ``name``; unknown names list the allowed ones, names of broken
        plugins say which package failed and why."""
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(self.unknown(name)) from None

    def origin(self, name: str) -> str:
        self._load()
        return self._origin[name]

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def decorator(self, name: str) -> Callable[[T], T]:
        """``@REG.decorator("name")`` registers the decorated object."""

        def wrap(obj: T) -> T:
            return self.register(name, obj, origin=getattr(obj, "__module__", "clsuite"))

        return wrap
