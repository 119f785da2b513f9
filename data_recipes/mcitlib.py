"""Reader for MCITlib's layout (UCIT, MLLM-DCL, MLLM-ACL): one train and one test JSON per task, at
paths a data config names, with the images under per-split folders (docs/suites.md, "Layouts").

MCITlib's data configs give each task ``train_path``, ``test_path``, an optional caption ``anno_path``
and the image folders ``train_folder`` / ``test_folder``. A suite file gives the same per task,
relative to ``data.instruction_root`` (files) and ``data.image_root`` (folders); each key may list
alternatives, the first that exists wins (the releases name folders differently: ``CLEVR`` or
``CLEVR-Math``, ``Domain_data/RS`` or ``RS``...). Task keys:

* ``train``, ``test`` (required), ``anno`` (caption tasks: the COCO-format references, matched to
  the test records by position, ``image_id`` = 1-based line number, as UCIT's evaluator does);
* ``images`` (train image folder, default ``.``), ``test_images`` (default: ``images``);
* ``prompt_suffix`` (appended to every test question at inference, as MLLM-CL's Med script does) and
  ``prompt_suffix_yes_no`` (used instead when the gold is ``Yes`` or ``No``: the Fin script's rule);
* ``instruction``: ``last_line`` (default) or ``first_line``: which line of a prompt routing reads.

Train records are LLaVA conversations (``image`` a path or a list: only the first image is used, and
``mmcit data check`` counts such records). Test records carry ``question_id``, ``image``, ``text``
and ``answer`` (a list for OCR: ``answers``); ``answer_type``, ``type``, ``task``, ``question_type``,
``choices``, ``answer_option`` go to ``Sample.meta`` for the scorers. Gold answers are kept as given
(the scorers' rules decide what to strip). Problems raise ``DataError`` naming the file and record,
or are collected with ``errors=[]`` (``mmcit data check``), as the CoIN reader does.
"""
from __future__ import annotations

import json
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Iterable

from mmcit.data.prompts import strip_image_tag
from mmcit.data.readers import READERS, LayoutReader
from mmcit.data.sample import Sample, TaskData
from mmcit.errors import ConfigError, DataError

TASK_KEYS = frozenset({"train", "test", "anno", "images", "test_images", "prompt_suffix",
                       "prompt_suffix_yes_no", "instruction"})
META_KEYS = ("answer_type", "type", "task", "question_type", "choices", "answer_option")


def _options(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def pick(root: Path, value: Any, want_dir: bool = False) -> Path:
    """The first of the alternatives in ``value`` that exists under ``root`` (else the first)."""
    options = _options(value)
    for rel in options:
        path = root / rel
        if (path.is_dir() if want_dir else path.is_file()):
            return path
    return root / options[0]


def read_json_list(path: Path) -> list[Any]:
    """A JSON list of records; ``DataError`` (``missing_file`` / ``bad_file``) otherwise."""
    if not path.is_file():
        raise DataError(f"{path}: file not found", kind="missing_file", path=path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        raise DataError(f"{path}: cannot read JSON: {e}", kind="bad_file", path=path) from e
    if not isinstance(data, list) or not data:
        raise DataError(f"{path}: expected a non-empty JSON list of records", kind="bad_file", path=path)
    return data


class Images:
    """Resolves record image paths under one folder, checking each once (and opening it if asked)."""

    def __init__(self, root: Path, check: bool, verify: bool) -> None:
        self.root, self.check, self.verify = root, check, verify
        self._ok: set[str] = set()

    def resolve(self, rel: Any, where: str) -> Path:
        """The image's path; ``DataError`` for a bad, escaping, missing or (verify) unreadable one."""
        if isinstance(rel, list) and rel:
            rel = rel[0]  # several images: mmcit feeds one image per sample
        if not isinstance(rel, str) or not rel:
            raise DataError(f"{where}: 'image' must be a non-empty path, got {rel!r}")
        win = PureWindowsPath(rel)
        if PurePosixPath(rel).is_absolute() or win.is_absolute() or win.drive or ".." in win.parts:
            raise DataError(f"{where}: image path {rel!r} escapes the image folder {self.root}")
        path = self.root / rel
        if self.check and rel not in self._ok:
            if not path.is_file():
                raise DataError(f"{where}: image {rel!r} not found under {self.root}", kind="missing_image", image=rel)
            if self.verify:
                try:
                    from PIL import Image
                    with Image.open(path) as im:
                        im.verify()
                except Exception as e:  # PIL raises many types for broken files
                    raise DataError(f"{where}: image {rel!r} cannot be read: {e}", kind="unreadable_image",
                                    image=rel) from e
            self._ok.add(rel)
        return path


def instruction_of(text: str, rule: str) -> str:
    """The task-level instruction routing reads: the prompt's last (or first) non-empty line."""
    lines = [ln.strip() for ln in strip_image_tag(text).split("\n") if ln.strip()]
    if not lines:
        return ""
    return lines[0] if rule == "first_line" else lines[-1]


def _turns(conversations: Any, where: str) -> list[tuple[str, str]]:
    if not isinstance(conversations, list) or not conversations or len(conversations) % 2:
        raise DataError(f"{where}: 'conversations' must be a non-empty list of human/gpt pairs")
    turns = []
    for k in range(0, len(conversations), 2):
        pair = conversations[k:k + 2]
        for msg, role in zip(pair, ("human", "gpt")):
            if not (isinstance(msg, dict) and msg.get("from") == role and isinstance(msg.get("value"), str)):
                raise DataError(f"{where}: turn {k + (role == 'gpt')} must be {{'from': '{role}', 'value': <text>}}")
        turns.append((strip_image_tag(pair[0]["value"]), pair[1]["value"].strip()))
    return turns


def _record(rec: Any, key: str, where: str, types: tuple[type, ...]) -> Any:
    if not isinstance(rec, dict):
        raise DataError(f"{where}: record must be an object, got {type(rec).__name__}")
    value = rec.get(key)
    if value is None or isinstance(value, bool) or not isinstance(value, types):
        raise DataError(f"{where}: missing or mistyped {key!r}: {value!r}")
    return value


class _TaskFiles:
    """One task's settings from the suite, resolved against the roots."""

    def __init__(self, task: str, spec: dict[str, Any], instruction_root: Path, image_root: Path) -> None:
        for key in ("train", "test"):
            if key not in spec:
                raise ConfigError(f"task {task}: the mcitlib reader needs a {key!r} file in the suite")
        self.task, self.spec = task, spec
        self.train = pick(instruction_root, spec["train"])
        self.test = pick(instruction_root, spec["test"])
        self.anno = pick(instruction_root, spec["anno"]) if "anno" in spec else None
        self.images = pick(image_root, spec.get("images", "."), want_dir=True)
        self.test_images = pick(image_root, spec["test_images"], want_dir=True) if "test_images" in spec else self.images
        self.rule = str(spec.get("instruction", "last_line"))


def _train_sample(files: _TaskFiles, rec: Any, where: str, images: Images) -> Sample:
    rid = _record(rec, "id", where, (str, int))
    image = images.resolve(_record(rec, "image", where, (str, list)), where)
    turns = _turns(_record(rec, "conversations", where, (list,)), where)
    n_images = len(rec["image"]) if isinstance(rec["image"], list) else 1
    return Sample(task=files.task, id=str(rid), image=image, turns=turns,
                  instruction=instruction_of(turns[0][0], files.rule), meta={"n_images": n_images})


def _test_sample(files: _TaskFiles, rec: Any, where: str, images: Images, refs: list[str] | None) -> Sample:
    qid = _record(rec, "question_id", where, (str, int))
    raw_image = _record(rec, "image", where, (str, list))
    image = images.resolve(raw_image, where)
    text = strip_image_tag(_record(rec, "text", where, (str,)))
    gold = rec.get("answer") if isinstance(rec, dict) else None
    answers: list[str] | None = None
    if isinstance(gold, list) and gold and all(isinstance(g, (str, int, float)) for g in gold):
        answers, gold = [str(g) for g in gold], str(gold[0])
    if refs is not None:
        answers, gold = refs, refs[0]
    if not isinstance(gold, (str, int, float)) or isinstance(gold, bool) or str(gold) == "":
        raise DataError(f"{where}: test record has no gold answer ('answer' missing or empty)")
    gold = str(gold)
    suffix = files.spec.get("prompt_suffix", "")
    if "prompt_suffix_yes_no" in files.spec and gold in ("Yes", "No"):
        suffix = files.spec["prompt_suffix_yes_no"]  # MLLM-CL's Fin script picks it by the gold
    meta = {k: rec[k] for k in META_KEYS if k in rec}
    meta.update(image=raw_image[0] if isinstance(raw_image, list) else raw_image, question=text)
    return Sample(task=files.task, id=str(qid), image=image, turns=[(text + str(suffix), gold)],
                  instruction=instruction_of(text + str(suffix), files.rule), answers=answers, meta=meta)


def caption_references(path: Path, n: int) -> list[list[str]]:
    """The reference captions of the first ``n`` test records from a COCO-format file, by position
    (record i has ``image_id`` i + 1, as UCIT's evaluator numbers answer lines)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        by_image: dict[int, list[str]] = {}
        for ann in data["annotations"]:
            by_image.setdefault(int(ann["image_id"]), []).append(str(ann["caption"]))
    except FileNotFoundError:
        raise DataError(f"{path}: caption reference file not found", kind="missing_file", path=path) from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a COCO caption file ({e!r})", kind="bad_file", path=path) from e
    missing = [i for i in range(1, n + 1) if not by_image.get(i)]
    if missing:
        raise DataError(f"{path}: no reference caption for image_id {missing[0]} (and {len(missing) - 1} more) of "
                        f"the {n} test records: the file does not match the test file", kind="bad_file", path=path)
    return [by_image[i] for i in range(1, n + 1)]


def _load_split(files: _TaskFiles, split: str, limit: int | None, check: bool, verify: bool,
                skip_missing: bool, errors: list[DataError] | None) -> tuple[list[Sample], int]:
    path = files.train if split == "train" else files.test
    images = Images(files.images if split == "train" else files.test_images, check, verify)
    try:
        records = read_json_list(path)[:limit]
        refs = caption_references(files.anno, len(records)) if split == "test" and files.anno else None
    except DataError as e:
        if errors is None:
            raise
        errors.append(e)
        return [], 0
    samples: list[Sample] = []
    skipped = 0
    for i, rec in enumerate(records):
        where = f"{path}, record {i}"
        try:
            if split == "train":
                samples.append(_train_sample(files, rec, where, images))
            else:
                samples.append(_test_sample(files, rec, where, images, refs[i] if refs else None))
        except DataError as e:
            if skip_missing and e.kind == "missing_image":
                skipped += 1
                continue
            if errors is None:
                raise
            e.path, e.index = path, i
            errors.append(e)
    return samples, skipped


@READERS.register
class MCITLibReader(LayoutReader):
    """MCITlib's layout (UCIT, MLLM-DCL, MLLM-ACL): per-task train/test JSON files named by a suite."""

    name = "mcitlib"
    task_keys = TASK_KEYS

    def __init__(self, specs: dict[str, dict[str, Any]] | None = None) -> None:
        self.specs = dict(specs or {})
        self._multi_image: dict[str, int] = {}  # task -> train records with several images (last read)

    @property
    def task_scorers(self) -> dict[str, str]:  # type: ignore[override]
        """No scorer of its own: a suite names each task's scorer."""
        return {}

    @property
    def task_names(self) -> list[str]:
        """The tasks a suite has given settings for."""
        return list(self.specs)

    def with_tasks(self, specs: dict[str, dict[str, Any]]) -> "MCITLibReader":
        """A reader of these tasks (task -> the suite's settings)."""
        return MCITLibReader(specs)

    def variant_dir(self, variant: str) -> str:
        """One instruction variant, the files as released: the root itself."""
        return ""

    def _files(self, instruction_root: Path | str, image_root: Path | str, task: str) -> _TaskFiles:
        if task not in self.specs:
            raise DataError(f"unknown task {task!r} for the mcitlib reader; a suite names its tasks "
                            f"({', '.join(self.specs) or 'none given'})")
        return _TaskFiles(task, self.specs[task], Path(instruction_root), Path(image_root).absolute())

    def split_path(self, instruction_root: Path | str, variant: str, task: str, split: str) -> Path:
        """The train or test file the suite names for ``task`` (its first existing alternative)."""
        files = self._files(instruction_root, ".", task)
        return files.train if split == "train" else files.test

    def load_task(self, instruction_root: Path | str, image_root: Path | str, variant: str, task: str, *,
                  splits: Iterable[str] = ("train", "test"), limit: int | None = None, check_images: bool = True,
                  verify_images: bool = False, skip_missing_images: bool = False,
                  skipped: dict[str, dict[str, int]] | None = None, errors: list[DataError] | None = None,
                  **_: Any) -> TaskData:
        """One task's splits, with the options of the CoIN reader (``errors``: collecting mode)."""
        files = self._files(instruction_root, image_root, task)
        loaded: dict[str, list[Sample]] = {"train": [], "test": []}
        for split in splits:
            if split not in loaded:
                raise ValueError(f"unknown split {split!r}; expected 'train' or 'test'")
            loaded[split], n = _load_split(files, split, limit, check_images, verify_images, skip_missing_images,
                                           errors)
            if skipped is not None:
                skipped.setdefault(task, {})[split] = n
        if "train" in splits:
            self._multi_image[task] = sum(s.meta.get("n_images", 1) > 1 for s in loaded["train"])
        return TaskData(name=task, scorer="", train=loaded["train"], test=loaded["test"])

    def notes(self, image_root: Path, task: str, splits) -> list[str]:
        """Train records with several images, of the task this reader read last (only the first
        image is fed to the model)."""
        n = self._multi_image.get(task, 0) if "train" in splits else 0
        return [f"{task}: {n} train record(s) with several images; mmcit uses the first image of each"] if n else []

    def validate(self, cfg) -> None:
        """The layout is read through a suite, never as a ``data.source`` of its own."""
        raise ConfigError("the mcitlib layout is read through a suite: set data.source: suite and "
                          "data.suite: ucit | mllm_dcl | mllm_acl (or a suite file)")
