"""Vocabularies shared by the synthetic tasks.

The vocabularies are deliberately tiny (6-10 entries per slot) so that a ~1M-parameter model can
learn every task in a few hundred steps, and they are *shared* across tasks (the same colours and
shapes appear in six of the eight tasks, the same words in TextVQA and OCRVQA) so that learning one
task disturbs another: sequential fine-tuning must be able to forget.
"""
from __future__ import annotations

#: CoIN's task folder names, in CoIN's training order.
TASKS: list[str] = [
    "ScienceQA", "TextVQA", "ImageNet", "GQA", "VizWiz", "Grounding", "VQAv2", "OCRVQA",
]

#: Colour names and their RGB values. Saturated, well separated hues so that a patch embedding sees
#: them apart even after the VizWiz degradations.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 30, 30),
    "green": (30, 160, 60),
    "blue": (35, 85, 230),
    "yellow": (245, 210, 20),
    "purple": (140, 55, 200),
    "orange": (250, 135, 0),
}
COLOUR_NAMES: list[str] = list(COLOURS)

#: Simple shapes used in multi-object scenes (drawn inside one grid cell).
SHAPES: list[str] = ["circle", "square", "triangle", "diamond", "star", "cross"]

PLURALS: dict[str, str] = {s: ("crosses" if s == "cross" else s + "s") for s in SHAPES}

#: ImageNet-like icon classes (drawn large, one per image). "star" and "cross" are shared with
#: SHAPES on purpose: the same visual concept gets a different answer format in another task.
ICONS: list[str] = [
    "house", "tree", "star", "heart", "arrow", "cross", "moon", "fish", "flag", "umbrella",
]

#: Words rendered in TextVQA images and used as OCRVQA book titles. Three letters so that the
#: glyphs can be drawn large (about 20 px high) inside a 64 x 64 image.
WORDS: list[str] = ["cat", "dog", "sun", "box", "car", "hat", "pen", "cup", "bus", "map"]

#: OCRVQA author names (capitalised as on a cover; the OCR-VQA scorer lower-cases both sides).
AUTHORS: list[str] = ["Ann", "Bob", "Eve", "Max", "Kim", "Leo", "Sam", "Zoe"]

#: Names of the cells of the 3 x 3 and 2 x 2 grids, row-major.
GRID_NAMES: dict[int, list[str]] = {
    3: ["top left", "top middle", "top right",
        "middle left", "center", "middle right",
        "bottom left", "bottom middle", "bottom right"],
    2: ["top left", "top right", "bottom left", "bottom right"],
}

#: Fraction of a cell left empty on each side of an object, per grid size. Objects fill the rest
#: of their cell exactly, so grounding boxes take only 4 distinct values on the 2 x 2 grid.
GRID_MARGIN: dict[int, float] = {3: 0.03, 2: 0.06}

#: Light background tints (mild variation so that the background is not a constant).
BACKGROUNDS: list[tuple[int, int, int]] = [
    (255, 255, 255), (244, 244, 244), (250, 246, 236), (238, 244, 250),
]


def cell_box(grid: int, cell: int) -> tuple[float, float, float, float]:
    """Normalised [x1, y1, x2, y2] of the object in ``cell`` of a ``grid`` x ``grid`` layout.

    Rounded to 2 decimals because that is the precision the grounding answers are written with; the
    object is then drawn at exactly this box so that the gold box and the pixels agree.
    """
    row, col = divmod(cell, grid)
    m = GRID_MARGIN[grid]
    x1, y1 = col / grid + m, row / grid + m
    x2, y2 = (col + 1) / grid - m, (row + 1) / grid - m
    return (round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2))


def format_box(box: tuple[float, float, float, float]) -> str:
    """The grounding answer string, e.g. ``"[0.03, 0.03, 0.30, 0.30]"``."""
    return "[" + ", ".join(f"{v:.2f}" for v in box) + "]"
