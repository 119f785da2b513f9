"""Per-task samplers: each draws a scene and the question asked about it from a ``random.Random``.

Every sampler returns an ``Item``: the scene, the sample-specific question (None for ImageNet, the
referring expression for Grounding), the gold answer and, for Grounding, the gold box. Answers are
single short tokens wherever the task allows it (a letter, a word, a digit, yes/no, "unanswerable").
"""
from __future__ import annotations

from dataclasses import dataclass, field
import random
from typing import Callable

from data_recipes.synthetic.scenes import Obj, article, Scene, TEXT_COLOURS, position_name, random_background
from data_recipes.synthetic.vocab import (
    AUTHORS, COLOUR_NAMES, GRID_NAMES, ICONS, PLURALS, SHAPES, WORDS, cell_box, format_box,
)

LETTERS = "ABCD"
UNANSWERABLE = "unanswerable"


@dataclass
class Item:
    """One generated sample before it is written: scene, question, answer (and gold box)."""

    scene: Scene
    question: str | None
    answer: str
    extra: dict = field(default_factory=dict)


def _objects(rng: random.Random, n: int, grid: int, distinct: bool) -> list[Obj]:
    """``n`` objects in distinct cells; with ``distinct`` no two share a shape or a colour."""
    cells = rng.sample(range(grid * grid), n)
    if distinct:
        shapes, colours = rng.sample(SHAPES, n), rng.sample(COLOUR_NAMES, n)
    else:
        shapes = [rng.choice(SHAPES) for _ in range(n)]
        colours = [rng.choice(COLOUR_NAMES) for _ in range(n)]
    return [Obj(s, c, k) for s, c, k in zip(shapes, colours, cells)]


def _scene(rng: random.Random, objects: list[Obj], grid: int = 3, degraded: bool = False) -> Scene:
    noise = rng.getrandbits(32) if degraded else None
    return Scene("objects", random_background(rng), grid=grid, objects=objects, noise_seed=noise)


def sample_scienceqa(rng: random.Random) -> Item:
    """One shape in a 3 x 3 grid; a multiple-choice question on its shape, colour or position."""
    obj = _objects(rng, 1, 3, distinct=True)[0]
    kind = rng.choice(["shape", "colour", "position"])
    question, pool, gold = {
        "shape": ("Which shape is shown in the image?", SHAPES, obj.shape),
        "colour": ("What is the color of the shape?", COLOUR_NAMES, obj.colour),
        "position": ("Where is the shape in the image?", GRID_NAMES[3], position_name(3, obj.cell)),
    }[kind]
    options = [gold] + rng.sample([p for p in pool if p != gold], rng.choice([3, 4]) - 1)
    rng.shuffle(options)
    lines = [f"{LETTERS[i]}. {o}" for i, o in enumerate(options)]
    return Item(_scene(rng, [obj]), "\n".join([question, *lines]), LETTERS[options.index(gold)])


_TEXT_QUESTIONS = ["What word is written in the image?", "What does the text say?",
                   "What is written in the picture?"]


def sample_textvqa(rng: random.Random) -> Item:
    """A word from ``WORDS`` written large in a random colour at a jittered position."""
    word = rng.choice(WORDS)
    scene = Scene("word", random_background(rng), colour=rng.choice(TEXT_COLOURS), word=word,
                  jitter=(rng.uniform(-1, 1), rng.uniform(-1, 1)))
    return Item(scene, rng.choice(_TEXT_QUESTIONS), word)


def sample_imagenet(rng: random.Random) -> Item:
    """One large icon of a random class and colour; the answer is its class name."""
    icon = rng.choice(ICONS)
    side = rng.uniform(0.62, 0.8)
    x1, y1 = rng.uniform(0.04, 0.96 - side), rng.uniform(0.04, 0.96 - side)
    scene = Scene("icon", random_background(rng), colour=rng.choice(COLOUR_NAMES), icon=icon,
                  box=(x1, y1, x1 + side, y1 + side))
    return Item(scene, None, icon)


def sample_gqa(rng: random.Random) -> Item:
    """2-3 objects in distinct columns; attribute or left/right relation questions."""
    n = rng.choice([2, 3])
    cols = rng.sample(range(3), n)
    objs = [Obj(o.shape, o.colour, rng.randrange(3) * 3 + c)
            for o, c in zip(_objects(rng, n, 3, distinct=True), cols)]
    kind = rng.choices(["colour", "shape", "relation"], weights=[3, 3, 4])[0]
    if kind == "colour":
        o = rng.choice(objs)
        return Item(_scene(rng, objs), f"What color is the {o.shape}?", o.colour)
    if kind == "shape":
        o = rng.choice(objs)
        return Item(_scene(rng, objs), f"What shape is the {o.colour} object?", o.shape)
    # The second object from a side has exactly one object beyond it, so the answer is unique.
    by_col = sorted(objs, key=lambda o: o.cell % 3)
    side = rng.choice(["left", "right"])
    target, other = (by_col[1], by_col[0]) if side == "left" else (by_col[-2], by_col[-1])
    ref = target.shape if rng.random() < 0.5 else f"{target.colour} object"
    if rng.random() < 0.5:
        return Item(_scene(rng, objs), f"What color is the object to the {side} of the {ref}?", other.colour)
    return Item(_scene(rng, objs), f"What shape is to the {side} of the {ref}?", other.shape)


def sample_vizwiz(rng: random.Random, p_unanswerable: float = 0.3) -> Item:
    """1-2 objects on a 2 x 2 grid, degraded; "unanswerable" when the asked object is absent."""
    objs = _objects(rng, rng.choice([1, 2]), 2, distinct=True)
    absent = rng.random() < p_unanswerable
    if rng.random() < 0.5:
        if absent:
            shape = rng.choice([s for s in SHAPES if s not in {o.shape for o in objs}])
            q, a = f"What color is the {shape}?", UNANSWERABLE
        else:
            o = rng.choice(objs)
            q, a = f"What color is the {o.shape}?", o.colour
    else:
        if absent:
            colour = rng.choice([c for c in COLOUR_NAMES if c not in {o.colour for o in objs}])
            q, a = f"What shape is the {colour} object?", UNANSWERABLE
        else:
            o = rng.choice(objs)
            q, a = f"What shape is the {o.colour} object?", o.shape
    return Item(_scene(rng, objs, grid=2, degraded=True), q, a)


def sample_grounding(rng: random.Random) -> Item:
    """2-3 objects on a 3 x 3 grid; box of "the <colour> <shape>" (distractors share one attribute)."""
    n = rng.choice([2, 3])
    cells = rng.sample(range(9), n)
    target = Obj(rng.choice(SHAPES), rng.choice(COLOUR_NAMES), cells[0])
    objs, seen = [target], {(target.shape, target.colour)}
    for cell in cells[1:]:
        while True:
            # Distractors often share the target's shape or colour so that both words matter.
            r = rng.random()
            shape = target.shape if r < 0.35 else rng.choice(SHAPES)
            colour = target.colour if 0.35 <= r < 0.7 else rng.choice(COLOUR_NAMES)
            if (shape, colour) not in seen:
                break
        seen.add((shape, colour))
        objs.append(Obj(shape, colour, cell))
    box = cell_box(3, target.cell)
    return Item(_scene(rng, objs), f"the {target.colour} {target.shape}", format_box(box), {"bbox": box})


def sample_vqav2(rng: random.Random) -> Item:
    """Counting (by shape or all objects) and yes/no existence questions on a 3 x 3 grid."""
    kind = rng.choices(["count_shape", "count_all", "yesno"], weights=[35, 25, 40])[0]
    if kind == "count_shape":
        shape, count = rng.choice(SHAPES), rng.randint(1, 3)
        others = [rng.choice([s for s in SHAPES if s != shape]) for _ in range(rng.randint(0, 2))]
        shapes = [shape] * count + others
        cells = rng.sample(range(9), len(shapes))
        objs = [Obj(s, rng.choice(COLOUR_NAMES), c) for s, c in zip(shapes, cells)]
        return Item(_scene(rng, objs), f"How many {PLURALS[shape]} are there?", str(count))
    if kind == "count_all":
        objs = _objects(rng, rng.randint(1, 5), 3, distinct=False)
        return Item(_scene(rng, objs), "How many objects are there?", str(len(objs)))
    objs = _objects(rng, rng.randint(1, 4), 3, distinct=False)
    form = rng.choice(["both", "shape", "colour"])
    def key(shape: str, colour: str) -> str:
        return {"both": f"{colour} {shape}", "shape": shape, "colour": f"{colour} object"}[form]
    present = sorted({key(o.shape, o.colour) for o in objs})
    absent = sorted({key(s, c) for s in SHAPES for c in COLOUR_NAMES} - set(present))
    if rng.random() < 0.5 or not absent:
        return Item(_scene(rng, objs), f"Is there {article(rng.choice(present))}?", "yes")
    return Item(_scene(rng, objs), f"Is there {article(rng.choice(absent))}?", "no")


_TITLE_QUESTIONS = ["What is the title of this book?", "What is the name of this book?"]
_AUTHOR_QUESTIONS = ["Who wrote this book?", "Who is the author of this book?"]


def sample_ocrvqa(rng: random.Random) -> Item:
    """A book cover: title word at the top, author at the bottom, a small shape in between."""
    scene = Scene("cover", random_background(rng), colour=rng.choice(COLOUR_NAMES),
                  word=rng.choice(WORDS), author=rng.choice(AUTHORS), icon=rng.choice(SHAPES))
    if rng.random() < 0.5:
        return Item(scene, rng.choice(_TITLE_QUESTIONS), scene.word)
    return Item(scene, rng.choice(_AUTHOR_QUESTIONS), scene.author)


#: Sampler per task, in CoIN order.
SAMPLERS: dict[str, Callable[[random.Random], Item]] = {
    "ScienceQA": sample_scienceqa,
    "TextVQA": sample_textvqa,
    "ImageNet": sample_imagenet,
    "GQA": sample_gqa,
    "VizWiz": sample_vizwiz,
    "Grounding": sample_grounding,
    "VQAv2": sample_vqav2,
    "OCRVQA": sample_ocrvqa,
}
