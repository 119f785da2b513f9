"""One registry idiom for every kind of plug-in: methods, model backends, scorers, embedders, chat
templates, routing modes, data readers and evaluation suites.

A ``Registry`` maps a short lower-case name (the YAML ``type:`` or option value) to an object (a
class or a function) with a one-line description, its docstring's first line. Each kind's registry
lives in the module that defines the kind's interface (``METHODS`` in ``mmcit/methods/base.py``,
...); ``KINDS`` below names them by import path, so that ``mmcit ls`` can list every kind without
this module importing any of them.

The built-in entries of a kind are registered when its package is imported: a registry created with
``package=`` imports every module of that package on its first lookup. Entries from outside mmcit
(the recipes in ``data_recipes/``, a user's own package) come in through the ``mmcit.plugins`` entry
point group: each entry point names a module (or a function) that registers what it provides when it
is imported (or called). mmcit's own code never imports a plug-in package by name.

Names are checked when they are registered: lower case (letters, digits, underscores, starting with a
letter), unique in their registry, and, for registries made with ``name_is_file=True`` (methods and
backends), equal to the name of the file (or subpackage) that defines the entry, so that
``method.type: lcia`` is always ``mmcit/methods/lcia.py``.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
import re
from contextlib import contextmanager
from typing import Any, Callable, Generic, Iterator, TypeVar

from mmcit.errors import ConfigError

T = TypeVar("T")
NAME = re.compile(r"^[a-z][a-z0-9_]*$")
PLUGIN_GROUP = "mmcit.plugins"

#: kind -> "module:attribute" of its registry (imported only when asked for).
KINDS: dict[str, str] = {
    "methods": "mmcit.methods.base:METHODS",
    "backends": "mmcit.models.base:BACKENDS",
    "scorers": "mmcit.evaluation.scoring:SCORERS",
    "embedders": "mmcit.routing.embedders:EMBEDDERS",
    "templates": "mmcit.data.templates:TEMPLATES",
    "routing": "mmcit.routing.router:ROUTING_MODES",
    "readers": "mmcit.data.readers:READERS",
    "suites": "mmcit.evaluation.suites:SUITES",
}

_plugins_loaded = False


def load_plugins() -> None:
    """Import (or call) every ``mmcit.plugins`` entry point once per process."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in sorted(importlib.metadata.entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        loaded = ep.load()
        if callable(loaded):
            loaded()


def first_line(doc: str | None) -> str:
    """The first non-empty line of a docstring ("" when there is none)."""
    for line in (doc or "").strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


class Registry(Generic[T]):
    """Name -> object for one kind of plug-in; see the module docstring for the rules.

    Args:
        kind: what the entries are, in the plural ("methods"); used in messages.
        package: the package whose modules hold the built-in entries (imported on first lookup).
        name_is_file: an entry's name must equal its module's (or subpackage's) name.
        default: the name used where a config leaves ``type`` out.
        loader: called once before the first lookup, after the package and the plug-ins (for
            entries that come from files, such as the suites in ``eval/``).
    """

    def __init__(self, kind: str, *, package: str | None = None, name_is_file: bool = False,
                 default: str | None = None, loader: Callable[["Registry[T]"], None] | None = None) -> None:
        self.kind = kind
        self.package = package
        self.name_is_file = name_is_file
        self.default = default
        self._loader = loader
        self._entries: dict[str, T] = {}
        self._docs: dict[str, str] = {}
        self._loaded = False

    # -- registering -------------------------------------------------------------------------------
    def register(self, obj: Any = None, *, name: str | None = None, doc: str | None = None) -> Any:
        """Register ``obj`` under ``name`` (default: ``obj.name``, else ``obj.__name__``).

        Usable as ``@REG.register``, ``@REG.register(name="x")`` or ``REG.register(obj, name="x")``.
        """
        if obj is None:
            return lambda o: self.register(o, name=name, doc=doc)
        key = name or getattr(obj, "name", None) or getattr(obj, "__name__", "")
        self._check_name(key, obj, check_file=self.name_is_file)
        self._add(key, obj, doc)
        return obj

    def _add(self, key: str, obj: Any, doc: str | None) -> None:
        if key in self._entries and self._entries[key] is not obj:
            raise ValueError(f"{self.kind}: {key!r} is registered already (by {_where(self._entries[key])})")
        self._entries[key] = obj
        self._docs[key] = doc if doc is not None else first_line(getattr(obj, "__doc__", None))

    def _check_name(self, key: str, obj: Any, check_file: bool) -> None:
        if not isinstance(key, str) or not NAME.match(key):
            raise ValueError(f"{self.kind}: name {key!r} of {_where(obj)} must be lower case "
                             "(letters, digits and underscores, starting with a letter)")
        if check_file:
            parts = str(getattr(obj, "__module__", "")).split(".")
            if key not in parts[1:]:
                raise ValueError(f"{self.kind}: {_where(obj)} is registered as {key!r}, which must be the "
                                 f"name of its file (or subpackage): {key}.py")

    @contextmanager
    def temporarily(self, obj: Any, name: str | None = None) -> Iterator[Any]:
        """Register ``obj`` for the duration of a ``with`` block, without the file-name rule (for tests
        and notebooks that define an entry inline)."""
        key = name or getattr(obj, "name", None) or obj.__name__
        self._ensure_loaded()
        self._check_name(key, obj, check_file=False)
        self._add(key, obj, None)
        try:
            yield obj
        finally:
            self._entries.pop(key, None)
            self._docs.pop(key, None)

    # -- looking up --------------------------------------------------------------------------------
    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if self.package is not None:
            pkg = importlib.import_module(self.package)
            for info in pkgutil.iter_modules(pkg.__path__):
                if not info.name.startswith("_"):
                    importlib.import_module(f"{self.package}.{info.name}")
        load_plugins()
        if self._loader is not None:
            self._loader(self)

    def get(self, name: str, key: str | None = None) -> T:
        """The entry ``name``; a ``ConfigError`` naming ``key`` (the config key) and the valid names
        otherwise."""
        self._ensure_loaded()
        if name not in self._entries:
            where = f"{key}: " if key else ""
            raise ConfigError(f"{where}unknown {self.kind[:-1] if self.kind.endswith('s') else self.kind} "
                              f"{name!r}; registered: {', '.join(sorted(self._entries)) or '(none)'}")
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return name in self._entries

    def names(self) -> list[str]:
        """Registered names, sorted."""
        self._ensure_loaded()
        return sorted(self._entries)

    def docs(self) -> dict[str, str]:
        """Name -> one-line description, sorted by name."""
        self._ensure_loaded()
        return {k: self._docs[k] for k in sorted(self._entries)}

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"


def _where(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def registry(kind: str) -> Registry:
    """The registry of ``kind`` (one of ``KINDS``), imported on demand."""
    if kind not in KINDS:
        raise ConfigError(f"unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
    module, attr = KINDS[kind].split(":")
    return getattr(importlib.import_module(module), attr)
