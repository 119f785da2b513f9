"""A cache of parsed instruction files, in the `datasets` library's Arrow format.

Parsing a CoIN file means reading a large JSON file, validating every record and checking every
image path; the result (samples holding image *paths*: images are opened only when a batch is
encoded) is saved once as an Arrow dataset, keyed by the file's path, size and modification time
and by the reader's options, so that the next run loads it without parsing. A changed file gets a
new key; an entry is written to a temporary folder and renamed, so a killed run leaves no half
entry.

An entry also keeps the outcome of the parse's image checks: the samples left out for a missing or
unreadable image, as ``DataError``s (``problems.json`` next to the Arrow files). The images are not
opened again on a hit (that is what makes the cache worth having for hundreds of thousands of
images), except those problems: the caller's ``keep`` looks at them and can ask for a fresh parse
once one is fixed. ``mmcit data check`` re-reads everything.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from mmcit.data.sample import Sample
from mmcit.errors import DataError

CACHE_VERSION = 2  # bump when Sample or the parsing rules change
PROBLEMS_FILE = "problems.json"


def cache_key(path: Path, extra_files: list[Path], options: dict[str, Any]) -> str:
    """Identifies one parse: the file (and any other file it depends on) by path, size and mtime."""
    stats = []
    for p in [path, *extra_files]:
        st = p.stat() if p.exists() else None
        stats.append([str(p.absolute()), st.st_size if st else None, st.st_mtime_ns if st else None])
    blob = json.dumps({"v": CACHE_VERSION, "files": stats, "options": options}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _to_columns(samples: list[Sample]) -> dict[str, list]:
    return {
        "task": [s.task for s in samples],
        "id": [s.id for s in samples],
        "image": [str(s.image) if s.image is not None else None for s in samples],
        "turns": [json.dumps(s.turns, ensure_ascii=False) for s in samples],
        "instruction": [s.instruction for s in samples],
        "answers": [json.dumps(s.answers, ensure_ascii=False) for s in samples],
        "meta": [json.dumps(s.meta, ensure_ascii=False) for s in samples],
    }


def _problems_to_json(problems: list[DataError]) -> list[dict]:
    return [{"message": str(e), "kind": e.kind, "path": None if e.path is None else str(e.path), "index": e.index,
             "image": e.image} for e in problems]


def _problems_from_json(rows: list[dict]) -> list[DataError]:
    return [DataError(r["message"], kind=r["kind"], path=None if r["path"] is None else Path(r["path"]),
                      index=r["index"], image=r["image"]) for r in rows]


def _from_table(table) -> list[Sample]:
    cols = table.to_dict()
    samples = [
        Sample(task=task, id=sid, image=Path(image) if image is not None else None,
               turns=[tuple(t) for t in json.loads(turns)], instruction=instruction, answers=json.loads(answers),
               meta=json.loads(meta))
        for task, sid, image, turns, instruction, answers, meta in zip(
            cols["task"], cols["id"], cols["image"], cols["turns"], cols["instruction"], cols["answers"], cols["meta"])
    ]
    return samples


def cached_parse(cache_root: Path, key: str, parse: Callable[[], tuple[list[Sample], list[DataError]]],
                 keep: Callable[[list[DataError]], bool] | None = None) -> tuple[list[Sample], list[DataError]]:
    """``parse()``'s result (samples, image problems) from the cache entry ``key``, or parsed now and
    stored there. An entry with problems is used only if ``keep(problems)`` says so (else parsed
    again and replaced).

    An empty result is not cached (there is nothing to save time on).
    """
    import datasets

    folder = cache_root / key
    if (folder / "dataset_info.json").exists() and (folder / PROBLEMS_FILE).exists():
        problems = _problems_from_json(json.loads((folder / PROBLEMS_FILE).read_text(encoding="utf-8")))
        if not problems or keep is None or keep(problems):
            return _from_table(datasets.load_from_disk(str(folder))), problems
        shutil.rmtree(folder, ignore_errors=True)
    samples, problems = parse()
    if samples:
        tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        progress = datasets.utils.logging.is_progress_bar_enabled()
        datasets.utils.logging.disable_progress_bar()  # a saving bar per file is noise
        try:
            datasets.Dataset.from_dict(_to_columns(samples)).save_to_disk(str(tmp))
            (tmp / PROBLEMS_FILE).write_text(json.dumps(_problems_to_json(problems)), encoding="utf-8")
        finally:
            if progress:
                datasets.utils.logging.enable_progress_bar()
        if folder.exists():  # another process stored it first
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, folder)
    return samples, problems
