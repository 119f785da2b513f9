"""Test-time routing: which parameter group answers each test sample.

A ``Router`` sends samples to codebook groups by one of the registered ``ROUTING_MODES``:

* ``per_instance`` (default): each sample by its own instruction, to the most similar group when
  the similarity is accepted (``codebook.accepts``), else to the fallback group (the latest trained
  one, as the reference does); a sample without instruction goes to the fallback too;
* ``per_task`` (oracle): the group the sample's task was trained into; a task never trained goes
  to the fallback;
* ``per_file`` (the reference): one decision per test file (task) from the set of its samples'
  distinct instructions.

The router counts its decisions (fallbacks, empty instructions, samples per group and per task)
so that a run's report shows how evaluation was routed.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from mmcit.registry import Registry
from mmcit.routing.codebook import Codebook, accepts

if TYPE_CHECKING:
    from mmcit.data.sample import Sample

__all__ = ["ROUTING_MODES", "Router"]

#: A mode: ``(router, samples) -> (group of each sample, whether it fell back)``.
RouteFn = Callable[["Router", list["Sample"]], tuple[list["str | None"], list[bool]]]
ROUTING_MODES: Registry[RouteFn] = Registry("routing modes")


@ROUTING_MODES.register(name="per_instance")
def _per_instance(router: "Router", samples: list["Sample"]) -> tuple[list[str | None], list[bool]]:
    """Each sample by its own instruction (LCIA's per-instance allocation)."""
    decided = [router.decide([s.instruction]) for s in samples]
    return [g for g, _, _ in decided], [f for _, _, f in decided]


@ROUTING_MODES.register(name="per_task")
def _per_task(router: "Router", samples: list["Sample"]) -> tuple[list[str | None], list[bool]]:
    """Oracle: the group each sample's task was trained into (reads the task label)."""
    fell = [s.task not in router.task_groups for s in samples]
    return [router.fallback if f else router.task_groups[s.task] for s, f in zip(samples, fell)], fell


@ROUTING_MODES.register(name="per_file")
def _per_file(router: "Router", samples: list["Sample"]) -> tuple[list[str | None], list[bool]]:
    """The reference: one decision per test file from its distinct instructions (reads the task label)."""
    groups: list[str | None] = [None] * len(samples)
    fell = [False] * len(samples)
    by_task: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        by_task.setdefault(s.task, []).append(i)
    for indices in by_task.values():
        group, _, fallback = router.decide([samples[i].instruction for i in indices])
        for i in indices:
            groups[i], fell[i] = group, fallback
    return groups, fell


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
        self._route = ROUTING_MODES.get(mode, "method.routing.mode")
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
        if group is None or not accepts(sim, self.tau):
            return self.fallback, sim, True
        return group, sim, False

    def route(self, samples: list["Sample"]) -> list[str | None]:
        """The group of every sample, in order (None only before any group exists)."""
        # One batched embedding of the new wordings instead of one model call per wording.
        self.codebook.embedder.warm([s.instruction for s in samples if s.instruction])
        groups, fell = self._route(self, samples)
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
