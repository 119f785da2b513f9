"""Test-time routing: which parameter group answers each test sample.

A ``Router`` sends samples to codebook groups by one of the registered ``ROUTING_MODES``:

* ``per_instance`` (default): each sample by its prompt alone, never by its task label. Every span
  of the prompt that may be its instruction (``instruction_candidates``) is scored against every
  group with the routing rule (``codebook.RULES``) and the routing embedder; when some spans are
  codebook instructions verbatim, only those are scored (a prompt in a training layout is routed
  by the instruction it was trained with, never by its question). The best (span, group) wins;
  groups within ``TIE`` of the best are told apart by how many of the spans their training
  prompts always carried the prompt holds (``layouts``): CoIN's ImageNet prompt holds both its
  instruction and the short-answer sentence of the VQA group, and ImageNet's training prompts
  always carried both. Then the group opened first. When the best similarity is not accepted
  (``codebook.accepts`` with the routing bar), or the prompt has no text, the sample goes to the
  fallback group (the latest trained one, as the reference does);
* ``per_task`` (oracle): the group the sample's task was trained into (reads the task label);
  a task never trained goes to the fallback;
* ``per_file`` (the reference): one decision per test file (task, read from the label) from the
  set of its samples' layout-rule instructions (``Sample.instruction``).

The router counts its decisions (fallbacks, empty prompts, samples per group and, for the report,
per task label) so that a run's report shows how evaluation was routed.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np

from mmcit.data.prompts import instruction_candidates
from mmcit.registry import Registry
from mmcit.routing.codebook import Codebook, accepts
from mmcit.routing.embedders import Embedder

if TYPE_CHECKING:
    from mmcit.data.sample import Sample

__all__ = ["Decision", "ROUTING_MODES", "Router", "TIE", "layout_spans"]

#: Similarities closer than this count as equal (float32 embeddings of equal texts differ by ~1e-7).
TIE = 1e-5


@dataclass(frozen=True)
class Decision:
    """One routing decision: the group, the best similarity, whether it fell back and the span
    (instruction) that decided ("" when none did)."""

    group: str | None
    similarity: float
    fell_back: bool
    instruction: str = ""


#: A mode: ``(router, samples) -> the decision of each sample``.
RouteFn = Callable[["Router", list["Sample"]], list[Decision]]
ROUTING_MODES: Registry[RouteFn] = Registry("routing modes")


@ROUTING_MODES.register(name="per_instance")
def _per_instance(router: "Router", samples: list["Sample"]) -> list[Decision]:
    """Each sample by its own prompt (LCIA's per-instance allocation); reads no task label."""
    router.prepare([s.prompt for s in samples])
    return [router.decide_prompt(s.prompt) for s in samples]


@ROUTING_MODES.register(name="per_task")
def _per_task(router: "Router", samples: list["Sample"]) -> list[Decision]:
    """Oracle: the group each sample's task was trained into (reads the task label)."""
    return [Decision(router.task_groups[s.task], 1.0, False) if s.task in router.task_groups
            else Decision(router.fallback, float("-inf"), True) for s in samples]


@ROUTING_MODES.register(name="per_file")
def _per_file(router: "Router", samples: list["Sample"]) -> list[Decision]:
    """The reference: one decision per test file from its distinct instructions (reads the task label)."""
    decisions: list[Decision | None] = [None] * len(samples)
    by_task: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        by_task.setdefault(s.task, []).append(i)
    for indices in by_task.values():
        decision = router.decide([samples[i].instruction for i in indices])
        for i in indices:
            decisions[i] = decision
    return decisions  # type: ignore[return-value]


def layout_spans(prompts: Iterable[str], share: float = 0.9, limit: int = 1000) -> list[str]:
    """The candidate spans at least ``share`` of the (first ``limit``) prompts hold: a task's
    fixed text (its instruction in the original variant, plus lines such as ImageNet's closing
    short-answer sentence), never its questions, which vary."""
    counts: Counter = Counter()
    n = 0
    for prompt in prompts:
        if n >= limit:
            break
        counts.update(set(instruction_candidates(prompt)))
        n += 1
    return sorted(s for s, k in counts.items() if n and k >= share * n)


def _new_counts() -> dict[str, Any]:
    return {"samples": 0, "fallbacks": 0, "empty": 0, "per_group": {}, "per_task": {}}


class Router:
    """Routes samples to codebook groups; see the module docstring for the modes.

    ``tau`` is the routing bar (a similarity must reach it), ``rule`` one of ``codebook.RULES`` and
    ``embedder`` the routing embedder (default: the codebook's). ``fallback`` (the latest trained
    group), ``task_groups`` (task -> group, for ``per_task``) and ``layouts`` (group -> spans its
    training prompts always held) are set by the owner as training proceeds. ``counts``
    accumulates under the key ``label`` (the method sets it to the stage being evaluated).
    """

    def __init__(self, codebook: Codebook, tau: float, mode: str = "per_instance",
                 fallback: str | None = None, task_groups: dict[str, str] | None = None, *,
                 rule: str = "mean", embedder: Embedder | None = None,
                 layouts: dict[str, list[str]] | None = None) -> None:
        self._route = ROUTING_MODES.get(mode, "method.routing.mode")
        self.codebook, self.tau, self.mode, self.rule = codebook, tau, mode, rule
        self.embedder = embedder or codebook.embedder
        self.fallback = fallback
        self.task_groups: dict[str, str] = dict(task_groups or {})
        self.layouts: dict[str, list[str]] = {g: list(v) for g, v in (layouts or {}).items()}
        self.label = "all"
        self.counts: dict[str, dict[str, Any]] = {}
        self._sets: dict[tuple[str, ...], tuple[str | None, float]] = {}
        self._prompts: dict[str, Decision] = {}
        self._spans: dict[str, np.ndarray] = {}  # span -> similarity to each group (codebook order)
        self._verbatim: set[str] = set()
        self._version = -1

    def _refresh(self) -> None:
        """Drop cached decisions when the codebook changed (a group was opened or extended)."""
        if self._version != self.codebook.version:
            self._sets.clear()
            self._prompts.clear()
            self._spans.clear()
            self._verbatim = set(self.codebook.entries)
            self._version = self.codebook.version

    def _accept(self, group: str | None, sim: float, instruction: str = "") -> Decision:
        if group is None or not accepts(sim, self.tau):
            return Decision(self.fallback, sim, True, instruction)
        return Decision(group, sim, False, instruction)

    def decide(self, instructions: list[str]) -> Decision:
        """The decision for an instruction set taken as a whole (``per_file``).

        Decisions are cached per distinct set until the codebook changes: test sets repeat a few
        templates, so routing costs a dictionary lookup per sample after the first.
        """
        self._refresh()
        key = tuple(sorted(set(i for i in instructions if i)))
        if key not in self._sets:
            scores = self.codebook.scores(list(key), self.rule, self.embedder) if key else {}
            best = max(scores, key=lambda g: scores[g]) if scores else None  # max keeps the first of equals
            self._sets[key] = (best, scores[best] if best is not None else float("-inf"))
        return self._accept(*self._sets[key])

    def pool(self, prompt: str) -> list[str]:
        """The spans of ``prompt`` the router scores: its candidates, or only those that are
        codebook instructions verbatim when there are any."""
        self._refresh()
        spans = instruction_candidates(prompt)
        return [s for s in spans if s in self._verbatim] or spans

    def prepare(self, prompts: list[str]) -> None:
        """Score the spans of all ``prompts`` not scored yet in one similarity call (one batched
        embedding instead of one model call per span)."""
        self._refresh()
        new = list(dict.fromkeys(s for p in prompts if p not in self._prompts for s in self.pool(p)
                                 if s not in self._spans))
        if new:
            self.embedder.warm(new)
            self._spans.update(zip(new, self.codebook.scores_each(new, self.rule, self.embedder)))

    def decide_prompt(self, prompt: str) -> Decision:
        """The decision for one prompt by its own text (``per_instance``); see the module docstring."""
        self._refresh()
        if prompt not in self._prompts:
            self.prepare([prompt])
            spans = instruction_candidates(prompt)
            pool = self.pool(prompt)
            table = np.array([self._spans[s] for s in pool]) if pool else np.zeros((0, 0))
            if table.size == 0 or np.all(np.isnan(table)):
                self._prompts[prompt] = self._accept(None, float("-inf"))
            else:
                best = float(np.nanmax(table))
                groups = list(self.codebook.groups)
                near = [k for k in range(len(groups)) if np.nanmax(table[:, k], initial=-np.inf) >= best - TIE]
                held = set(spans)
                k = max(near, key=lambda k: (len(held.intersection(self.layouts.get(groups[k], ()))), -k))
                span = pool[int(np.nanargmax(table[:, k]))]
                self._prompts[prompt] = self._accept(groups[k], float(np.nanmax(table[:, k])), span)
        return self._prompts[prompt]

    def route(self, samples: list["Sample"]) -> list[str | None]:
        """The group of every sample, in order (None only before any group exists)."""
        return [d.group for d in self.route_decisions(samples)]

    def route_decisions(self, samples: list["Sample"]) -> list[Decision]:
        """The decision of every sample, in order, counted under ``label``."""
        decisions = self._route(self, samples)
        self._count(samples, decisions)
        return decisions

    def _count(self, samples: list["Sample"], decisions: list[Decision]) -> None:
        c = self.counts.setdefault(self.label, _new_counts())
        for s, d in zip(samples, decisions):
            key = str(d.group)
            c["samples"] += 1
            c["fallbacks"] += int(d.fell_back)
            c["empty"] += int(not s.prompt.strip())
            c["per_group"][key] = c["per_group"].get(key, 0) + 1
            per_task = c["per_task"].setdefault(s.task, {})  # the report's table; routing never read it
            per_task[key] = per_task.get(key, 0) + 1
