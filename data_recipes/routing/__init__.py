"""Held-out routing data: paraphrases of every LCIA parameter group's instructions
(``paraphrases.yaml``, written by hand, see README.md) and the replay that measures how many of
them a routing setting sends to the right group.

``grouped_router(settings, variant)`` builds a codebook the way an LCIA run does (task by task in
CoIN order, the grouping rule of ``settings``), from the instructions of the synthetic benchmark,
whose original variant is CoIN's own wording; its training prompts are laid out like CoIN's, so
the router also learns each group's layout. ``route_paraphrases`` then routes every paraphrase of
the sets that apply to the variant, alone (as a user would send it) or inside its task's CoIN
layout with a question, and counts the right ones.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from data_recipes.synthetic.instructions import build_prompt, templates
from data_recipes.synthetic.tasks import SAMPLERS
from data_recipes.synthetic.vocab import TASKS
from mmcit.routing import InstructionRouter, RouterSettings

__all__ = ["LEVELS", "PARAPHRASES", "ParaphraseSet", "config_variant", "grouped_router", "load_paraphrases",
           "route_paraphrases"]

PARAPHRASES = Path(__file__).with_name("paraphrases.yaml")
LEVELS = ("easy", "hard")
#: CoIN instruction folder -> the variant whose instructions stand for it here. The synthetic
#: benchmark has no 10-type variant; its diverse one (several wordings per task, grouped at tau
#: 0.3 like the 10-type's) stands in for it.
_VARIANTS = {"Instructions": "original", "original": "original", "Instructions_Diverse": "diverse",
             "diverse": "diverse", "Instructions_10Type": "diverse", "10type": "diverse"}


@dataclass
class ParaphraseSet:
    """The paraphrases of one group's instructions: the tasks whose group they must reach, the
    variants whose grouping has that group, what they paraphrase and the easy / hard lists."""

    name: str
    tasks: list[str]
    variants: list[str]
    of: str
    easy: list[str]
    hard: list[str]


def load_paraphrases(path: str | Path = PARAPHRASES) -> dict[str, ParaphraseSet]:
    """Every set of ``paraphrases.yaml`` by name."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    return {name: ParaphraseSet(name=name, **fields) for name, fields in data["sets"].items()}


def config_variant(variant: str) -> str:
    """The instruction variant (``original`` or ``diverse``) that stands for a config's ``data.variant``."""
    if variant not in _VARIANTS:
        raise ValueError(f"no paraphrase sets for instruction variant {variant!r}")
    return _VARIANTS[variant]


def _prompts(task: str, instructions: list[str], n: int, rng: random.Random) -> list[str]:
    """``n`` prompts of ``task`` in CoIN's layout, with the synthetic benchmark's questions."""
    return [build_prompt(task, SAMPLERS[task](rng).question, instructions[i % len(instructions)]) for i in range(n)]


def grouped_router(settings: RouterSettings, variant: str, prompts_per_task: int = 30,
                   seed: int = 0) -> InstructionRouter:
    """An ``InstructionRouter`` trained like an LCIA run on ``variant``'s instructions (CoIN order):
    each task re-trains its most similar group when the grouping rule accepts, else opens one."""
    router, rng = InstructionRouter(settings), random.Random(seed)
    for task in TASKS:
        instructions = templates(variant, task)
        best, _, _ = router.match(instructions)
        group = best or f"group_{len(router.groups) + 1}"
        router.assign(group, instructions, [task], [_prompts(task, instructions, prompts_per_task, rng)])
    return router


def route_paraphrases(router: InstructionRouter, variant: str, layout: bool = False, seed: int = 0,
                      sets: dict[str, ParaphraseSet] | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """Route every paraphrase of the sets that apply to ``variant``: ``out[set][level]`` holds
    ``right``, ``n`` and the ``wrong`` ones with the group they reached. ``layout``: each
    paraphrase inside its task's CoIN layout (with a question) instead of alone."""
    rng, out = random.Random(seed), {}
    for s in (sets or load_paraphrases()).values():
        if variant not in s.variants:
            continue
        groups = {router.router.task_groups[t] for t in s.tasks}
        if len(groups) != 1:
            raise ValueError(f"paraphrase set {s.name}: its tasks {s.tasks} are in several groups {sorted(groups)}")
        target = groups.pop()
        out[s.name] = {}
        for level in LEVELS:
            texts = getattr(s, level)
            prompts = [_prompts(s.tasks[i % len(s.tasks)], [t], 1, rng)[0] if layout else t
                       for i, t in enumerate(texts)]
            router.router.prepare(prompts)
            decided = [router.route_prompt(p).group for p in prompts]
            wrong = [(t, g) for t, g in zip(texts, decided) if g != target]
            out[s.name][level] = {"right": len(texts) - len(wrong), "n": len(texts), "group": target, "wrong": wrong}
    return out
