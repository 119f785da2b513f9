"""Scenes of the synthetic benchmark: what an image shows, how to draw it and how to describe it.

A ``Scene`` is a small, fully-described value (objects on a grid, a word, an icon or a book cover);
``render`` turns it into pixels and ``describe`` into the pretraining caption. Task samplers (in
``tasks.py``) build a scene together with the question asked about it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import random

from PIL import Image

from data_recipes.synthetic import draw
from data_recipes.synthetic.vocab import BACKGROUNDS, COLOURS, GRID_NAMES, cell_box, format_box

#: Colours that stay readable as text on a light background (yellow does not).
TEXT_COLOURS: list[str] = ["red", "green", "blue", "purple", "orange"]
_LIGHT_COVERS = {"yellow", "orange"}  # covers dark text is printed on
_WHITE = (255, 255, 255)
_INK = (20, 20, 20)


@dataclass(frozen=True)
class Obj:
    """One shape of a multi-object scene, in a cell of the scene's grid (row-major index)."""

    shape: str
    colour: str
    cell: int


@dataclass
class Scene:
    """What one image shows. ``kind`` is one of "objects", "word", "icon", "cover"."""

    kind: str
    background: tuple[int, int, int]
    grid: int = 3
    objects: list[Obj] = field(default_factory=list)
    colour: str = ""           # word / icon / cover colour
    word: str = ""             # written word or book title
    author: str = ""           # book author
    icon: str = ""             # icon class or the cover's decorative shape
    box: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)  # icon box, normalised
    jitter: tuple[float, float] = (0.0, 0.0)  # word offset as a fraction of the free room, in [-1, 1]
    noise_seed: int | None = None  # set for degraded (VizWiz-like) images


def position_name(grid: int, cell: int) -> str:
    """Words for a grid cell, e.g. "top left" or "center"."""
    return GRID_NAMES[grid][cell]


def random_background(rng: random.Random) -> tuple[int, int, int]:
    """One of the light background tints."""
    return rng.choice(BACKGROUNDS)


def render(scene: Scene, size: int) -> Image.Image:
    """Draw ``scene`` on a ``size`` x ``size`` RGB canvas (a pure function of the scene)."""
    img, d = draw.canvas(size, scene.background)
    if scene.kind == "objects":
        for o in scene.objects:
            draw.draw_shape(d, o.shape, draw.to_px(cell_box(scene.grid, o.cell), size), COLOURS[o.colour])
    elif scene.kind == "word":
        fs = round(0.36 * size)
        w, h = draw.text_extent(scene.word, fs)
        # Free room on each side, minus a small safety margin so glyphs never touch the border.
        sx = max(0.0, (size - w) / 2 - 0.05 * size)
        sy = max(0.0, (size - h) / 2 - 0.08 * size)
        centre = (size / 2 + scene.jitter[0] * sx, size / 2 + scene.jitter[1] * sy)
        draw.draw_text(d, scene.word, centre, fs, COLOURS[scene.colour])
    elif scene.kind == "icon":
        draw.draw_icon(d, scene.icon, draw.to_px(scene.box, size), COLOURS[scene.colour], scene.background)
    elif scene.kind == "cover":
        cover = COLOURS[scene.colour]
        ink = _INK if scene.colour in _LIGHT_COVERS else _WHITE
        d.rectangle(draw.to_px((0.1, 0.02, 0.9, 0.98), size), fill=cover)
        # Two fixed text zones: the title large at the top, the author smaller at the bottom.
        draw.draw_text(d, scene.word, (0.5 * size, 0.2 * size), round(0.3 * size), ink)
        draw.draw_shape(d, scene.icon, draw.to_px((0.38, 0.39, 0.62, 0.63), size), ink)
        draw.draw_text(d, scene.author, (0.5 * size, 0.82 * size), round(0.22 * size), ink)
    else:
        raise ValueError(f"unknown scene kind {scene.kind!r}")
    if scene.noise_seed is not None:
        img = draw.degrade(img, random.Random(scene.noise_seed))
    return img


def article(noun_phrase: str) -> str:
    """``noun_phrase`` with "a" or "an" in front ("an orange star")."""
    return ("an " if noun_phrase[0] in "aeiou" else "a ") + noun_phrase


def describe(scene: Scene) -> str:
    """A complete caption naming everything a task answer can depend on (pretraining target).

    Content words only ("red circle top left, blue star center, 2 objects"): measured on the tiny
    model, the loss on a long templated sentence is spent mostly on filler words, and its caption
    stage learnt the content (which word, which colour) more slowly.
    """
    if scene.kind == "objects":
        objs = sorted(scene.objects, key=lambda o: o.cell)  # canonical order: reading order
        parts = [f"{o.colour} {o.shape} {position_name(scene.grid, o.cell)}" for o in objs]
        n = len(objs)
        text = ", ".join([*parts, f"{n} object{'' if n == 1 else 's'}"])
        return f"noisy photo: {text}" if scene.noise_seed is not None else text
    if scene.kind == "word":
        return f"word {scene.word} in {scene.colour}"
    if scene.kind == "icon":
        return f"{scene.colour} {scene.icon}"
    if scene.kind == "cover":
        ink = "black" if scene.colour in _LIGHT_COVERS else "white"
        return f"{scene.colour} book cover, title {scene.word}, author {scene.author}, {ink} {scene.icon}"
    raise ValueError(f"unknown scene kind {scene.kind!r}")


#: Focused description prompts of the pretraining set: one region or one aspect of the scene.
REGIONS: dict[str, tuple[str, object]] = {
    "Describe the left side.": ("col", 0), "Describe the right side.": ("col", -1),
    "Describe the top.": ("row", 0), "Describe the bottom.": ("row", -1),
}


#: A generic multiple-choice question of the pretraining set (the kind of picture), so that the base
#: has answered with option letters before ScienceQA asks it to.
KIND_OPTIONS: dict[str, str] = {"objects": "shapes", "word": "a word", "icon": "an icon", "cover": "a book cover"}
KIND_QUESTION = "What kind of picture is this?\n" + "\n".join(
    f"{letter}. {name}" for letter, name in zip("ABCD", KIND_OPTIONS.values()))


#: The focused description of a one-object scene that gives its object's box.
BOX_PROMPT = "Give the box of the object."


def focused_descriptions(scene: Scene) -> list[tuple[str, str]]:
    """(prompt, answer) pairs that describe one region or one aspect of ``scene``.

    They teach the base to let its prompt choose what it reports (a region, the colours, the shapes,
    the text, the box of a single object), as a real LLaVA base brings from its instruction data;
    "nothing" where a region of a multi-object scene is empty.
    """
    pairs = [(KIND_QUESTION, "ABCD"[list(KIND_OPTIONS).index(scene.kind)])]
    if scene.kind == "objects":
        g = scene.grid
        objs = sorted(scene.objects, key=lambda o: o.cell)
        for prompt, (axis, index) in REGIONS.items():
            want = index % g
            chosen = [o for o in objs if (o.cell % g if axis == "col" else o.cell // g) == want]
            pairs.append((prompt, ", ".join(f"{o.colour} {o.shape} {position_name(g, o.cell)}" for o in chosen)
                          or "nothing"))
        pairs.append(("List the colors.", ", ".join(o.colour for o in objs) or "nothing"))
        pairs.append(("List the shapes.", ", ".join(o.shape for o in objs) or "nothing"))
        if len(objs) == 1:  # the box notation Grounding answers in (measured: not learnt from the task alone)
            pairs.append((BOX_PROMPT, format_box(cell_box(g, objs[0].cell))))
        return pairs
    if scene.kind == "word":
        return pairs + [("List the colors.", scene.colour), ("Read the text.", scene.word)]
    if scene.kind == "icon":
        return pairs + [("List the colors.", scene.colour)]
    if scene.kind == "cover":
        return pairs + [("List the colors.", scene.colour), ("Read the text.", f"{scene.word} {scene.author}")]
    raise ValueError(f"unknown scene kind {scene.kind!r}")
