"""The instruction codebook: which instructions each parameter group was trained on, the one
threshold rule that decides whether a similarity is high enough, and the two ways of scoring
instructions against a group.

The similarity of an instruction set to a group is, by ``RULES``:

* ``mean`` (LCIA's, the reference): the mean cosine over all (instruction, codebook entry) pairs;
  training-time grouping always uses it;
* ``nearest``: for each instruction its most similar entry of the group, averaged over the set
  (for one instruction: the cosine of its nearest entry).

A set belongs to its most similar group when that similarity reaches the bar (``accepts``): at
training time the group is re-trained (bar ``tau``), at test time the sample is routed to it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mmcit.routing.embedders import Embedder

__all__ = ["Codebook", "RULES", "accepts", "reduce_similarities"]

#: How a matrix of (instruction, entry) cosines becomes one similarity to a group.
RULES = ("mean", "nearest")


def accepts(similarity: float, tau: float) -> bool:
    """LCIA's threshold rule, the only place it is written: a similarity of at least ``tau``."""
    return similarity >= tau


def reduce_similarities(sims: np.ndarray, rule: str) -> float:
    """One similarity from the cosines ``sims[i, j]`` of instruction i and group entry j (``RULES``).

    ``mean``: the mean of all pairs; ``nearest``: the mean over instructions of their best
    entry. NaN when either side is empty.
    """
    if sims.size == 0:
        return float("nan")
    if rule == "nearest":
        return float(np.mean(np.max(sims, axis=1)))
    return float(np.mean(sims))


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

    def scores(self, instructions: list[str], rule: str = "mean",
               embedder: Embedder | None = None) -> dict[str, float]:
        """The similarity of the instruction set to every group by ``rule`` (``RULES``), with
        ``embedder`` (default: the codebook's); groups without entries and NaN are left out."""
        if not instructions or not self.groups:
            return {}
        sims = (embedder or self.embedder).similarity(list(instructions), self.entries)
        out = {g: reduce_similarities(sims[:, a:b], rule) for g, (a, b) in self._columns().items()}
        return {g: s for g, s in out.items() if not np.isnan(s)}

    def scores_each(self, texts: list[str], rule: str = "mean", embedder: Embedder | None = None) -> np.ndarray:
        """``out[i, k]``: the similarity of ``texts[i]`` alone to the k-th group (NaN: no entries),
        in one similarity call for all the texts."""
        columns = self._columns()
        out = np.full((len(texts), len(columns)), np.nan, dtype=np.float64)
        if not texts or not self.entries:
            return out
        sims = (embedder or self.embedder).similarity(list(texts), self.entries)
        for k, (a, b) in enumerate(columns.values()):
            if b > a:
                out[:, k] = sims[:, a:b].max(axis=1) if rule == "nearest" else sims[:, a:b].mean(axis=1)
        return out

    @property
    def entries(self) -> list[str]:
        """Every group's instructions, group after group (the columns of ``scores_each``)."""
        return [e for v in self.groups.values() for e in v]

    def _columns(self) -> dict[str, tuple[int, int]]:
        spans, start = {}, 0
        for group, v in self.groups.items():
            spans[group] = (start, start + len(v))
            start += len(v)
        return spans

    def holding(self, text: str) -> list[str]:
        """The groups whose codebook holds ``text`` verbatim, in the order groups were opened."""
        return [g for g, v in self.groups.items() if text in v]

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
