"""Name -> typed entry registries, filled by decorators and discovered by importing every module of a package."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import pkgutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.config import TrainingConfig

_BASE_FIELDS = ("name", "builder", "description")
# The name an architecture gives its pretrained part: `--freeze-epochs` freezes the layers so named.
BACKBONE = "backbone"


@dataclass(frozen=True)
class Cost:
    """A model's size: parameters and forward GMACs per 96x96 image (the axes a scaling study plots), the side of its
    last spatial feature map (what its head sees), its conv layers (depth) and its most filters in one (width)."""

    parameters: int
    gmacs: float
    feature_map: int | None = None
    depth: int | None = None
    width: int | None = None


@dataclass(frozen=True)
class Entry:
    """One registered builder: its name, the function and the first line of its docstring."""

    name: str
    builder: Callable[..., Any]
    description: str

    @property
    def meta(self) -> dict[str, Any]:
        """The registered fields by name (callers that read `entry.meta[...]`)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in _BASE_FIELDS}


@dataclass(frozen=True)
class ArchitectureEntry(Entry):
    """An architecture: a builder of an uncompiled keras.Model ending in one sigmoid."""

    baseline: bool = False  # one of the notebook's models: `harness run baselines` trains it
    training: TrainingConfig | None = None  # its own recipe (None: TrainingConfig's defaults)
    cost: Callable[..., Cost] | None = None  # its cost without building it (None: measured on a built model)
    cost_tolerance: float = 0.0  # relative error of `cost`'s parameter count that the contract test allows
    cnn_point: Mapping[str, Any] | None = None  # the `cnn` keyword arguments it equals (a scaling study's base)
    test: bool = False  # registered by a test: no contract test runs over it


@dataclass(frozen=True)
class SearchSpaceEntry(Entry):
    """A search space: a function of a tuner's `Suggest` that returns a `Sample` or raises InvalidConfiguration."""

    widens: str = ""  # the architecture it varies; required (a never-built trial is stored under it)
    # Values a new study tries as its first trial, with every tuner: a known-sound point, so that a short search has
    # a good model early instead of whatever its first random draw costs (None: the tuner's own first draw).
    first: Mapping[str, Any] | None = None
    # Known-sound neighbours of `first` (each a few of its values changed: learning rate, width, augmentation
    # strength) that a clocked search tries next, cheapest first, before the tuner's own proposals.
    portfolio: tuple[Mapping[str, Any], ...] = ()
    test: bool = False


E = TypeVar("E", bound=Entry)


class Registry(Generic[E]):
    """A name -> entry map. Modules of `package` are imported on first use, so one file adds one entry."""

    def __init__(self, kind: str, package: str, entry_type: type[E]) -> None:
        self.kind = kind
        self.package = package
        self.entry_type = entry_type
        self._entries: dict[str, E] = {}
        self._discovered = False

    def register(self, name: str | None = None, **fields: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: register `builder` under `name` (default: its own name) with the entry type's fields."""

        def decorate(builder: Callable[..., Any]) -> Callable[..., Any]:
            key = name or builder.__name__
            if key in self._entries and self._entries[key].builder is not builder:
                raise HarnessError(f"{self.kind} {key!r} is registered twice")
            known = [f.name for f in dataclasses.fields(self.entry_type) if f.name not in _BASE_FIELDS]
            unknown = sorted(set(fields) - set(known))
            if unknown:
                raise HarnessError(
                    f"{self.kind} {key!r}: unknown field {', '.join(unknown)}; known: {', '.join(known)}"
                )
            self._check(key, fields)
            doc = (builder.__doc__ or "").strip().splitlines()
            self._entries[key] = self.entry_type(key, builder, doc[0] if doc else "", **fields)
            return builder

        return decorate

    def _check(self, key: str, fields: dict[str, Any]) -> None:
        if self.entry_type is SearchSpaceEntry and not (isinstance(fields.get("widens"), str) and fields["widens"]):
            raise HarnessError(
                f"search space {key!r} does not say which architecture it widens: register it with widens=NAME"
            )

    @contextlib.contextmanager
    def override(self) -> Iterator[Registry[E]]:
        """Register into a copy for the duration of a `with` block (tests): afterwards the entries are as before."""
        self.discover()  # snapshot after discovery, or the restore would drop the real entries
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

    def get(self, name: str) -> E:
        self.discover()
        if name not in self._entries:
            known = ", ".join(sorted(self._entries)) or "none"
            raise HarnessError(f"unknown {self.kind} {name!r}; registered: {known}")
        return self._entries[name]

    def names(self, **where: Any) -> list[str]:
        """Registered names, optionally only those whose fields match every `key=value` given."""
        self.discover()
        return sorted(n for n, e in self._entries.items() if all(getattr(e, k, None) == v for k, v in where.items()))

    def __iter__(self) -> Iterator[E]:
        self.discover()
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def __contains__(self, name: object) -> bool:
        self.discover()
        return name in self._entries


ARCHITECTURES: Registry[ArchitectureEntry] = Registry("architecture", "harness.architectures", ArchitectureEntry)
SEARCH_SPACES: Registry[SearchSpaceEntry] = Registry("search space", "harness.search_spaces", SearchSpaceEntry)


def build_model(name: str, input_shape: tuple[int, int, int] = (96, 96, 3), **kwargs: Any) -> Any:
    """Build the uncompiled keras.Model registered as `name`."""
    return ARCHITECTURES.get(name).builder(input_shape=input_shape, **kwargs)
