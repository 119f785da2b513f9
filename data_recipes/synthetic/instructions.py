"""Instruction templates of the synthetic benchmark and the CoIN prompt layout.

Three variants, as in CoIN:

- ``Instructions`` (original): one template per task in CoIN's own wording, so the five short-answer
  VQA-like tasks share one sentence and instruction grouping finds CoIN's four groups.
- ``Instructions_Diverse``: five paraphrases per task, one chosen per sample. Each task's family keeps
  its own core vocabulary (letters/options, reading text, object category, colours/positions,
  unanswerable, bounding box, counting/yes-no, book cover) so that tasks separate by meaning.
- ``Instructions_Heldout`` (validation and test only): two further paraphrases per task, never
  used in training, to measure how well routing handles unseen wording.
"""
from __future__ import annotations

from data_recipes.synthetic.vocab import TASKS

VQA_INSTRUCTION = "Answer the question using a single word or phrase."

ORIGINAL_INSTRUCTIONS: dict[str, str] = {
    "ScienceQA": "Answer with the option's letter from the given choices directly.",
    "TextVQA": VQA_INSTRUCTION,
    "ImageNet": "Classify the object in the image into one of the categories.",
    "GQA": VQA_INSTRUCTION,
    "VizWiz": VQA_INSTRUCTION,
    "Grounding": "Please provide the bounding box coordinate of the region this sentence describes",
    "VQAv2": VQA_INSTRUCTION,
    "OCRVQA": VQA_INSTRUCTION,
}

# ImageNet keeps its instruction on the second line (right after "<image>") and ends with CoIN's
# short-answer line: that is why instruction extraction needs an ImageNet rule (taking the last
# line would merge ImageNet into the VQA group).
IMAGENET_LAST_LINE = VQA_INSTRUCTION

# Grounding instructions are followed by ": <expression>"; none may contain ": " itself.
DIVERSE_INSTRUCTIONS: dict[str, list[str]] = {
    "ScienceQA": [
        "Select the correct option and reply with its letter only.",
        "Choose the right answer from the options and give just the option letter.",
        "Pick one of the lettered choices and respond with that letter.",
        "From the listed options, output the letter of the correct choice.",
        "Reply with the letter of the best option among the choices above.",
    ],
    "TextVQA": [
        "Read the text in the image and answer with the written word.",
        "Look at the word written in the picture and reply with it.",
        "Answer by reading the text shown in the image.",
        "Use the text written in the image to answer the question.",
        "Read the letters in the picture and give the word they spell.",
    ],
    "ImageNet": [
        "Name the category of the object in the image.",
        "Which class does the object in the picture belong to?",
        "Identify the object category shown in the image.",
        "Classify the main object and reply with its class name.",
        "Tell the category label of the object in this picture.",
    ],
    "GQA": [
        "Reason about the colors, shapes and positions of the objects and answer briefly.",
        "Answer the question about object attributes and spatial relations.",
        "Look at how the objects are arranged and which colors and shapes they have, then answer.",
        "Use the colors and relative positions of the objects in the scene to answer.",
        "Answer this compositional question about the objects in the scene.",
    ],
    "VizWiz": [
        "The photo may be blurry or noisy; answer briefly, or reply unanswerable if the answer "
        "cannot be seen.",
        "If the question cannot be answered from this low quality photo, say unanswerable.",
        "Answer, or say unanswerable when the blurry photo does not show what is asked.",
        "This photo may be degraded. Reply unanswerable if it cannot be answered.",
        "When the asked object is missing from the noisy photo, answer unanswerable.",
    ],
    "Grounding": [
        "Give the bounding box coordinates of the object this phrase refers to",
        "Locate the region described by this phrase and output its bounding box",
        "Output the bounding box coordinates of the region in this description",
        "Find the object mentioned in this expression and return its bounding box",
        "Provide the box coordinates around the region this text describes",
    ],
    "VQAv2": [
        "Answer with a number when counting, or with yes or no.",
        "Count the objects or answer yes or no.",
        "Reply with a count of the objects or a yes or no answer.",
        "Give the number of objects asked about, or say yes or no.",
        "For counting questions answer with a number; otherwise answer yes or no.",
    ],
    "OCRVQA": [
        "Read the book cover and answer with the title or the author.",
        "Answer using the text printed on this book cover.",
        "Look at the cover of the book and reply with the requested title or author name.",
        "Use the title and author on the book cover to answer.",
        "Answer the question about this book cover by reading it.",
    ],
}

HELDOUT_INSTRUCTIONS: dict[str, list[str]] = {
    "ScienceQA": [
        "Which lettered option is correct? Respond using only its letter.",
        "Look at the choices and answer with the letter of the matching option.",
    ],
    "TextVQA": [
        "Answer with the word that you can read in the image.",
        "Transcribe the written text in the picture as your answer.",
    ],
    "ImageNet": [
        "State the class name of the object shown in the image.",
        "Recognize the object in the picture and state its category.",
    ],
    "GQA": [
        "Consider the spatial layout, colors and shapes of the objects, then answer.",
        "Answer the scene question about the colors, shapes and relations of the objects.",
    ],
    "VizWiz": [
        "Decide whether the question can be answered from the noisy photo; if not, respond unanswerable.",
        "Give a short answer, or unanswerable when the poor quality photo lacks the asked object.",
    ],
    "Grounding": [
        "Return the bounding box location of the region referred to by this description",
        "Predict the bounding box that encloses the object this expression describes",
    ],
    "VQAv2": [
        "Respond with how many objects there are, or with yes or no.",
        "Answer the counting or yes or no question with a number, yes or no.",
    ],
    "OCRVQA": [
        "Find the answer among the title and author printed on the book cover.",
        "Read the cover of this book and give the title or author asked for.",
    ],
}

#: Instruction folder names under the instruction root, keyed by the short variant name.
VARIANT_DIRS: dict[str, str] = {
    "original": "Instructions",
    "diverse": "Instructions_Diverse",
    "heldout": "Instructions_Heldout",
}


def templates(variant: str, task: str) -> list[str]:
    """The instruction templates of ``task`` in ``variant`` (a short name or a folder name)."""
    variant = {v: k for k, v in VARIANT_DIRS.items()}.get(variant, variant)
    if variant == "original":
        return [ORIGINAL_INSTRUCTIONS[task]]
    if variant == "diverse":
        return DIVERSE_INSTRUCTIONS[task]
    if variant == "heldout":
        return HELDOUT_INSTRUCTIONS[task]
    raise ValueError(f"unknown instruction variant {variant!r}; expected one of {list(VARIANT_DIRS)}")


def build_prompt(task: str, question: str | None, instruction: str) -> str:
    """The prompt text (without the ``<image>`` line) in CoIN's layout for ``task``.

    - ImageNet: ``<instruction>\\n<short-answer line>`` (instruction is the line after ``<image>``);
    - Grounding: ``<instruction>: <referring expression>``;
    - all others: ``<question>\\n<instruction>`` (the question may span lines, e.g. with options).
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}")
    if task == "ImageNet":
        return f"{instruction}\n{IMAGENET_LAST_LINE}"
    if not question:
        raise ValueError(f"task {task} needs a question")
    if task == "Grounding":
        return f"{instruction}: {question}"
    return f"{question}\n{instruction}"
