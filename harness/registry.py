"""Name -> builder registries, filled by decorators and discovered by importing every module of a package."""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from harness.errors import HarnessError


@dataclass(frozen=True)
class Entry:
    """One registered builder with its metadata (defaults, description, tags)."""

    name: str
    builder: Callable[..., Any]
    description: str
    meta: dict[str, Any] = field(default_factory=dict)


class Registry:
    """A name -> Entry map. Modules of `package` are imported on first use, so one file adds one entry."""

    def __init__(self, kind: str, package: str) -> None:
        self.kind = kind
        self.package = package
        self._entries: dict[str, Entry] = {}
        self._discovered = False

    def register(self, name: str | None = None, **meta: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorate(builder: Callable[..., Any]) -> Callable[..., Any]:
            key = name or builder.__name__
            if key in self._entries and self._entries[key].builder is not builder:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            doc = (builder.__doc__ or "").strip().splitlines()
            self._entries[key] = Entry(key, builder, doc[0] if doc else "", dict(meta))
            return builder

        return decorate

    @contextlib.contextmanager
    def override(self) -> Iterator[Registry]:
        """Register into a copy for the duration of a `with` block (tests): afterwards the entries are as before."""
        self.discover()
        saved = dict(self._entries)
        try:
            yield self
        finally:
            self._entries = saved

    def discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        pkg = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self.package}.{info.name}")

    def get(self, name: str) -> Entry:
        self.discover()
        if name not in self._entries:
            known = ", ".join(sorted(self._entries)) or "none"
            raise HarnessError(f"unknown {self.kind} {name!r}; registered: {known}")
        return self._entries[name]

    def names(self, **where: Any) -> list[str]:
        """Registered names, optionally only those whose metadata matches every `key=value` given."""
        self.discover()
        return sorted(n for n, e in self._entries.items() if all(e.meta.get(k) == v for k, v in where.items()))

    def __iter__(self) -> Iterator[Entry]:
        self.discover()
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def __contains__(self, name: object) -> bool:
        self.discover()
        return name in self._entries


ARCHITECTURES = Registry("architecture", "harness.architectures")
SEARCH_SPACES = Registry("search space", "harness.search_spaces")


def build_model(name: str, input_shape: tuple[int, int, int] = (96, 96, 3), **kwargs: Any) -> Any:
    """Build the uncompiled keras.Model registered as `name`."""
    return ARCHITECTURES.get(name).builder(input_shape=input_shape, **kwargs)
