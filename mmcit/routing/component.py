"""Instruction routing as a part that methods hold: one settings dataclass (``method.routing``),
validated once, and the codebook + router pair with the training-time and test-time decisions.

At training time ``match(instructions)`` gives the group a stage re-trains (or None: open a new
one) and ``assign(group, stage)`` records what the stage trained into it; at test time ``route``
picks each sample's group. Both decisions use the one threshold rule, ``codebook.accepts``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mmcit.errors import ConfigError, EmbedderUnavailable
from mmcit.routing.codebook import Codebook
from mmcit.routing.embedders import build_embedder
from mmcit.routing.router import ROUTING_MODES, Router

if TYPE_CHECKING:
    from mmcit.data.sample import Sample


@dataclass
class RouterSettings:
    """``method.routing``: the embedder that compares instructions, the threshold ``tau`` and the
    test-time routing mode (``mmcit ls embedders`` / ``mmcit ls routing``)."""

    tau: float = 0.9  # reference: 0.9 for CoIN's original instructions, 0.3 for the diverse ones
    embedder: str = "tfidf"  # tfidf (reference) | sentence | hashing
    embedder_path: str | None = None  # sentence: a local sentence-transformers folder
    mode: str = "per_instance"  # per_instance | per_task | per_file

    def validate(self) -> None:
        """Reject settings routing cannot use, including an embedder that is not available here."""
        if not -1.0 <= self.tau <= 1.0:  # also rejects NaN
            raise ConfigError(f"method.routing.tau must be a cosine similarity in [-1, 1], got {self.tau}")
        if self.mode not in ROUTING_MODES:
            raise ConfigError(f"method.routing.mode must be one of {', '.join(ROUTING_MODES.names())}, "
                              f"got {self.mode!r}")
        try:  # cheap (no model load), and it fails here rather than after the base is pretrained
            build_embedder(self.embedder, self.embedder_path)
        except EmbedderUnavailable as e:
            raise ConfigError(f"method.routing.embedder: {e}") from None


class InstructionRouter:
    """A codebook of groups and the router over it; see the module docstring."""

    def __init__(self, settings: RouterSettings) -> None:
        self.settings = settings
        self.embedder = build_embedder(settings.embedder, settings.embedder_path)
        self.codebook = Codebook(self.embedder)
        self.router = Router(self.codebook, settings.tau, settings.mode)

    @property
    def groups(self) -> dict[str, list[str]]:
        """Group -> its instructions, in the order groups were opened."""
        return self.codebook.groups

    @property
    def latest(self) -> str | None:
        """The most recently trained group (where routing falls back)."""
        return self.router.fallback

    def match(self, instructions: list[str]) -> tuple[str | None, float, dict[str, float]]:
        """The group to re-train (None: open a new one), the best similarity and every group's."""
        return self.codebook.match(instructions, self.settings.tau)

    def assign(self, group: str, instructions: list[str], tasks: list[str]) -> None:
        """Record that ``tasks`` (with ``instructions``) were trained into ``group``, now the latest."""
        self.codebook.add(group, instructions)
        self.router.fallback = group
        for task in tasks:
            self.router.task_groups[task] = group

    def route(self, samples: list["Sample"], label: str | None = None) -> list[str | None]:
        """Each sample's group (counted under ``label``, the stage being evaluated)."""
        if label is not None:
            self.router.label = label
        return self.router.route(samples)

    def decide(self, instruction: str) -> tuple[str | None, float]:
        """``(group, similarity)`` for one free-standing instruction (prediction)."""
        group, sim, _ = self.router.decide([instruction])
        return group, sim

    @property
    def counts(self) -> dict[str, Any]:
        """Routing counts per evaluated stage (see ``Router``)."""
        return self.router.counts

    def state_dict(self) -> dict[str, Any]:
        """JSON: the codebook, the latest group, task -> group and the routing counts."""
        return {"codebook": self.codebook.to_dict(), "fallback_group": self.router.fallback,
                "task_groups": dict(self.router.task_groups), "routing_counts": copy.deepcopy(self.router.counts)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
        self.codebook = Codebook.from_dict(state.get("codebook", {}), self.embedder)
        self.router = Router(self.codebook, self.settings.tau, self.settings.mode, state.get("fallback_group"),
                             state.get("task_groups"))
        self.router.counts = copy.deepcopy(state.get("routing_counts", {}))
        if self.router.counts:
            self.router.label = list(self.router.counts)[-1]
