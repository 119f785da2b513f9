"""The unit of data every part of mmcit exchanges: one image + conversation sample."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Sample:
    """One training or test instance.

    ``turns`` holds (human, assistant) pairs with the ``<image>`` tag already removed from the text;
    a test sample has one turn whose assistant text is the gold answer. ``instruction`` is the
    task-level template text (no sample-specific question), set by the task's recipe; routing uses
    it. ``answers`` carries several gold answers where a scorer needs them (TextVQA's ten), and
    ``meta`` anything else a scorer needs (number of choices, box, image size).
    """

    task: str
    id: str
    image: Path | None
    turns: list[tuple[str, str]]
    instruction: str = ""
    answers: list[str] | None = None
    meta: dict = field(default_factory=dict)

    @property
    def prompt(self) -> str:
        """The first human turn (the question a test sample asks)."""
        return self.turns[0][0]

    @property
    def answer(self) -> str:
        """The last assistant turn (a test sample's gold answer)."""
        return self.turns[-1][1]


#: The splits a task may hold. ``val`` has the test records' format and is optional (empty when the
#: task's tree has no ``val.json``).
SPLITS: tuple[str, ...] = ("train", "test", "val")


@dataclass
class TaskData:
    """One task of a stream: its name, scorer and train / test (and optional validation) samples."""

    name: str
    scorer: str
    train: list[Sample]
    test: list[Sample]
    val: list[Sample] = field(default_factory=list)

    def split(self, name: str) -> list[Sample]:
        """The samples of split ``name`` (``train``, ``test`` or ``val``)."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        return getattr(self, name)

    @property
    def instructions(self) -> list[str]:
        """The distinct instruction templates of the training samples, in first-seen order."""
        return list(dict.fromkeys(s.instruction for s in self.train if s.instruction))
