"""Reader for CoIN instruction files (real CoIN and the synthetic benchmark alike).

Layout (docs/coin.md): ``<instruction_root>/<Variant>/<Task>/{train,test}.json``, image paths in the
records relative to ``<image_root>``. Train records are LLaVA conversations, test records carry
``question_id``, ``image``, ``text`` and ``answer`` (Grounding adds ``answer_bbox`` and ``size``).
An optional ``val.json`` beside them (the synthetic benchmark writes one; real CoIN has none) holds a
validation split in the test records' format; it is read into ``TaskData.val`` when present.

The task-level instruction is extracted with CoIN's rules: the last line of the first human turn;
ImageNet: the first line after the ``<image>`` tag (its last line is the shared short-answer
sentence); Grounding: the last line's part before ": " (the rest is the referring expression).

What the reader accepts beyond that (docs/real_data.md):

* text-only records: a record without ``image`` (or with ``"image": null``) is a sample without
  pixels, as LLaVA's format allows (ScienceQA has many);
* ScienceQA's number of choices comes from ``<image_root>/ScienceQA/problems.json`` (the problem
  whose id is the record's ``question_id``, as the reference evaluator pairs them), else from the
  prompt's options ("A. x" lines, inline "A. x B. y", "(A) x"); the gold letter must be one of
  them (and agree with problems.json);
* TextVQA's ten answers per question come from ``<image_root>/TextVQA/TextVQA_0.5.1_val.json``; a
  question without them carries ``answers=None`` (the scorer decides what that means per mode).

Every image is checked once per read: it must exist and its header must open with PIL (format and
size; ``verify_images`` decodes every pixel), in parallel threads (``mmcit.data.check.probe_images``).

Every problem with the files raises ``DataError`` naming the file and the record index, before
any training starts. The reader never writes anything.

Two opt-in modes change that default, for tools and runs:

* ``errors=[]`` (collecting mode): instead of raising on the first problem, each problem is
  appended to the list as a ``DataError`` (with ``kind``, ``path``, ``index``, ``image`` set) and
  the offending record, or the whole file for a file-level problem, is left out; reading goes on.
  ``mmcit data check`` uses it to report every problem of a tree at once.
* ``skip_bad_images=True``: samples whose image is missing or unreadable are dropped instead of
  raising. Nothing disappears silently: the counts go into the ``skipped`` dict the caller passes
  (``skipped[task][split] = n``), the problems into its ``dropped`` list, and when the caller passes
  no ``skipped`` a ``SkippedSamplesWarning`` says how many samples were dropped. ``read_stream``
  (what runs use) always reads this way and leaves the decision, refuse or skip, to the run
  (``mmcit.data.preflight``).
"""
from __future__ import annotations

import json
import warnings
from functools import partial
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Callable, Iterable

from data_recipes.arrow_cache import cache_key, cached_parse

from mmcit.data.check import probe_images
from mmcit.data.config import DataConfig
from mmcit.data.prompts import extract_instruction, strip_image_tag
from mmcit.data.readers import READERS, LayoutReader
from mmcit.data.sample import Sample, TaskData
from mmcit.data.stream import StreamData
from mmcit.errors import ConfigError, DataError, SkippedSamplesWarning
from mmcit.evaluation.scorers.coin import SCIENCEQA_OPTIONS, count_options, scienceqa_gold_index

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
SCIENCEQA_PROBLEMS = Path("ScienceQA") / "problems.json"
TEXTVQA_NUM_ANSWERS = 10


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
    """Resolves record image paths under the image root; checks each distinct image once."""

    def __init__(self, image_root: Path, check: bool, verify: bool) -> None:
        self.root, self.check, self.verify = image_root, check, verify
        self._seen: dict[str, tuple[str, str] | None] = {}  # image as written -> problem or None
        self._paths: dict[str, Path] = {}  # image as written -> its path (records often share images)

    def resolve(self, rel: Any, where: str) -> Path:
        """The image's path under the root (lexical checks only: ``problems`` looks at the files)."""
        if isinstance(rel, str) and rel in self._paths:
            return self._paths[rel]
        if not isinstance(rel, str) or not rel:
            raise DataError(f"{where}: 'image' must be a non-empty string, got {rel!r}")
        # Lexical check only: a user may legitimately symlink dataset folders into the image root.
        posix, win = PurePosixPath(rel), PureWindowsPath(rel)
        if posix.is_absolute() or win.is_absolute() or win.drive or ".." in win.parts:
            raise DataError(f"{where}: image path {rel!r} escapes the image root {self.root}")
        path = self._paths[rel] = self.root / rel
        return path

    def problems(self, rels: list[str]) -> dict[str, tuple[str, str]]:
        """``(kind, reason)`` of each image among ``rels`` that is missing or unreadable; the images
        not seen before are opened now, many at a time."""
        if not self.check:
            return {}
        todo = [r for r in dict.fromkeys(rels) if r not in self._seen]
        self._seen.update(zip(todo, probe_images([self.root / r for r in todo], decode=self.verify)))
        return {r: self._seen[r] for r in dict.fromkeys(rels) if self._seen[r] is not None}


def _image_error(where: str, rel: str, root: Path, problem: tuple[str, str], path: Path, index: int) -> DataError:
    kind, reason = problem
    text = f"not found under {root}" if kind == "missing_image" else f"cannot be read: {reason}"
    return DataError(f"{where}: image {rel!r} {text}", kind=kind, path=path, index=index, image=rel)


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
    image = _image(rec, where, images)
    turns = _parse_turns(_field(rec, "conversations", list, where), where)
    return Sample(task=task, id=str(rid), image=image, turns=turns,
                  instruction=extract_instruction(task, turns[0][0]), meta={})


def _image(rec: dict, where: str, images: _ImageChecker) -> Path | None:
    """The record's image path, or None for a text-only record (no ``image``, or ``null``)."""
    if rec.get("image") is None:
        return None
    return images.resolve(_field(rec, "image", str, where), where)


def _test_sample(task: str, rec: Any, where: str, images: _ImageChecker,
                 golds: dict[str, Any] | None) -> Sample:
    if not isinstance(rec, dict):
        raise DataError(f"{where}: record must be an object, got {type(rec).__name__}")
    qid = str(_field(rec, "question_id", (str, int), where))
    image = _image(rec, where, images)
    text = strip_image_tag(_field(rec, "text", str, where))
    # A test record is only useful with its gold answer: say so plainly rather than let a scorer
    # compare against "" or "None" later.
    if rec.get("answer") is None or (isinstance(rec["answer"], str) and not rec["answer"].strip()):
        raise DataError(f"{where}: test record has no gold answer ('answer' missing or empty)")
    answer = _field(rec, "answer", (str, int, float), where)
    meta: dict[str, Any] = {}
    if task == "Grounding":
        size = _field(rec, "size", list, where)
        if len(size) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in size) \
                or not max(size) > 0:
            raise DataError(f"{where}: 'size' must be [width, height] with a positive side, got {size!r}")
        meta = {"bbox": _parse_box(rec.get("answer_bbox", answer), where), "size": list(size)}
    elif task == "ScienceQA":
        meta = {"num_choices": _scienceqa_choices(qid, text, str(answer), golds, where)}
    answers = _textvqa_answers(qid, golds, where) if task == "TextVQA" else None
    return Sample(task=task, id=qid, image=image, turns=[(text, str(answer).strip())],
                  instruction=extract_instruction(task, text), answers=answers, meta=meta)


def _read_gold_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read: {e}", kind="bad_file", path=path) from e


def load_textvqa_golds(image_root: Path) -> dict[str, list[str]] | None:
    """TextVQA's ten gold answers per question id from ``TextVQA_0.5.1_val.json``, if present."""
    path = Path(image_root) / TEXTVQA_GOLDS
    if not path.is_file():
        return None
    data = _read_gold_file(path)
    try:
        return {str(d["question_id"]): [str(a) for a in d["answers"]] for d in data["data"]}
    except (KeyError, TypeError) as e:
        raise DataError(f"{path}: malformed TextVQA answer file: {e!r}", kind="bad_file", path=path) from e


def load_scienceqa_problems(image_root: Path) -> dict[str, dict] | None:
    """ScienceQA's ``problems.json`` (problem id -> problem with ``choices`` and ``answer``), if present."""
    path = Path(image_root) / SCIENCEQA_PROBLEMS
    if not path.is_file():
        return None
    data = _read_gold_file(path)
    if not isinstance(data, dict) or not all(isinstance(p, dict) for p in data.values()):
        raise DataError(f"{path}: expected an object of problems keyed by id", kind="bad_file", path=path)
    return data


def _textvqa_answers(qid: str, golds: dict[str, list[str]] | None, where: str) -> list[str] | None:
    """The question's ten answers, or None (file absent, id not in it: the scorer's mode decides)."""
    answers = golds.get(qid) if golds is not None else None
    if answers is not None and len(answers) != TEXTVQA_NUM_ANSWERS:
        raise DataError(f"{where}: {TEXTVQA_GOLDS.name} has {len(answers)} answers for question_id {qid}; "
                        f"the soft accuracy needs {TEXTVQA_NUM_ANSWERS}")
    return answers


def _scienceqa_choices(qid: str, text: str, answer: str, problems: dict[str, dict] | None, where: str) -> int:
    """The number of choices (problems.json's, else the prompt's options), with the gold checked
    against them: a gold outside the choices could never be scored right."""
    problem = problems.get(qid) if problems is not None else None
    if problem is not None:
        choices, gold = problem.get("choices"), problem.get("answer")
        if not isinstance(choices, list) or not choices or not isinstance(gold, int) \
                or not 0 <= gold < min(len(choices), len(SCIENCEQA_OPTIONS)):
            raise DataError(f"{where}: {SCIENCEQA_PROBLEMS.name} problem {qid!r} has no valid 'choices' and "
                            f"'answer' (got {choices!r}, {gold!r})")
        n = len(choices)
    else:
        n = count_options(text)
        if n == 0:
            source = "no problems.json in the image root" if problems is None else f"{qid!r} not in problems.json"
            raise DataError(f"{where}: ScienceQA: cannot tell the number of choices ({source}, and no options "
                            "'A. x' (one per line or inline) or '(A) x' in the prompt)")
    index = scienceqa_gold_index(answer)
    if index is None or index >= n:
        raise DataError(f"{where}: ScienceQA gold answer {answer!r} is not one of the {n} option letters "
                        f"{', '.join(SCIENCEQA_OPTIONS[:n])}")
    if problem is not None and index != problem["answer"]:
        raise DataError(f"{where}: ScienceQA gold answer {answer!r} disagrees with {SCIENCEQA_PROBLEMS.name} "
                        f"(problem {qid!r}: {SCIENCEQA_OPTIONS[problem['answer']]})")
    return n


#: The gold file each task's test split reads from the image root (part of the parse cache's key).
GOLD_FILES: dict[str, Path] = {"TextVQA": TEXTVQA_GOLDS, "ScienceQA": SCIENCEQA_PROBLEMS}
_GOLD_LOADERS: dict[str, Callable[[Path], dict | None]] = {
    "TextVQA": load_textvqa_golds, "ScienceQA": load_scienceqa_problems}


def variant_dir(variant: str) -> str:
    """Folder name of an instruction variant ("original" -> "Instructions"; folder names pass)."""
    return VARIANT_ALIASES.get(variant, variant)


def load_task(instruction_root: Path | str, image_root: Path | str, variant: str, task: str, *,
              splits: Iterable[str] | None = None, limit: int | None = None,
              check_images: bool = True, verify_images: bool = False,
              scorer: str | None = None, skip_bad_images: bool = False,
              skipped: dict[str, dict[str, int]] | None = None, dropped: list[DataError] | None = None,
              errors: list[DataError] | None = None, cache_dir: Path | str | None = None,
              skip_missing_images: bool = False) -> TaskData:
    """Read one task's splits into a ``TaskData``.

    ``variant`` is a folder name (``Instructions``...) or a short alias (``original``, ``diverse``,
    ``10type``, ``heldout``). ``splits``: the splits to read; None reads ``train`` and ``test``, and
    ``val`` too when the task has a ``val.json`` (a split asked for by name must have its file).
    ``limit`` keeps the first records of each split. ``check_images``
    checks that every image exists and that its header opens; ``verify_images`` decodes every
    pixel instead (slower). ``scorer`` overrides ``TASK_SCORERS`` (needed for a task outside CoIN).
    Splits not requested are empty.

    ``skip_bad_images`` (or its earlier name ``skip_missing_images``) drops samples whose image is
    missing or unreadable (it needs ``check_images``); the number dropped is written to
    ``skipped[task][split]`` for every requested split (0 included), or announced with a
    ``SkippedSamplesWarning`` when ``skipped`` is None; ``dropped`` receives one ``DataError`` per
    dropped sample. ``errors``: collecting mode (see the module docstring); problems are appended to
    it instead of raised, and the records concerned are left out.
    ``cache_dir``: keep each parsed file there as an Arrow dataset (``data_recipes/arrow_cache.py``),
    with the image problems found, and load it from there when the file has not changed (not in
    collecting mode); an entry with image problems is parsed again once one of them is fixed.
    """
    if scorer is None:
        if task not in TASK_SCORERS:
            raise DataError(f"unknown task {task!r}: pass scorer= or use one of {COIN_TASKS}")
        scorer = TASK_SCORERS[task]
    skip = skip_bad_images or skip_missing_images
    if skip and not check_images:
        raise ValueError("skip_bad_images=True needs check_images=True (it must look at the images)")
    # absolute() rather than resolve(): keep the user's symlinks in the paths samples carry.
    instruction_root, image_root = Path(instruction_root), Path(image_root).absolute()
    images = _ImageChecker(image_root, check_images, verify_images)
    loaded: dict[str, list[Sample]] = {"train": [], "test": [], "val": []}
    counts: dict[str, int] = {}
    folder = instruction_root / variant_dir(variant) / task
    if splits is None:  # the default: val only where the tree has it (real CoIN has none)
        splits = ("train", "test", "val") if (folder / "val.json").is_file() else ("train", "test")
    for split in splits:
        if split not in loaded:
            raise ValueError(f"unknown split {split!r}; expected 'train', 'test' or 'val'")
        path = folder / f"{split}.json"
        if cache_dir is not None and errors is None:
            options = {"task": task, "split": split, "limit": limit, "image_root": str(image_root),
                       "check": check_images, "verify": verify_images}
            extra = [image_root / GOLD_FILES[task]] if split != "train" and task in GOLD_FILES else []
            loaded[split], bad = cached_parse(
                Path(cache_dir), cache_key(path, extra, options),
                lambda: _load_file(path, images, task, split, limit),
                keep=lambda problems: not _any_fixed(image_root, problems, verify_images))
        else:
            loaded[split], bad = _load_file(path, images, task, split, limit, errors)
        counts[split] = len(bad)
        if skip:
            if dropped is not None:
                dropped.extend(bad)
        elif errors is not None:
            errors.extend(bad)
        elif bad:
            raise bad[0]
    if skip:
        _report_skipped(task, counts, skipped)
    return TaskData(name=task, scorer=scorer, train=loaded["train"], test=loaded["test"], val=loaded["val"])


def _any_fixed(image_root: Path, problems: list[DataError], verify: bool) -> bool:
    """Whether an image a cached parse found missing or unreadable is usable now."""
    rels = list(dict.fromkeys(e.image for e in problems if e.image))
    return any(p is None for p in probe_images([image_root / r for r in rels], decode=verify))


def _report_skipped(task: str, dropped: dict[str, int], skipped: dict[str, dict[str, int]] | None) -> None:
    """Hand the per-split counts of dropped samples to the caller, or warn if it gave no dict."""
    if skipped is not None:
        skipped.setdefault(task, {}).update(dropped)
    elif sum(dropped.values()):
        detail = ", ".join(f"{n} {split}" for split, n in dropped.items() if n)
        warnings.warn(f"{task}: skipped {detail} sample(s) whose image is missing or unreadable",
                      SkippedSamplesWarning, stacklevel=3)


def _load_file(path: Path, images: _ImageChecker, task: str, split: str, limit: int | None,
               errors: list[DataError] | None = None) -> tuple[list[Sample], list[DataError]]:
    """Samples of one file, and one ``DataError`` per sample left out for a missing or unreadable
    image (the caller raises, skips or collects those; the Arrow cache keeps them with the samples).

    Raises the first other ``DataError`` unless ``errors`` is a list, in which case every problem is
    appended (with ``path`` and ``index`` filled in) and reading goes on without that record.
    """
    try:
        records = _read_records(path)[:limit]
        # Validation records have the test format; a gold file holds both splits' questions.
        golds = _GOLD_LOADERS[task](images.root) if split != "train" and task in _GOLD_LOADERS else None
    except DataError as e:
        if errors is None:
            raise
        errors.append(e)
        return [], []
    parsed: list[tuple[int, Sample]] = []
    for i, rec in enumerate(records):
        where = _where(path, i)
        try:
            if split == "train":
                parsed.append((i, _train_sample(task, rec, where, images)))
            else:
                parsed.append((i, _test_sample(task, rec, where, images, golds)))
        except DataError as e:
            if errors is None:
                raise
            e.path, e.index = path, i
            errors.append(e)
    rels = {i: s.image.relative_to(images.root).as_posix() for i, s in parsed if s.image is not None}
    bad = images.problems(list(rels.values()))
    samples = [s for i, s in parsed if rels.get(i) not in bad]
    problems = [_image_error(_where(path, i), rels[i], images.root, bad[rels[i]], path, i)
                for i, _ in parsed if rels.get(i) in bad]
    return samples, problems


def load_records(path: Path | str, image_root: Path | str, task: str, split: str = "train", *,
                 limit: int | None = None, check_images: bool = True,
                 errors: list[DataError] | None = None) -> list[Sample]:
    """Read one file of records (conversation format for ``train``) outside the task layout, e.g.
    the synthetic benchmark's pretraining captions. ``errors``: collecting mode, as in ``load_task``."""
    images = _ImageChecker(Path(image_root).absolute(), check_images, False)
    samples, bad = _load_file(Path(path), images, task, split, limit, errors=errors)
    if bad and errors is None:
        raise bad[0]
    if errors is not None:
        errors.extend(bad)
    return samples


def load_stream(instruction_root: Path | str, image_root: Path | str, variant: str,
                tasks: list[str], **kwargs: Any) -> list[TaskData]:
    """``load_task`` for each task of a stream, in the given order (same keyword options, so
    ``skipped`` and ``errors`` gather the counts and problems of every task)."""
    return [load_task(instruction_root, image_root, variant, t, **kwargs) for t in tasks]


def read_stream(instruction_root: Path, image_root: Path, variant: str, tasks: list[str], key: str,
                arrow_cache: Path | None = None) -> StreamData:
    """A whole stream in CoIN's layout, with the pretraining records of ``Pretrain/train.json`` when
    the tree has them (the synthetic benchmark's captions). Samples whose image is missing or
    unreadable are left out and handed over in ``StreamData.bad_images``: the run refuses them, or
    skips them with ``data.skip_bad_images`` (``mmcit.data.preflight``)."""
    skipped: dict[str, dict[str, int]] = {}
    dropped: list[DataError] = []
    loaded = load_stream(instruction_root, image_root, variant, tasks, cache_dir=arrow_cache,
                         skip_bad_images=True, skipped=skipped, dropped=dropped)
    pretrain_file = instruction_root / "Pretrain" / "train.json"
    # Read when a base is pretrained, not here (StreamData.captions).
    captions = (partial(load_records, pretrain_file, image_root, task="Pretrain", split="train")
                if pretrain_file.exists() else [])
    return StreamData(loaded, captions, instruction_root, image_root, key, bad_images=dropped, skipped=skipped)


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
        """ScienceQA without problems.json: its choices are counted in the prompts. (TextVQA without
        its ten answers per question gets the scorer's own note from the checker.)"""
        if task == "ScienceQA" and "test" in splits and not (Path(image_root) / SCIENCEQA_PROBLEMS).is_file():
            return [f"ScienceQA: {Path(image_root) / SCIENCEQA_PROBLEMS} not found; the number of choices is "
                    "counted from each prompt's options (the reference evaluator reads problems.json)"]
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
