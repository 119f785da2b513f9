"""Reading a prompt: the ``<image>`` tag, the spans of a prompt that may be its instruction, and the
task-level instruction of a training prompt.

Routing never needs the task: ``instruction_candidates(prompt)`` lists every span of a prompt that
could be its instruction (each line, each line's part before ": ", and every run of up to
``MAX_SPAN_UNITS`` consecutive sentences, across line breaks), and the router scores them against
the codebook. ``extract_instruction(task, prompt)`` is CoIN's layout rule for training data and
for the reference ``per_file`` routing; what it returns is always one of the prompt's candidates,
so a test prompt laid out like a training prompt offers the router the very string the codebook
holds.
"""
from __future__ import annotations

import re

__all__ = ["MAX_SPAN_UNITS", "extract_instruction", "instruction_candidates", "normalise_text", "prompt_lines",
           "prompt_units", "strip_image_tag"]

#: Longest run of sentences (units) a candidate span joins: instructions have one to three sentences.
MAX_SPAN_UNITS = 3
_SENTENCE_BREAK = re.compile(r"(?<=[.?!])\s+")
_SPACES = re.compile(r"\s+")


def strip_image_tag(text: str) -> str:
    """``text`` without the ``<image>`` tag and the newline that separates it from the prompt."""
    return text.replace("<image>\n", "").replace("\n<image>", "").replace("<image>", "").strip()


def normalise_text(text: str) -> str:
    """``text`` with every run of white space (line breaks included) made one space, stripped."""
    return _SPACES.sub(" ", text).strip()


def prompt_lines(prompt: str) -> list[str]:
    """The non-empty lines of a prompt (``<image>`` tag removed), each white-space normalised."""
    return [ln for ln in (normalise_text(x) for x in strip_image_tag(prompt).split("\n")) if ln]


def prompt_units(prompt: str) -> list[str]:
    """The prompt cut into units, in order: lines, cut again at ": " and after sentence ends.

    Line breaks only separate units, so an instruction written on one line or split over two
    gives the same units wherever a sentence ends, and the same joined spans otherwise.
    """
    units: list[str] = []
    for line in prompt_lines(prompt):
        for part in line.split(": "):
            units.extend(u for u in (x.strip() for x in _SENTENCE_BREAK.split(part)) if u)
    return units


def instruction_candidates(prompt: str, max_units: int = MAX_SPAN_UNITS) -> list[str]:
    """Every span of ``prompt`` that may be its instruction, without duplicates, in prompt order.

    Runs of 1 to ``max_units`` consecutive units joined by one space, then every whole line and
    every line's part before its first ": " (what ``extract_instruction`` can return), so the
    candidates hold the training-time instruction of any prompt in CoIN's layouts.
    """
    units = prompt_units(prompt)
    spans = [" ".join(units[i:i + n]) for i in range(len(units)) for n in range(1, max_units + 1)
             if i + n <= len(units)]
    lines = prompt_lines(prompt)
    spans += lines + [ln.split(": ", 1)[0].strip() for ln in lines if ": " in ln]
    return list(dict.fromkeys(s for s in spans if s))


def extract_instruction(task: str, prompt: str) -> str:
    """The task-level instruction of a training prompt by CoIN's layout rules (reads the task).

    The last line; ImageNet: the first line (its last line is the shared short-answer sentence);
    Grounding: the last line's part before ": " (the rest is the referring expression). Training
    data and the reference ``per_file`` routing use it; per-instance routing does not (it scores
    ``instruction_candidates``, which always include this string).
    """
    lines = prompt_lines(prompt)
    if not lines:
        return ""
    if task == "ImageNet":
        return lines[0]
    if task == "Grounding":
        return lines[-1].split(": ", 1)[0].strip()
    return lines[-1]
