"""The built-in synthetic benchmark: a CoIN-shaped stream of eight small tasks that runs on a CPU.

``generate(root)`` writes images and instruction files in exactly CoIN's layout (docs/coin.md), so
the CoIN reader (``data_recipes.coin``), scorers and stream code serve both, plus a validation split
(``val.json`` beside ``train.json`` and ``test.json``, in the test records' format). Scenes are drawn
with Pillow at 64 x 64 by default, from tiny shared vocabularies (6 colours, 6 shapes, 10 icons, 10
words, 8 authors) so that a ~1M-parameter model learns each task and sequential tuning forgets.
docs/synthetic.md describes the benchmark (version 4) and its calibration.

Held-out splits (``splits.py``): every scene has a content key (what it shows, without background
tint, jitter or noise); per seed, 1 in 8 keys is reserved for the test split and 1 in 8 for the
validation split, and training and pretraining draw only from the rest. No test or validation image
is pixel-identical to a training or pretraining image, and no (image, question, answer) of them is a
training sample (``overlap.py`` measures it; ``benchmarks/synthetic_overlap.py`` prints it).

Tasks, in CoIN order (answer format in brackets). Each question chooses what to read from the image
(an attribute, a region, a count) and never asks to find an object named in the question: the
tiny model does not learn such in-context lookups within the demo's budget (measured:
docs/measurements.md):

1. ScienceQA: one shape on a 2 x 2 grid; "Which shape / what color / where ..." followed by the
   kind's four options, always in the same order (SQA_OPTIONS) [option letter A-D].
2. TextVQA: a three-letter word from WORDS written large in colour [the word].
3. ImageNet: one large icon of 10 classes (house, tree, star, ...) in a random colour [class name].
   The instruction is the prompt's first line; the last line is CoIN's short-answer sentence.
4. GQA: two objects on a 2 x 2 grid, one per row; the colour or shape of the object at the top or
   at the bottom [colour or shape word].
5. VizWiz: a degraded photo (low contrast, blur, noise) of one object on a 2 x 2 grid, or of none
   in about 30% of samples; its colour or shape [colour, shape or "unanswerable"].
6. Grounding: one object on a 2 x 2 grid (a coarse grid: four possible boxes), "<instruction>: the
   <colour> <shape>" [box "[x1, y1, x2, y2]", 2 decimals; tests carry answer_bbox and size].
7. VQAv2: 1-4 objects on a 2 x 2 grid; "How many objects are there?" or "Are there more than n
   objects?" [digit 1-4, "yes" / "no"].
8. OCRVQA: a book cover with a title word (top) and an author name (bottom) [title or author].

ScienceQA, GQA, VizWiz and OCRVQA have twice the training samples of the others (``TRAIN_WEIGHT``).

Instruction variants: ``Instructions`` (ORIGINAL_INSTRUCTIONS, CoIN's wording; the five VQA-like
tasks share one sentence), ``Instructions_Diverse`` (DIVERSE_INSTRUCTIONS, five paraphrases per
task) and ``Instructions_Heldout`` (HELDOUT_INSTRUCTIONS, validation and test only, wordings unused
in training). A pretraining set (``instructions/Pretrain/train.json``) holds, for every pretraining
scene of all eight kinds, "Describe the image." with a complete, content-only caption, and one
focused description (one side of the scene, its colours, its shapes, its text, the box of a single
object, or the kind of picture as a lettered choice).
"""
from data_recipes.synthetic.instructions import (
    DIVERSE_INSTRUCTIONS, HELDOUT_INSTRUCTIONS, ORIGINAL_INSTRUCTIONS, VARIANT_DIRS, build_prompt,
)
from data_recipes.synthetic.vocab import AUTHORS, COLOUR_NAMES, ICONS, SHAPES, TASKS, WORDS
from data_recipes.synthetic.reader import SyntheticReader, synthetic_root
from data_recipes.synthetic.writer import PRETRAIN_PROMPT, TRAIN_WEIGHT, VERSION, generate

__all__ = [
    "generate", "TASKS", "ORIGINAL_INSTRUCTIONS", "DIVERSE_INSTRUCTIONS", "HELDOUT_INSTRUCTIONS",
    "VARIANT_DIRS", "PRETRAIN_PROMPT", "build_prompt", "COLOUR_NAMES", "SHAPES", "ICONS", "WORDS",
    "AUTHORS", "TRAIN_WEIGHT", "VERSION", "SyntheticReader", "synthetic_root",
]
