"""Instruction routing as a part that methods hold: one settings dataclass (``method.routing``),
validated once, and the codebook + router pair with the training-time and test-time decisions.

Two rules, each set in one place (``RouterSettings``):

* grouping (training time): a task's instruction set re-trains its most similar group when the
  mean pairwise similarity with ``embedder`` reaches ``tau`` (LCIA's rule), else opens a group;
* routing (test time): each sample's prompt goes to a group by ``route_rule`` with
  ``route_embedder``, when the similarity reaches ``route_floor`` (default ``tau``), else to the
  latest group. The defaults are the reference's: the grouping embedder, its mean similarity and
  ``tau``.

At training time ``match(instructions)`` gives the group a stage re-trains (or None: open a new
one) and ``assign(group, ...)`` records what the stage trained into it; at test time ``route``
picks each sample's group. Both bars go through the one threshold rule, ``codebook.accepts``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mmcit.errors import ConfigError, EmbedderUnavailable
from mmcit.routing.codebook import RULES, Codebook
from mmcit.routing.embedders import build_embedder
from mmcit.routing.router import ROUTING_MODES, Decision, Router, layout_spans

if TYPE_CHECKING:
    from mmcit.data.sample import Sample


@dataclass
class RouterSettings:
    """``method.routing``: the grouping rule (``embedder``, ``tau``), the routing rule
    (``route_rule``, ``route_embedder``, ``route_floor``) and the routing mode (``mmcit ls
    embedders`` / ``mmcit ls routing``); docs/routing.md explains the choices."""

    tau: float = 0.9  # grouping; reference: 0.9 for CoIN's original instructions, 0.3 for the diverse ones
    embedder: str = "tfidf"  # grouping embedder: tfidf (reference) | sentence | hashing
    embedder_path: str | None = None  # a local sentence-transformers folder, for either embedder
    mode: str = "per_instance"  # per_instance | per_task (oracle, reads the task) | per_file (reference, reads it)
    route_rule: str = "mean"  # mean (reference: mean similarity to a group's entries) | nearest (best entry)
    route_embedder: str | None = None  # None: the grouping embedder
    route_floor: float | None = None  # the similarity a routed sample must reach; None: tau

    @property
    def routing_embedder(self) -> str:
        """The embedder routing uses (``route_embedder``, else the grouping one)."""
        return self.route_embedder or self.embedder

    @property
    def bar(self) -> float:
        """The similarity a routed sample must reach (``route_floor``, else ``tau``)."""
        return self.tau if self.route_floor is None else self.route_floor

    def validate(self) -> None:
        """Reject settings routing cannot use, including an embedder that is not available here."""
        for key, value in (("tau", self.tau), ("route_floor", self.bar)):
            if not -1.0 <= value <= 1.0:  # also rejects NaN
                raise ConfigError(f"method.routing.{key} must be a cosine similarity in [-1, 1], got {value}")
        if self.mode not in ROUTING_MODES:
            raise ConfigError(f"method.routing.mode must be one of {', '.join(ROUTING_MODES.names())}, "
                              f"got {self.mode!r}")
        if self.route_rule not in RULES:
            raise ConfigError(f"method.routing.route_rule must be one of {', '.join(RULES)}, got {self.route_rule!r}")
        for key, name in (("embedder", self.embedder), ("route_embedder", self.routing_embedder)):
            try:  # cheap (no model load), and it fails here rather than after the base is pretrained
                build_embedder(name, self.embedder_path)
            except EmbedderUnavailable as e:
                raise ConfigError(f"method.routing.{key}: {e}") from None


class InstructionRouter:
    """A codebook of groups and the router over it; see the module docstring."""

    def __init__(self, settings: RouterSettings) -> None:
        self.settings = settings
        self.embedder = build_embedder(settings.embedder, settings.embedder_path)
        self.route_embedder = (self.embedder if settings.routing_embedder == settings.embedder
                               else build_embedder(settings.routing_embedder, settings.embedder_path))
        self.codebook = Codebook(self.embedder)
        self.router = self._router()

    def _router(self, state: dict[str, Any] | None = None) -> Router:
        state = state or {}
        s = self.settings
        return Router(self.codebook, s.bar, s.mode, state.get("fallback_group"), state.get("task_groups"),
                      rule=s.route_rule, embedder=self.route_embedder, layouts=state.get("layouts"))

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

    def assign(self, group: str, instructions: list[str], tasks: list[str],
               prompts: list[list[str]] | None = None) -> None:
        """Record that ``tasks`` (with ``instructions``) were trained into ``group``, now the latest.

        ``prompts``: each task's training prompts, from which the spans every prompt of the task
        holds are added to the group's layout (routing's tie-break, see ``Router``).
        """
        self.codebook.add(group, instructions)
        self.router.fallback = group
        for task in tasks:
            self.router.task_groups[task] = group
        layout = set(self.router.layouts.get(group, ()))
        for task_prompts in prompts or []:
            layout.update(layout_spans(task_prompts))
        self.router.layouts[group] = sorted(layout)

    def route(self, samples: list["Sample"], label: str | None = None) -> list[str | None]:
        """Each sample's group (counted under ``label``, the stage being evaluated)."""
        if label is not None:
            self.router.label = label
        return self.router.route(samples)

    def route_prompt(self, prompt: str) -> Decision:
        """The per-instance decision for one prompt by its text alone (prediction), whatever the
        routing mode: a free prompt has no task label to route by."""
        return self.router.decide_prompt(prompt)

    @property
    def counts(self) -> dict[str, Any]:
        """Routing counts per evaluated stage (see ``Router``)."""
        return self.router.counts

    def state_dict(self) -> dict[str, Any]:
        """JSON: the codebook, the latest group, task -> group, the layouts and the routing counts."""
        return {"codebook": self.codebook.to_dict(), "fallback_group": self.router.fallback,
                "task_groups": dict(self.router.task_groups), "layouts": copy.deepcopy(self.router.layouts),
                "routing_counts": copy.deepcopy(self.router.counts)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
        self.codebook = Codebook.from_dict(state.get("codebook", {}), self.embedder)
        self.router = self._router(state)
        self.router.counts = copy.deepcopy(state.get("routing_counts", {}))
        if self.router.counts:
            self.router.label = list(self.router.counts)[-1]
