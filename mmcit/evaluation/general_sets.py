"""General-skill sets in their standard (LLaVA ``playground/data/eval``) layouts: MME, POPE, SEED-Bench
and MMBench, read into test samples whose ``meta`` carries what the set's scoring needs.

* MME: ``llava_mme.jsonl`` (question_id ``<category>/<image file>``) + the release folder
  ``MME_Benchmark_release_version`` (images and the ground truth: ``<cat>/questions_answers_YN/
  <stem>.txt`` for artwork, celebrity, landmark, posters and scene, images in ``<cat>/images/``;
  else ``<cat>/<stem>.txt`` beside the image; lines ``question<TAB>Yes|No``). Samples follow the
  ground-truth files, two questions per image, in file order (MME's acc+ pairs them).
* POPE: ``llava_pope_test.jsonl`` (``category`` adversarial / popular / random) + a folder with
  ``coco_pope_<category>.json`` (JSON lines with ``label``), paired by position within a category.
* SEED-Bench: ``llava-seed-bench.jsonl`` + ``SEED-Bench.json`` (``questions`` with ``question_id``,
  ``answer``, ``question_type_id``, ``data_type``; ``question_type`` name -> id).
* MMBench: ``mmbench_dev_*.tsv`` (index, question, hint, A-D, answer, category, base64 image); every
  question is asked once per circular shift of its options (MMBench's CircularEval); images are
  decoded once into ``cache_dir``.

Scoring: ``mmcit/evaluation/general_scores.py``. Problems with the files raise ``DataError``.
"""
from __future__ import annotations

import base64
import csv
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from mmcit.data.sample import Sample
from mmcit.errors import DataError
from mmcit.evaluation.config import GENERAL_SETS  # noqa: F401  (re-exported)
from mmcit.io import atomic_path

MME_YN_FOLDERS = ("artwork", "celebrity", "landmark", "posters", "scene")
MME_SUFFIX = " Please answer yes or no."
MMBENCH_SUFFIX = "\nAnswer with the option's letter from the given choices directly."
LETTERS = "ABCDEFGHIJ"


def read_jsonl(path: Path) -> list[dict]:
    """The objects of a JSON-lines file (blank lines skipped); ``DataError`` naming file and line."""
    if not path.is_file():
        raise DataError(f"{path}: file not found", kind="missing_file", path=path)
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}, line {n}: invalid JSON: {e.msg}", path=path) from e
            if not isinstance(row, dict):
                raise DataError(f"{path}, line {n}: expected a JSON object", path=path)
            rows.append(row)
    return rows


def _sample(task: str, qid: Any, image: Path, text: str, gold: str, **meta: Any) -> Sample:
    lines = [ln for ln in text.split("\n") if ln.strip()]
    return Sample(task=task, id=str(qid), image=image, turns=[(text, gold)],
                  instruction=lines[-1].strip() if lines else "", meta=meta)


def _mme_question(text: str) -> str:
    """The ground-truth question of an MME prompt (LLaVA's converter strips its instructions)."""
    text = text.replace("Answer the question using a single word or phrase.", "").strip()
    for suffix in (MME_SUFFIX, "  Please answer yes or no.", "Please answer yes or no."):
        if text.endswith(suffix.strip()):
            text = text[: -len(suffix.strip())].strip()
    return text


def read_mme(questions: Path, root: Path, limit: int | None = None) -> list[Sample]:
    """MME's samples in ground-truth order (``meta``: category, image key)."""
    asked: dict[tuple[str, str], dict] = {}
    for row in read_jsonl(questions):
        # question_id is <category>/<image file> (or .../images/<file>): category first, file last.
        parts = str(row.get("question_id", "")).split("/")
        asked[(f"{parts[0]}/{parts[-1]}", _mme_question(str(row.get("text", ""))))] = row
    samples: list[Sample] = []
    for category in sorted({key.split("/")[0] for key, _ in asked}):
        yn = category in MME_YN_FOLDERS
        gt_dir = root / category / ("questions_answers_YN" if yn else "")
        for gt in sorted(gt_dir.glob("*.txt")):
            for k, line in enumerate(gt.read_text(encoding="utf-8").splitlines()):
                if not line.strip():
                    continue
                question, _, gold = line.rpartition("\t")
                image = _mme_image(root, category, gt.stem, yn)
                row = asked.get((f"{category}/{image.name}", _mme_question(question)))
                if row is None:
                    raise DataError(f"{gt}, line {k + 1}: no question in {questions} for {category}/{image.name}: "
                                    f"{question!r}", path=gt)
                samples.append(_sample("mme", f"{category}/{image.name}#{k}", image, str(row["text"]),
                                       gold.strip(), category=category, image_key=f"{category}/{image.name}"))
    if not samples:
        raise DataError(f"{root}: no MME ground-truth files for the categories of {questions}", path=root)
    return samples[:limit]


def _mme_image(root: Path, category: str, stem: str, yn: bool) -> Path:
    folder = root / category / ("images" if yn else "")
    for ext in (".jpg", ".png", ".jpeg"):
        if (folder / f"{stem}{ext}").is_file():
            return folder / f"{stem}{ext}"
    raise DataError(f"{folder}: no image {stem}.jpg/.png for its ground-truth file", kind="missing_image")


def read_pope(questions: Path, images: Path, labels: Path, limit: int | None = None) -> list[Sample]:
    """POPE's samples (``meta``: category); each category's labels are paired by position."""
    rows = read_jsonl(questions)
    by_category: dict[str, list[dict]] = {}
    for row in rows:
        by_category.setdefault(str(row.get("category")), []).append(row)
    samples = []
    for category, group in by_category.items():
        golds = [str(r.get("label", "")).strip().lower() for r in read_jsonl(labels / f"coco_pope_{category}.json")]
        if len(golds) < len(group):
            raise DataError(f"{labels / f'coco_pope_{category}.json'}: {len(golds)} labels for {len(group)} "
                            f"{category} questions", path=labels)
        for row, gold in zip(group, golds):
            samples.append(_sample("pope", row["question_id"], images / str(row["image"]), str(row["text"]), gold,
                                   category=category))
    return samples[:limit]


def read_seed(questions: Path, images: Path, anno: Path, limit: int | None = None) -> tuple[list[Sample], dict]:
    """SEED-Bench's asked samples (``meta``: question type, data type) and the annotation totals."""
    try:
        data = json.loads(anno.read_text(encoding="utf-8"))
        gold = {str(q["question_id"]): q for q in data["questions"]}
        types = {int(v): k for k, v in data["question_type"].items()}
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise DataError(f"{anno}: not a SEED-Bench annotation file ({e!r})", path=anno) from e
    samples = []
    for row in read_jsonl(questions):
        q = gold.get(str(row.get("question_id")))
        if q is None:
            raise DataError(f"{questions}: question_id {row.get('question_id')!r} is not in {anno}", path=questions)
        samples.append(_sample("seed", row["question_id"], images / str(row["image"]), str(row["text"]),
                               str(q["answer"]), question_type=types.get(int(q["question_type_id"]), "?"),
                               data_type=str(q.get("data_type", "image"))))
    totals = {"all": len(gold), "image": sum(str(q.get("data_type", "image")) == "image" for q in gold.values())}
    return samples[:limit], totals


def _options(row: dict) -> list[str]:
    out = []
    for letter in LETTERS:
        value = row.get(letter)
        if value is None or str(value).strip() in ("", "nan", "NaN"):
            break
        out.append(str(value))
    return out


def read_mmbench(tsv: Path, cache_dir: Path, limit: int | None = None) -> list[Sample]:
    """MMBench's circular samples: question q with n options is asked n times, options shifted by
    0..n-1 (``meta``: index, rotation, category, options, gold letter)."""
    if not tsv.is_file():
        raise DataError(f"{tsv}: file not found", kind="missing_file", path=tsv)
    csv.field_size_limit(sys.maxsize)  # base64 images exceed csv's default field limit
    with tsv.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    samples = []
    for row in rows[:limit]:
        options = _options(row)
        gold = str(row.get("answer", "")).strip()
        if not options or gold not in LETTERS[: len(options)]:
            raise DataError(f"{tsv}: question {row.get('index')}: options or answer missing", path=tsv)
        image = _decode_image(str(row.get("image", "")), cache_dir, tsv)
        hint = str(row.get("hint") or "").strip()
        for k in range(len(options)):
            shifted = options[k:] + options[:k]
            text = (f"{hint}\n" if hint and hint.lower() != "nan" else "") + str(row["question"])
            text += "".join(f"\n{LETTERS[i]}. {o}" for i, o in enumerate(shifted)) + MMBENCH_SUFFIX
            new_gold = LETTERS[(LETTERS.index(gold) - k) % len(options)]
            samples.append(_sample("mmbench", f"{row['index']}#{k}", image, text, new_gold, index=str(row["index"]),
                                   rotation=k, category=str(row.get("category", "")), options=shifted))
    return samples


def _decode_image(b64: str, cache_dir: Path, tsv: Path) -> Path:
    try:
        raw = base64.b64decode(b64, validate=False)
    except ValueError as e:
        raise DataError(f"{tsv}: an image is not base64 ({e})", path=tsv) from e
    if not raw:
        raise DataError(f"{tsv}: a row has no image", path=tsv)
    path = Path(cache_dir) / "mmbench-images" / f"{hashlib.sha256(raw).hexdigest()[:32]}.img"
    if not path.is_file():
        with atomic_path(path) as tmp:
            tmp.write_bytes(raw)
    return path
