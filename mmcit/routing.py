"""Instruction codebook and test-time routing (LCIA.md section 2).

A ``Codebook`` maps each parameter group to the instructions it was trained on; the similarity of
an instruction set to a group is the mean cosine over all (instruction, codebook entry) pairs. A
``Router`` sends test samples to groups:

* ``per_instance`` (default): each sample by its own instruction, to the most similar group when
  the similarity reaches ``tau``, else to the fallback group (the latest trained one, as the
  reference does); a sample without instruction goes to the fallback too;
* ``per_task`` (oracle): the group the sample's task was trained into; a task never trained goes
  to the fallback;
* ``per_file`` (the reference): one decision per test file (task) from the set of its samples'
  distinct instructions.

The router counts its decisions (fallbacks, empty instructions, samples per group and per task)
so that a run's report shows how evaluation was routed.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmcit.embedders import Embedder

if TYPE_CHECKING:
    from mmcit.data.sample import Sample

ROUTING_MODES = ("per_instance", "per_task", "per_file")

__all__ = ["ROUTING_MODES", "Codebook", "Router"]


class Codebook:
    """Group name -> the instructions trained into it, in the order groups were opened."""

    def __init__(self, embedder: Embedder, groups: dict[str, list[str]] | None = None) -> None:
        self.embedder = embedder
        self.groups: dict[str, list[str]] = {}
        self.version = 0  # bumped on every change, so that routers can drop cached decisions
        for name, instructions in (groups or {}).items():
            self.add(name, instructions)

    def add(self, group: str, instructions: list[str]) -> None:
        """Open ``group`` if new and append the instructions it does not hold yet."""
        entries = self.groups.setdefault(group, [])
        entries.extend(i for i in dict.fromkeys(instructions) if i and i not in entries)
        self.version += 1

    def similarity(self, instructions_a: list[str], instructions_b: list[str]) -> float:
        """Mean cosine similarity over all pairs (a, b); NaN when either set is empty."""
        if not instructions_a or not instructions_b:
            return float("nan")
        return float(np.mean(self.embedder.similarity(list(instructions_a), list(instructions_b))))

    def best_group(self, instructions: list[str]) -> tuple[str | None, float, dict[str, float]]:
        """The most similar group, its similarity and the similarity to every group.

        Ties go to the group opened first. ``(None, -inf, {})`` for an empty codebook or an empty
        instruction set.
        """
        sims = {g: self.similarity(instructions, entries) for g, entries in self.groups.items()}
        sims = {g: s for g, s in sims.items() if not np.isnan(s)}
        if not sims:
            return None, float("-inf"), {}
        best = max(sims, key=lambda g: sims[g])  # max keeps the first of equal values
        return best, sims[best], sims

    def match(self, instructions: list[str], tau: float) -> tuple[str | None, float, dict[str, float]]:
        """LCIA's training-time rule: the group to re-train (best similarity >= ``tau``) or None
        to open a new one, with the best similarity and the similarity to every group."""
        best, sim, sims = self.best_group(instructions)
        return (best if best is not None and sim >= tau else None), sim, sims

    # -- persistence ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"embedder": self.embedder.name, "groups": {g: list(v) for g, v in self.groups.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any], embedder: Embedder) -> "Codebook":
        """Inverse of ``to_dict``; the embedder is passed in (it is not serialisable)."""
        return cls(embedder, {g: list(v) for g, v in data.get("groups", {}).items()})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    @classmethod
    def load(cls, path: str | Path, embedder: Embedder) -> "Codebook":
        """Read a codebook written as JSON (``to_json`` or the run's ``codebook.json``)."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")), embedder)


def _new_counts() -> dict[str, Any]:
    return {"samples": 0, "fallbacks": 0, "empty": 0, "per_group": {}, "per_task": {}}


class Router:
    """Routes samples to codebook groups; see the module docstring for the modes.

    ``fallback`` (the latest trained group) and ``task_groups`` (task -> group it was trained
    into, for ``per_task``) are set by the owner as training proceeds. ``counts`` accumulates under
    the key ``label`` (the method sets it to the stage being evaluated).
    """

    def __init__(self, codebook: Codebook, tau: float, mode: str = "per_instance",
                 fallback: str | None = None, task_groups: dict[str, str] | None = None) -> None:
        if mode not in ROUTING_MODES:
            raise ValueError(f"routing mode must be one of {ROUTING_MODES}, got {mode!r}")
        self.codebook, self.tau, self.mode = codebook, tau, mode
        self.fallback = fallback
        self.task_groups: dict[str, str] = dict(task_groups or {})
        self.label = "all"
        self.counts: dict[str, dict[str, Any]] = {}
        self._decisions: dict[tuple[str, ...], tuple[str | None, float]] = {}
        self._version = -1

    def decide(self, instructions: list[str]) -> tuple[str | None, float, bool]:
        """Group for an instruction set: ``(group, best similarity, fell_back)``.

        Decisions are cached per distinct set until the codebook changes: test sets repeat a few
        templates, so routing costs a dictionary lookup per sample after the first.
        """
        if self._version != self.codebook.version:
            self._decisions.clear()
            self._version = self.codebook.version
        key = tuple(sorted(set(i for i in instructions if i)))
        if key not in self._decisions:
            group, sim, _ = self.codebook.best_group(list(key)) if key else (None, float("-inf"), {})
            self._decisions[key] = (group, sim)
        group, sim = self._decisions[key]
        if group is None or sim < self.tau:
            return self.fallback, sim, True
        return group, sim, False

    def route(self, samples: list["Sample"]) -> list[str | None]:
        """The group of every sample, in order (None only before any group exists)."""
        groups: list[str | None] = [None] * len(samples)
        fell: list[bool] = [False] * len(samples)
        # One batched embedding of the new wordings instead of one model call per wording.
        self.codebook.embedder.warm([s.instruction for s in samples if s.instruction])
        if self.mode == "per_instance":
            for i, s in enumerate(samples):
                groups[i], _, fell[i] = self.decide([s.instruction])
        elif self.mode == "per_task":
            for i, s in enumerate(samples):
                fell[i] = s.task not in self.task_groups
                groups[i] = self.fallback if fell[i] else self.task_groups[s.task]
        else:  # per_file: one decision per task's set of instructions
            by_task: dict[str, list[int]] = {}
            for i, s in enumerate(samples):
                by_task.setdefault(s.task, []).append(i)
            for indices in by_task.values():
                group, _, fallback = self.decide([samples[i].instruction for i in indices])
                for i in indices:
                    groups[i], fell[i] = group, fallback
        self._count(samples, groups, fell)
        return groups

    def _count(self, samples: list["Sample"], groups: list[str | None], fell: list[bool]) -> None:
        c = self.counts.setdefault(self.label, _new_counts())
        for s, g, f in zip(samples, groups, fell):
            key = str(g)
            c["samples"] += 1
            c["fallbacks"] += int(f)
            c["empty"] += int(not s.instruction)
            c["per_group"][key] = c["per_group"].get(key, 0) + 1
            per_task = c["per_task"].setdefault(s.task, {})
            per_task[key] = per_task.get(key, 0) + 1
