"""Reading a prompt: the ``<image>`` tag, and the task-level instruction routing works with."""
from __future__ import annotations


def strip_image_tag(text: str) -> str:
    """``text`` without the ``<image>`` tag and the newline that separates it from the prompt."""
    return text.replace("<image>\n", "").replace("\n<image>", "").replace("<image>", "").strip()


def extract_instruction(task: str, prompt: str) -> str:
    """The task-level instruction of a prompt (with or without ``<image>``), by CoIN's rules.

    The last line of the prompt; ImageNet: the first line (its last line is the shared short-answer
    sentence); Grounding: the last line's part before ": " (the rest is the referring expression).
    """
    lines = [ln.strip() for ln in strip_image_tag(prompt).split("\n") if ln.strip()]
    if not lines:
        return ""
    if task == "ImageNet":
        return lines[0]
    if task == "Grounding":
        return lines[-1].split(": ", 1)[0]
    return lines[-1]
