"""Reader for CoIN instruction files (real CoIN and the synthetic benchmark alike).

Layout (docs/COIN.md): ``<instruction_root>/<Variant>/<Task>/{train,test}.json``, image paths in the
records relative to ``<image_root>``. Train records are LLaVA conversations, test records carry
``question_id``, ``image``, ``text`` and ``answer`` (Grounding adds ``answer_bbox`` and ``size``).

The task-level instruction is extracted with CoIN's rules: the last line of the first human turn;
ImageNet: the first line after the ``<image>`` tag (its last line is the shared short-answer
sentence); Grounding: the last line's part before ": " (the rest is the referring expression).

Every problem with the files raises ``DataError`` naming the file and the record index, before
any training starts. The reader never writes anything.
"""
from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Iterable

from mmcit.data.sample import Sample, TaskData

#: Scorer name of each CoIN task, in CoIN's order.
TASK_SCORERS: dict[str, str] = {
    "ScienceQA": "scienceqa", "TextVQA": "textvqa", "ImageNet": "imagenet", "GQA": "gqa",
    "VizWiz": "vizwiz", "Grounding": "grounding", "VQAv2": "vqav2", "OCRVQA": "ocrvqa",
}
COIN_TASKS: list[str] = list(TASK_SCORERS)

#: Short variant names accepted besides the folder names themselves.
VARIANT_ALIASES: dict[str, str] = {
    "original": "Instructions", "diverse": "Instructions_Diverse", "10type": "Instructions_10Type",
    "heldout": "Instructions_Heldout",
}
TEXTVQA_GOLDS = Path("TextVQA") / "TextVQA_0.5.1_val.json"
_OPTION_LINE = re.compile(r"^[A-Z]\. ", re.MULTILINE)


class DataError(ValueError):
    """A benchmark file is missing, unreadable or malformed; the message names file and record."""


def strip_image_tag(text: str) -> str:
    """``text`` without the ``<image>`` tag and the newline that separates it from the prompt."""
    return text.replace("<image>\n", "").replace("\n<image>", "").replace("<image>", "").strip()


def extract_instruction(task: str, prompt: str) -> str:
    """The task-level instruction of a prompt (with or without ``<image>``), by CoIN's rules."""
    lines = [ln.strip() for ln in strip_image_tag(prompt).split("\n") if ln.strip()]
    if not lines:
        return ""
    if task == "ImageNet":
        return lines[0]
    if task == "Grounding":
        return lines[-1].split(": ", 1)[0]
    return lines[-1]


def _where(path: Path, index: int | None) -> str:
    return f"{path}" if index is None else f"{path}, record {index}"


def _read_records(path: Path) -> list[Any]:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read: {e}") from e
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    if not data:
        raise DataError(f"{path}: empty task file (no records)")
    return data


class _ImageChecker:
    """Resolves record image paths under the image root and checks them once each."""

    def __init__(self, image_root: Path, check: bool, verify: bool) -> None:
        self.root, self.check, self.verify = image_root, check, verify
        self._ok: set[str] = set()

    def resolve(self, rel: Any, where: str) -> Path:
        if not isinstance(rel, str) or not rel:
            raise DataError(f"{where}: 'image' must be a non-empty string, got {rel!r}")
        # Lexical check only: a user may legitimately symlink dataset folders into the image root.
        posix, win = PurePosixPath(rel), PureWindowsPath(rel)
        if posix.is_absolute() or win.is_absolute() or win.drive or ".." in win.parts:
            raise DataError(f"{where}: image path {rel!r} escapes the image root {self.root}")
        path = self.root / rel
        if self.check and rel not in self._ok:
            if not path.is_file():
                raise DataError(f"{where}: image {rel!r} not found under {self.root}")
            if self.verify:
                try:
                    from PIL import Image
                    with Image.open(path) as im:
                        im.verify()
                except Exception as e:  # PIL raises many types for broken files
                    raise DataError(f"{where}: image {rel!r} cannot be read: {e}") from e
            self._ok.add(rel)
        return path


def _field(rec: dict, key: str, types: type | tuple[type, ...], where: str) -> Any:
    if key not in rec:
        raise DataError(f"{where}: missing key {key!r}")
    value = rec[key]
    if not isinstance(value, types) or isinstance(value, bool):
        raise DataError(f"{where}: {key!r} has type {type(value).__name__}")
    return value


def _parse_turns(conversations: Any, where: str) -> list[tuple[str, str]]:
    if not isinstance(conversations, list) or not conversations:
        raise DataError(f"{where}: 'conversations' must be a non-empty list")
    if len(conversations) % 2:
        raise DataError(f"{where}: 'conversations' must hold human/gpt pairs, "
                        f"got {len(conversations)} turns")
    turns = []
    for k in range(0, len(conversations), 2):
        pair = conversations[k:k + 2]
        for msg, role in zip(pair, ("human", "gpt")):
            valid = isinstance(msg, dict) and msg.get("from") == role and isinstance(msg.get("value"), str)
            if not valid:
                raise DataError(f"{where}: turn {k + (role == 'gpt')} must be a {role} message "
                                f"{{'from': '{role}', 'value': <text>}}")
        turns.append((strip_image_tag(pair[0]["value"]), pair[1]["value"].strip()))
    return turns


def _parse_box(value: Any, where: str) -> list[float]:
    try:
        nums = json.loads(value) if isinstance(value, str) else value
        box = [float(v) for v in nums]
    except (ValueError, TypeError) as e:
        raise DataError(f"{where}: 'answer_bbox' is not a box: {value!r}") from e
    if len(box) != 4:
        raise DataError(f"{where}: 'answer_bbox' must have 4 numbers, got {value!r}")
    return box


def _train_sample(task: str, rec: Any, where: str, images: _ImageChecker) -> Sample:
    if not isinstance(rec, dict):
        raise DataError(f"{where}: record must be an object, got {type(rec).__name__}")
    rid = _field(rec, "id", (str, int), where)
    image = images.resolve(_field(rec, "image", str, where), where)
    turns = _parse_turns(_field(rec, "conversations", list, where), where)
    return Sample(task=task, id=str(rid), image=image, turns=turns,
                  instruction=extract_instruction(task, turns[0][0]), meta={})


def _test_sample(task: str, rec: Any, where: str, images: _ImageChecker,
                 golds: dict[str, list[str]] | None) -> Sample:
    if not isinstance(rec, dict):
        raise DataError(f"{where}: record must be an object, got {type(rec).__name__}")
    qid = str(_field(rec, "question_id", (str, int), where))
    image = images.resolve(_field(rec, "image", str, where), where)
    text = strip_image_tag(_field(rec, "text", str, where))
    answer = _field(rec, "answer", (str, int, float), where)
    meta: dict[str, Any] = {}
    if task == "Grounding":
        size = _field(rec, "size", list, where)
        if len(size) != 2 or not all(isinstance(v, (int, float)) for v in size):
            raise DataError(f"{where}: 'size' must be [width, height], got {size!r}")
        meta = {"bbox": _parse_box(rec.get("answer_bbox", answer), where), "size": list(size)}
    elif task == "ScienceQA":
        meta = {"num_choices": len(_OPTION_LINE.findall(text))}
    answers = golds.get(qid) if golds is not None else None
    return Sample(task=task, id=qid, image=image, turns=[(text, str(answer).strip())],
                  instruction=extract_instruction(task, text), answers=answers, meta=meta)


def load_textvqa_golds(image_root: Path) -> dict[str, list[str]] | None:
    """TextVQA's ten gold answers per question id from ``TextVQA_0.5.1_val.json``, if present."""
    path = Path(image_root) / TEXTVQA_GOLDS
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {str(d["question_id"]): [str(a) for a in d["answers"]] for d in data["data"]}
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: malformed TextVQA answer file: {e!r}") from e


def variant_dir(variant: str) -> str:
    """Folder name of an instruction variant ("original" -> "Instructions"; folder names pass)."""
    return VARIANT_ALIASES.get(variant, variant)


def load_task(instruction_root: Path | str, image_root: Path | str, variant: str, task: str, *,
              splits: Iterable[str] = ("train", "test"), limit: int | None = None,
              check_images: bool = True, verify_images: bool = False,
              scorer: str | None = None) -> TaskData:
    """Read one task's splits into a ``TaskData``.

    ``variant`` is a folder name (``Instructions``...) or a short alias (``original``, ``diverse``,
    ``10type``, ``heldout``). ``limit`` keeps the first records of each split. ``check_images``
    checks that every image exists; ``verify_images`` also opens it with PIL (slower). ``scorer``
    overrides ``TASK_SCORERS`` (needed for a task outside CoIN). Splits not requested are empty.
    """
    if scorer is None:
        if task not in TASK_SCORERS:
            raise DataError(f"unknown task {task!r}: pass scorer= or use one of {COIN_TASKS}")
        scorer = TASK_SCORERS[task]
    # absolute() rather than resolve(): keep the user's symlinks in the paths samples carry.
    instruction_root, image_root = Path(instruction_root), Path(image_root).absolute()
    images = _ImageChecker(image_root, check_images, verify_images)
    loaded: dict[str, list[Sample]] = {"train": [], "test": []}
    for split in splits:
        if split not in loaded:
            raise ValueError(f"unknown split {split!r}; expected 'train' or 'test'")
        path = instruction_root / variant_dir(variant) / task / f"{split}.json"
        loaded[split] = _load_file(path, images, task, split, limit)
    return TaskData(name=task, scorer=scorer, train=loaded["train"], test=loaded["test"])


def _load_file(path: Path, images: _ImageChecker, task: str, split: str, limit: int | None) -> list[Sample]:
    records = _read_records(path)[:limit]
    golds = load_textvqa_golds(images.root) if split == "test" and task == "TextVQA" else None
    if split == "train":
        return [_train_sample(task, rec, _where(path, i), images) for i, rec in enumerate(records)]
    return [_test_sample(task, rec, _where(path, i), images, golds) for i, rec in enumerate(records)]


def load_records(path: Path | str, image_root: Path | str, task: str, split: str = "train", *,
                 limit: int | None = None, check_images: bool = True) -> list[Sample]:
    """Read one file of records (conversation format for ``train``) outside the task layout, e.g.
    the synthetic benchmark's pretraining captions."""
    images = _ImageChecker(Path(image_root).absolute(), check_images, False)
    return _load_file(Path(path), images, task, split, limit)


def load_stream(instruction_root: Path | str, image_root: Path | str, variant: str,
                tasks: list[str], **kwargs: Any) -> list[TaskData]:
    """``load_task`` for each task of a stream, in the given order (same keyword options)."""
    return [load_task(instruction_root, image_root, variant, t, **kwargs) for t in tasks]
