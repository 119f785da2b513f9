"""The built-in synthetic benchmark: a CoIN-shaped stream of eight small tasks that runs on a CPU.

``generate(root)`` writes images and instruction files in exactly CoIN's layout (docs/COIN.md), so
the CoIN reader (``data_recipes.coin``), scorers and stream code serve both. Scenes are drawn with
Pillow at 64 x 64 by default, from tiny shared vocabularies (6 colours, 6 shapes, 10 icons, 10
words, 8 authors) so that a ~1M-parameter model learns each task and sequential tuning forgets.

Tasks, in CoIN order (answer format in brackets):

1. ScienceQA: one shape on a 3 x 3 grid; "Which shape / what color / where ..." with 3-4 lettered
   options in the question [option letter A-D].
2. TextVQA: a three-letter word from WORDS written large in colour [the word].
3. ImageNet: one large icon of 10 classes (house, tree, star, ...) in a random colour [class name].
   The instruction is the prompt's first line; the last line is CoIN's short-answer sentence.
4. GQA: 2-3 objects in distinct columns; colour of a shape, shape of a colour, or the colour /
   shape of the object left / right of another [colour or shape word].
5. VizWiz: 1-2 objects on a 2 x 2 grid, low contrast + blur + noise; colour / shape question whose
   object is absent in about 30% of samples [colour, shape or "unanswerable"].
6. Grounding: 2-3 objects on a 3 x 3 grid, "<instruction>: the <colour> <shape>" [box
   "[x1, y1, x2, y2]", 2 decimals, one of 9 values; tests carry answer_bbox and size].
7. VQAv2: count a shape or all objects, or "Is there a ...?" [digit 1-5, "yes" / "no"].
8. OCRVQA: a book cover with a title word (top) and an author name (bottom) [title or author].

Instruction variants: ``Instructions`` (ORIGINAL_INSTRUCTIONS, CoIN's wording; the five VQA-like
tasks share one sentence), ``Instructions_Diverse`` (DIVERSE_INSTRUCTIONS, five paraphrases per
task) and ``Instructions_Heldout`` (HELDOUT_INSTRUCTIONS, test only, wordings unused in training).
A pretraining set (``instructions/Pretrain/train.json``) pairs "Describe the image." with complete,
content-only captions of scenes of all eight kinds.
"""
from data_recipes.synthetic.instructions import (
    DIVERSE_INSTRUCTIONS, HELDOUT_INSTRUCTIONS, ORIGINAL_INSTRUCTIONS, VARIANT_DIRS, build_prompt,
)
from data_recipes.synthetic.vocab import AUTHORS, COLOUR_NAMES, ICONS, SHAPES, TASKS, WORDS
from data_recipes.synthetic.writer import PRETRAIN_PROMPT, generate

#: Bumped whenever generated content changes, so that cached copies are regenerated.
VERSION = 2

__all__ = [
    "generate", "TASKS", "ORIGINAL_INSTRUCTIONS", "DIVERSE_INSTRUCTIONS", "HELDOUT_INSTRUCTIONS",
    "VARIANT_DIRS", "PRETRAIN_PROMPT", "build_prompt", "COLOUR_NAMES", "SHAPES", "ICONS", "WORDS",
    "AUTHORS",
]
