"""Held-out scene contents: which split a scene may be drawn for.

Every scene has a *content key*: what it shows, without the details that only perturb its pixels
(background tint, a word's jitter, an icon's box, a degraded photo's noise). The content keys are
partitioned once per seed into three pools: about 1 in 8 keys is for the test split only, 1 in 8
for the validation split only, and the rest for training and pretraining. A sample of a split is
drawn by rejection: the task's sampler is called until its scene's key belongs to the split's pool.
So no test or validation image shows a content that any training or pretraining image shows, and
no (image, question, answer) of a test or validation sample occurs in training.

The partition is explicit rather than left to chance where the space is small: the keys of each
small space (ScienceQA's 64 one-shape scenes, TextVQA's 50 word / colour pairs, ImageNet's 60 icon /
colour pairs, the one-object scenes of Grounding, VQAv2 and, degraded, VizWiz) are listed, ordered
by a seeded hash and dealt out in turn: the 1st, 9th, 17th... key to test, the 2nd, 10th... to
validation, the others to training. Larger spaces (GQA's two-object scenes, VQAv2's many-object
scenes, OCR-VQA's covers) are split by the seeded hash of each key. Keys are shared by all tasks, so
a scene that two tasks can draw (a one-object scene in ScienceQA and VQAv2) has one pool for both.

The one content the pools cannot separate is VizWiz's empty photo ("unanswerable" needs nothing
shown): it is allowed in every split, and its degradation is held out instead, as is every degraded
photo's: the seed that draws its contrast, blur and noise carries the split in its low bits, so a
test photo never repeats a training photo's degradation.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import replace
from functools import lru_cache
from typing import Callable, Iterable

from data_recipes.synthetic.scenes import TEXT_COLOURS, Scene
from data_recipes.synthetic.tasks import SAMPLERS, SQA_OPTIONS, Item
from data_recipes.synthetic.vocab import COLOUR_NAMES, ICONS, SHAPES, WORDS

#: Splits a sample can be drawn for; pretraining draws from the training pool.
SPLITS: tuple[str, ...] = ("train", "val", "test")
#: One key in ``HELD_OUT_EVERY`` goes to the test pool and one to the validation pool.
HELD_OUT_EVERY = 8
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}
_DEGRADATION_BITS = 2  # low bits of a degraded photo's seed that hold its split's code

Key = tuple


def scene_key(scene: Scene) -> Key:
    """What ``scene`` shows, independent of background, jitter, icon box and noise."""
    if scene.kind == "objects":
        objs = tuple(sorted((o.cell, o.shape, o.colour) for o in scene.objects))
        return ("objects", scene.grid, scene.noise_seed is not None, objs)
    if scene.kind == "word":
        return ("word", scene.word, scene.colour)
    if scene.kind == "icon":
        return ("icon", scene.icon, scene.colour)
    if scene.kind == "cover":
        return ("cover", scene.colour, scene.word, scene.author, scene.icon)
    raise ValueError(f"unknown scene kind {scene.kind!r}")


def _one_object(grid: int, shapes: Iterable[str], colours: Iterable[str], degraded: bool) -> list[Key]:
    return [("objects", grid, degraded, ((cell, s, c),))
            for s in shapes for c in colours for cell in range(grid * grid)]


def small_spaces() -> dict[str, list[Key]]:
    """The small content spaces whose keys are dealt out explicitly, in priority order (a key listed
    in two spaces is dealt in the first)."""
    return {
        "ScienceQA": _one_object(2, SQA_OPTIONS["shape"], SQA_OPTIONS["colour"], False),
        "TextVQA": [("word", w, c) for w in WORDS for c in TEXT_COLOURS],
        "ImageNet": [("icon", i, c) for i in ICONS for c in COLOUR_NAMES],
        "one object, 2 x 2": _one_object(2, SHAPES, COLOUR_NAMES, False),  # Grounding, VQAv2's single objects
        "one degraded object": _one_object(2, SHAPES, COLOUR_NAMES, True),
    }


def _hash(seed: int, key: Key) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}|{key!r}".encode()).digest()[:8], "big")


def _pool_by_rank(rank: int) -> str:
    return {0: "test", 1: "val"}.get(rank % HELD_OUT_EVERY, "train")


@lru_cache(maxsize=8)
def dealt_pools(seed: int) -> dict[Key, str]:
    """The pool of every key of the small spaces: each space's keys in seeded-hash order, dealt
    test, val, then six to train, in turn."""
    pools: dict[Key, str] = {}
    for keys in small_spaces().values():
        fresh = sorted((k for k in dict.fromkeys(keys) if k not in pools), key=lambda k: _hash(seed, k))
        pools.update({k: _pool_by_rank(i) for i, k in enumerate(fresh)})
    return pools


def pool_of(key: Key, seed: int) -> str | None:
    """The pool (``train``, ``val`` or ``test``) of a content key; None for a key every split may
    show (VizWiz's empty photo)."""
    if key[0] == "objects" and not key[3]:
        return None
    dealt = dealt_pools(seed)
    if key in dealt:
        return dealt[key]
    return _pool_by_rank(_hash(seed, key))


def draw(task: str, rng: random.Random, split: str, seed: int,
         sampler: Callable[[random.Random], Item] | None = None) -> Item:
    """One sample of ``task`` whose scene belongs to ``split``'s pool (``pretrain`` draws from the
    training pool); a degraded photo gets a degradation seed of its split."""
    if split not in (*SPLITS, "pretrain"):
        raise ValueError(f"unknown split {split!r}")
    pool = "train" if split == "pretrain" else split
    sample = sampler or SAMPLERS[task]
    while True:
        item = sample(rng)
        if pool_of(scene_key(item.scene), seed) in (None, pool):
            break
    if item.scene.noise_seed is not None:
        noise = (item.scene.noise_seed << _DEGRADATION_BITS) | _SPLIT_CODE[pool]
        item = replace(item, scene=replace(item.scene, noise_seed=noise))
    return item
