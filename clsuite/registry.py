"""Name → component registries, extensible through Python entry points.

Modelled on timm's registry: built-ins register themselves on import with a
decorator; third-party packages add entries through the entry-point group
(e.g. ``[project.entry-points."clsuite.methods"] mymethod = "pkg.module"``). The
entry point's target is imported lazily the first time a registry is queried;
importing it must register the component (the module's decorators do that).
"""

from __future__ import annotations

import importlib
import inspect
from importlib.metadata import entry_points
from typing import Callable, Generic, Iterator, TypeVar

from clsuite.errors import RegistryError

T = TypeVar("T")


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
        self._loaded = False
        self._load_error: RegistryError | None = None

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
        """Import built-ins and entry points once; a failure is raised again on every query."""
        if self._load_error is not None:
            raise self._load_error
        if self._loaded:
            return
        self._loaded = True
        try:
            if self._builtins:
                importlib.import_module(self._builtins)
            for ep in entry_points(group=self.group):
                self._load_entry_point(ep)
        except RegistryError as exc:
            self._load_error = exc
            raise

    def _load_entry_point(self, ep) -> None:
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin package must say who it is
            raise RegistryError(
                f"entry point {ep.name!r} = {ep.value!r} in group {self.group!r} "
                f"failed to import: {exc!r}; fix or uninstall that package"
            ) from exc
        if inspect.ismodule(obj):
            # A module whose import registered the component under the entry point's name.
            if ep.name not in self._entries:
                raise RegistryError(
                    f"entry point {ep.name!r} = {ep.value!r} in group {self.group!r} "
                    f"did not register a {self.kind} named {ep.name!r}"
                )
            return
        if ep.name in self._entries and self._origin[ep.name] in (ep.module, ep.value):
            return  # the module registered itself on import; the entry point names it again
        self.register(ep.name, obj, origin=ep.value)

    def get(self, name: str) -> T:
        """Return the entry for ``name``; unknown names list the allowed ones."""
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(
                f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}"
            ) from None

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
