"""Per-task samplers: each draws a scene and the question asked about it from a ``random.Random``.

Every sampler returns an ``Item``: the scene, the sample-specific question (None for ImageNet, the
referring expression for Grounding), the gold answer and, for Grounding, the gold box. Answers are
single short tokens wherever the task allows it (a letter, a word, a digit, yes/no, "unanswerable").
"""
from __future__ import annotations

from dataclasses import dataclass, field
import random
from typing import Callable

from data_recipes.synthetic.scenes import Obj, Scene, TEXT_COLOURS, position_name, random_background
from data_recipes.synthetic.vocab import (
    AUTHORS, COLOUR_NAMES, GRID_NAMES, ICONS, SHAPES, WORDS, cell_box, format_box,
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


#: ScienceQA's option lists: all four options of a kind, always in this order, so the letter is a
#: function of what the image shows (finding the gold word in a shuffled list is an in-context lookup
#: that the tiny language model does not learn within the demo's budget: see the README).
SQA_OPTIONS: dict[str, list[str]] = {
    "shape": SHAPES[:4],
    "colour": ["red", "green", "blue", "yellow"],
    "position": GRID_NAMES[2],
}
_SQA_QUESTIONS = {"shape": "Which shape is shown in the image?", "colour": "What is the color of the shape?",
                  "position": "Where is the shape in the image?"}


def sample_scienceqa(rng: random.Random) -> Item:
    """One shape on a 2 x 2 grid; a four-option question on its shape, colour or position."""
    shape, colour = rng.choice(SQA_OPTIONS["shape"]), rng.choice(SQA_OPTIONS["colour"])
    obj = Obj(shape, colour, rng.randrange(4))
    kind = rng.choice(["shape", "colour", "position"])
    gold = {"shape": shape, "colour": colour, "position": position_name(2, obj.cell)}[kind]
    options = SQA_OPTIONS[kind]
    lines = [f"{LETTERS[i]}. {o}" for i, o in enumerate(options)]
    return Item(_scene(rng, [obj], grid=2), "\n".join([_SQA_QUESTIONS[kind], *lines]),
                LETTERS[options.index(gold)])


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
    """Two objects on a 2 x 2 grid, one per row; the colour or shape of the top or bottom one."""
    top, bottom = _objects(rng, 2, 2, distinct=True)
    objs = [Obj(top.shape, top.colour, rng.randrange(2)), Obj(bottom.shape, bottom.colour, 2 + rng.randrange(2))]
    side = rng.choice(["top", "bottom"])
    o = objs[0] if side == "top" else objs[1]
    if rng.random() < 0.5:
        return Item(_scene(rng, objs, grid=2), f"What color is the object at the {side}?", o.colour)
    return Item(_scene(rng, objs, grid=2), f"What shape is the object at the {side}?", o.shape)


def sample_vizwiz(rng: random.Random, p_unanswerable: float = 0.3) -> Item:
    """A degraded photo of one object on a 2 x 2 grid, or of none: then "unanswerable"."""
    objs = [] if rng.random() < p_unanswerable else _objects(rng, 1, 2, distinct=True)
    if rng.random() < 0.5:
        q, a = "What color is the object?", objs[0].colour if objs else UNANSWERABLE
    else:
        q, a = "What shape is the object?", objs[0].shape if objs else UNANSWERABLE
    return Item(_scene(rng, objs, grid=2, degraded=True), q, a)


def sample_grounding(rng: random.Random) -> Item:
    """One object on a 2 x 2 grid; the box of "the <colour> <shape>" (one of four boxes)."""
    obj = _objects(rng, 1, 2, distinct=True)[0]
    box = cell_box(2, obj.cell)
    return Item(_scene(rng, [obj], grid=2), f"the {obj.colour} {obj.shape}", format_box(box), {"bbox": box})


def sample_vqav2(rng: random.Random) -> Item:
    """1-4 objects on a 2 x 2 grid: count them, or say whether there are more than n of them."""
    objs = _objects(rng, rng.randint(1, 4), 2, distinct=False)
    if rng.random() < 0.5:
        return Item(_scene(rng, objs, grid=2), "How many objects are there?", str(len(objs)))
    n = rng.randint(1, 3)
    return Item(_scene(rng, objs, grid=2), f"Are there more than {n} objects?", "yes" if len(objs) > n else "no")


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
