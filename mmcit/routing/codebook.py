"""The instruction codebook: which instructions each parameter group was trained on, and the one
threshold rule that decides whether an instruction set belongs to a group.

The similarity of an instruction set to a group is the mean cosine over all (instruction, codebook
entry) pairs, with the embeddings of ``mmcit.routing.embedders``. A set belongs to its most similar
group when that similarity reaches ``tau`` (``accepts``): at training time the group is re-trained,
at test time the sample is routed to it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mmcit.routing.embedders import Embedder

__all__ = ["Codebook", "accepts"]


def accepts(similarity: float, tau: float) -> bool:
    """LCIA's threshold rule, the only place it is written: a similarity of at least ``tau``."""
    return similarity >= tau


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
        return (best if best is not None and accepts(sim, tau) else None), sim, sims

    # -- persistence ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON form: the embedder's name and every group's instructions."""
        return {"embedder": self.embedder.name, "groups": {g: list(v) for g, v in self.groups.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any], embedder: Embedder) -> "Codebook":
        """Inverse of ``to_dict``; the embedder is passed in (it is not serialisable)."""
        return cls(embedder, {g: list(v) for g, v in data.get("groups", {}).items()})

    def to_json(self) -> str:
        """``to_dict`` as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    @classmethod
    def load(cls, path: str | Path, embedder: Embedder) -> "Codebook":
        """Read a codebook written as JSON (``to_json`` or the run's ``codebook.json``)."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")), embedder)
