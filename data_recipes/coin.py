"""Reader for CoIN instruction files (real CoIN and the synthetic benchmark alike).

Layout (docs/coin.md): ``<instruction_root>/<Variant>/<Task>/{train,test}.json``, image paths in the
records relative to ``<image_root>``. Train records are LLaVA conversations, test records carry
``question_id``, ``image``, ``text`` and ``answer`` (Grounding adds ``answer_bbox`` and ``size``).
An optional ``val.json`` beside them (the synthetic benchmark writes one; real CoIN has none) holds a
validation split in the test records' format; it is read into ``TaskData.val`` when present.

The task-level instruction is extracted with CoIN's rules: the last line of the first human turn;
ImageNet: the first line after the ``<image>`` tag (its last line is the shared short-answer
sentence); Grounding: the last line's part before ": " (the rest is the referring expression).

Every problem with the files raises ``DataError`` naming the file and the record index, before
any training starts. The reader never writes anything.

Two opt-in modes change that default, for tools rather than training runs:

* ``errors=[]`` (collecting mode): instead of raising on the first problem, each problem is
  appended to the list as a ``DataError`` (with ``kind``, ``path``, ``index``, ``image`` set) and
  the offending record, or the whole file for a file-level problem, is left out; reading goes on.
  ``mmcit data check`` uses it to report every problem of a tree at once.
* ``skip_missing_images=True``: samples whose image file does not exist are dropped instead of
  raising. Nothing disappears silently: the counts go into the ``skipped`` dict the caller passes
  (``skipped[task][split] = n``), and when the caller passes none a ``SkippedSamplesWarning`` says
  how many samples were dropped.
"""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Callable, Iterable

from data_recipes.arrow_cache import cache_key, cached_parse

from mmcit.data.config import DataConfig
from mmcit.data.prompts import extract_instruction, strip_image_tag
from mmcit.data.readers import READERS, LayoutReader
from mmcit.data.sample import Sample, TaskData
from mmcit.data.stream import StreamData
from mmcit.errors import ConfigError, DataError, SkippedSamplesWarning

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


def _where(path: Path, index: int | None) -> str:
    return f"{path}" if index is None else f"{path}, record {index}"


def _read_records(path: Path) -> list[Any]:
    if not path.is_file():
        raise DataError(f"{path}: file not found", kind="missing_file", path=path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}",
                        kind="bad_file", path=path) from e
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read: {e}", kind="bad_file", path=path) from e
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}",
                        kind="bad_file", path=path)
    if not data:
        raise DataError(f"{path}: empty task file (no records)", kind="bad_file", path=path)
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
                raise DataError(f"{where}: image {rel!r} not found under {self.root}",
                                kind="missing_image", image=rel)
            if self.verify:
                try:
                    from PIL import Image
                    with Image.open(path) as im:
                        im.verify()
                except Exception as e:  # PIL raises many types for broken files
                    raise DataError(f"{where}: image {rel!r} cannot be read: {e}",
                                    kind="unreadable_image", image=rel) from e
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
    # A test record is only useful with its gold answer: say so plainly rather than let a scorer
    # compare against "" or "None" later.
    if rec.get("answer") is None or (isinstance(rec["answer"], str) and not rec["answer"].strip()):
        raise DataError(f"{where}: test record has no gold answer ('answer' missing or empty)")
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
        raise DataError(f"{path}: malformed TextVQA answer file: {e!r}", kind="bad_file", path=path) from e


def variant_dir(variant: str) -> str:
    """Folder name of an instruction variant ("original" -> "Instructions"; folder names pass)."""
    return VARIANT_ALIASES.get(variant, variant)


def load_task(instruction_root: Path | str, image_root: Path | str, variant: str, task: str, *,
              splits: Iterable[str] | None = None, limit: int | None = None,
              check_images: bool = True, verify_images: bool = False,
              scorer: str | None = None, skip_missing_images: bool = False,
              skipped: dict[str, dict[str, int]] | None = None,
              errors: list[DataError] | None = None, cache_dir: Path | str | None = None) -> TaskData:
    """Read one task's splits into a ``TaskData``.

    ``variant`` is a folder name (``Instructions``...) or a short alias (``original``, ``diverse``,
    ``10type``, ``heldout``). ``splits``: the splits to read; None reads ``train`` and ``test``, and
    ``val`` too when the task has a ``val.json`` (a split asked for by name must have its file).
    ``limit`` keeps the first records of each split. ``check_images``
    checks that every image exists; ``verify_images`` also opens it with PIL (slower). ``scorer``
    overrides ``TASK_SCORERS`` (needed for a task outside CoIN). Splits not read are empty.

    ``skip_missing_images`` drops samples whose image does not exist (it needs ``check_images``);
    the number dropped is written to ``skipped[task][split]`` for every requested split (0
    included), or announced with a ``SkippedSamplesWarning`` when ``skipped`` is None.
    ``errors``: collecting mode (see the module docstring); problems are appended to it instead of
    raised, and the records concerned are left out.
    ``cache_dir``: keep each parsed file there as an Arrow dataset (``data_recipes/arrow_cache.py``)
    and load it from there when the file has not changed (not in collecting mode).
    """
    if scorer is None:
        if task not in TASK_SCORERS:
            raise DataError(f"unknown task {task!r}: pass scorer= or use one of {COIN_TASKS}")
        scorer = TASK_SCORERS[task]
    if skip_missing_images and not check_images:
        raise ValueError("skip_missing_images=True needs check_images=True (it must look for the images)")
    # absolute() rather than resolve(): keep the user's symlinks in the paths samples carry.
    instruction_root, image_root = Path(instruction_root), Path(image_root).absolute()
    images = _ImageChecker(image_root, check_images, verify_images)
    loaded: dict[str, list[Sample]] = {"train": [], "test": [], "val": []}
    dropped: dict[str, int] = {}
    folder = instruction_root / variant_dir(variant) / task
    if splits is None:  # the default: val only where the tree has it (real CoIN has none)
        splits = ("train", "test", "val") if (folder / "val.json").is_file() else ("train", "test")
    for split in splits:
        if split not in loaded:
            raise ValueError(f"unknown split {split!r}; expected 'train', 'test' or 'val'")
        path = folder / f"{split}.json"
        if cache_dir is not None and errors is None:
            options = {"task": task, "split": split, "limit": limit, "image_root": str(image_root),
                       "check": check_images, "verify": verify_images, "skip_missing": skip_missing_images}
            extra = [image_root / TEXTVQA_GOLDS] if split != "train" and task == "TextVQA" else []
            loaded[split], dropped[split] = cached_parse(
                Path(cache_dir), cache_key(path, extra, options),
                lambda: _load_file(path, images, task, split, limit, skip_missing_images))
        else:
            loaded[split], dropped[split] = _load_file(path, images, task, split, limit,
                                                       skip_missing_images, errors)
    if skip_missing_images:
        _report_skipped(task, dropped, skipped)
    return TaskData(name=task, scorer=scorer, train=loaded["train"], test=loaded["test"], val=loaded["val"])


def _report_skipped(task: str, dropped: dict[str, int], skipped: dict[str, dict[str, int]] | None) -> None:
    """Hand the per-split counts of dropped samples to the caller, or warn if it gave no dict."""
    if skipped is not None:
        skipped.setdefault(task, {}).update(dropped)
    elif sum(dropped.values()):
        detail = ", ".join(f"{n} {split}" for split, n in dropped.items() if n)
        warnings.warn(f"{task}: skipped {detail} sample(s) whose image is missing",
                      SkippedSamplesWarning, stacklevel=3)


def _load_file(path: Path, images: _ImageChecker, task: str, split: str, limit: int | None,
               skip_missing: bool = False, errors: list[DataError] | None = None,
               ) -> tuple[list[Sample], int]:
    """Samples of one file and the number dropped for a missing image.

    Raises the first ``DataError`` unless ``errors`` is a list, in which case every problem is
    appended (with ``path`` and ``index`` filled in) and reading goes on without that record.
    """
    try:
        records = _read_records(path)[:limit]
        # Validation records have the test format; TextVQA's gold file holds both splits' questions.
        golds = load_textvqa_golds(images.root) if split != "train" and task == "TextVQA" else None
    except DataError as e:
        if errors is None:
            raise
        errors.append(e)
        return [], 0
    samples: list[Sample] = []
    n_skipped = 0
    for i, rec in enumerate(records):
        where = _where(path, i)
        try:
            if split == "train":
                samples.append(_train_sample(task, rec, where, images))
            else:
                samples.append(_test_sample(task, rec, where, images, golds))
        except DataError as e:
            if skip_missing and e.kind == "missing_image":
                n_skipped += 1
                continue
            if errors is None:
                raise
            e.path, e.index = path, i
            errors.append(e)
    return samples, n_skipped


def load_records(path: Path | str, image_root: Path | str, task: str, split: str = "train", *,
                 limit: int | None = None, check_images: bool = True,
                 errors: list[DataError] | None = None) -> list[Sample]:
    """Read one file of records (conversation format for ``train``) outside the task layout, e.g.
    the synthetic benchmark's pretraining captions. ``errors``: collecting mode, as in ``load_task``."""
    images = _ImageChecker(Path(image_root).absolute(), check_images, False)
    return _load_file(Path(path), images, task, split, limit, errors=errors)[0]


def load_stream(instruction_root: Path | str, image_root: Path | str, variant: str,
                tasks: list[str], **kwargs: Any) -> list[TaskData]:
    """``load_task`` for each task of a stream, in the given order (same keyword options, so
    ``skipped`` and ``errors`` gather the counts and problems of every task)."""
    return [load_task(instruction_root, image_root, variant, t, **kwargs) for t in tasks]


def read_stream(instruction_root: Path, image_root: Path, variant: str, tasks: list[str], key: str,
                arrow_cache: Path | None = None) -> StreamData:
    """A whole stream in CoIN's layout, with the pretraining records of ``Pretrain/train.json`` when
    the tree has them (the synthetic benchmark's captions)."""
    loaded = load_stream(instruction_root, image_root, variant, tasks, cache_dir=arrow_cache)
    captions: list[Sample] = []
    pretrain_file = instruction_root / "Pretrain" / "train.json"
    if pretrain_file.exists():
        captions = load_records(pretrain_file, image_root, task="Pretrain", split="train")
    return StreamData(loaded, captions, instruction_root, image_root, key)


@READERS.register
class CoinReader(LayoutReader):
    """CoIN's layout: <instruction_root>/<variant>/<task>/{train,test}.json, images under image_root."""

    name = "coin"
    task_scorers = TASK_SCORERS

    def variant_dir(self, variant: str) -> str:
        return variant_dir(variant)

    def load_task(self, instruction_root: Path | str, image_root: Path | str, variant: str, task: str,
                  **options: Any) -> TaskData:
        return load_task(instruction_root, image_root, variant, task, **options)

    def notes(self, image_root: Path, task: str, splits) -> list[str]:
        """TextVQA without its ten gold answers per question is scored against one answer."""
        if task == "TextVQA" and "test" in splits and not (Path(image_root) / TEXTVQA_GOLDS).is_file():
            return [f"TextVQA: {Path(image_root) / TEXTVQA_GOLDS} not found; TextVQA is then scored against "
                    "the single 'answer' of each test record"]
        return []

    def validate(self, cfg: DataConfig) -> None:
        for key in ("instruction_root", "image_root"):
            if getattr(cfg, key) is None:
                raise ConfigError(f"data.{key} is required when data.source is coin")

    def check(self, cfg: DataConfig) -> list[str]:
        """Missing roots, variant folder or task files (records and images: ``mmcit data check``)."""
        root, images = Path(cfg.instruction_root), Path(cfg.image_root)
        if not images.is_dir():
            return [f"data.image_root: {images} is not a folder"]
        folder = root / variant_dir(cfg.variant)
        if not folder.is_dir():
            return [f"data.instruction_root: no variant folder {folder}"]
        return [f"data.tasks: {folder / t / s}.json not found" for t in cfg.tasks for s in ("train", "test")
                if not (folder / t / f"{s}.json").is_file()]

    def read(self, cfg: DataConfig, cache_dir: Path, log: Callable[[str], None]) -> StreamData:
        instruction_root, image_root = Path(cfg.instruction_root), Path(cfg.image_root)
        # Real CoIN files are large: parsed once, then loaded from the Arrow cache while unchanged.
        key = json.dumps({"source": "coin", "root": str(instruction_root.absolute())}, sort_keys=True)
        return read_stream(instruction_root, image_root, cfg.variant, cfg.tasks, key, cache_dir / "coin-arrow")
