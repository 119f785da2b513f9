"""Data readers: how a run's ``data:`` block becomes the tasks of a stream.

``data.source`` names a registered ``Reader``. mmcit itself registers none: the recipes in
``data_recipes/`` do (``coin`` reads CoIN's file layout, ``synthetic`` generates the built-in
benchmark in that layout and reads it back), through the ``mmcit.plugins`` entry point.

A reader that reads a CoIN-style layout (``<instruction_root>/<variant>/<task>/{train,test}.json``)
also offers the per-task interface of ``LayoutReader``, which the data checker and the answer
scorer use.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from mmcit.registry import Registry

if TYPE_CHECKING:
    from mmcit.data.config import DataConfig
    from mmcit.data.sample import TaskData
    from mmcit.data.stream import StreamData

READERS: Registry[type["Reader"]] = Registry("readers")


class Reader:
    """Base of the data readers: ``validate`` (values only), ``check`` (paths), ``read``."""

    name: ClassVar[str] = ""

    def validate(self, cfg: "DataConfig") -> None:
        """Raise ``ConfigError`` for settings this reader cannot use (no file is opened)."""

    def check(self, cfg: "DataConfig") -> list[str]:
        """Problems with the data paths of ``cfg``, one line each (for ``mmcit validate``)."""
        return []

    def read(self, cfg: "DataConfig", cache_dir: Path, log: Callable[[str], None]) -> "StreamData":
        """Every task of the stream, validated record by record before any work starts."""
        raise NotImplementedError


class LayoutReader(Reader):
    """A reader of a layout of per-task train and test files (CoIN's
    ``<root>/<variant>/<task>/{train,test}.json`` unless the reader says otherwise), task by task."""

    #: The layout's tasks, in the suite's order, and the scorer of each.
    task_scorers: ClassVar[dict[str, str]] = {}
    #: The per-task settings a suite file may give this reader's tasks (file names, folders...).
    task_keys: ClassVar[frozenset[str]] = frozenset()

    def with_tasks(self, specs: dict[str, dict[str, Any]]) -> "LayoutReader":
        """This reader given a suite's per-task settings (``task_keys``); a reader whose tasks are
        fixed by the layout ignores them and returns itself."""
        return self

    def split_path(self, instruction_root: Path | str, variant: str, task: str, split: str) -> Path:
        """The file a task's split is read from (for the checker's report)."""
        return Path(instruction_root) / self.variant_dir(variant) / task / f"{split}.json"

    @property
    def task_names(self) -> list[str]:
        """The layout's tasks in the suite's order."""
        return list(self.task_scorers)

    def variant_dir(self, variant: str) -> str:
        """The folder name of an instruction variant (aliases resolved)."""
        return variant

    def load_task(self, instruction_root: Path | str, image_root: Path | str, variant: str, task: str,
                  **options: Any) -> "TaskData":
        """One task's splits (see the concrete reader for the options)."""
        raise NotImplementedError

    def notes(self, image_root: Path, task: str, splits: "tuple[str, ...] | list[str]") -> list[str]:
        """Things about a task's files that are not errors but change its scores (for the checker)."""
        return []
