"""Checking a data tree before any training: every record and image of every task and split.

The check reads each task and split with the layout's reader in its collecting mode (``errors=[]``),
so one pass reports every problem of the tree, not only the first: missing files, unreadable or
malformed files, malformed records (file + record index), missing images (count and the first few
paths), images whose header cannot be read (every image is opened: format and size) and, with
``verify_images``, images whose pixels cannot be decoded. The test samples are also run through
their scorer (``mmcit.evaluation.scoring.check_samples``): a sample it cannot score is a problem, one
it scores with a fallback (TextVQA without its ten answers) a note. ``mmcit data check`` prints the
report (``mmcit/cli/data.py``).

``probe_images`` is the image check itself, shared with the readers: images whose files are slow to
reach are opened in ``PROBE_THREADS`` threads, images in the page cache one after another.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from PIL import Image

from mmcit.data.readers import READERS, LayoutReader
from mmcit.errors import ConfigError, DataError
from mmcit.evaluation.scoring import check_samples, sample_problem

if TYPE_CHECKING:
    from mmcit.data.suites import Suite

SPLITS: tuple[str, ...] = ("train", "test")
#: How many example paths / record errors are printed per file; the counts are always complete.
SHOW_FIRST = 5
#: Images opened at once when the files are slow to reach: reading a header is then mostly waiting
#: for the file system, and threads overlap well even on few cores (far better on network storage).
PROBE_THREADS = 16
#: Probed first in the calling thread, timed: a mean probe slower than ``PROBE_SLOW_S`` seconds sends
#: the rest to the threads.
PROBE_SERIAL_FIRST = 64
PROBE_SLOW_S = 0.3e-3


def probe_image(path: Path, decode: bool = False) -> tuple[str, str] | None:
    """None if ``path`` is a usable image, else ``(kind, reason)`` with kind ``missing_image`` or
    ``unreadable_image``.

    Without ``decode`` only the header is read (PIL identifies the format and reads the size: finds
    empty, non-image and header-damaged files, and decompression bombs); with it every pixel is
    decoded too (also finds a truncated body, at the cost of a full decode).
    """
    try:
        with Image.open(path) as im:
            if decode:
                im.load()
            if im.width < 1 or im.height < 1:
                return "unreadable_image", f"{im.format} image of size {im.size}"
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):  # no stat of its own: one syscall less
        return "missing_image", "not found"
    except Exception as e:  # PIL raises many types for broken files
        return "unreadable_image", f"{type(e).__name__}: {e}"
    return None


def probe_images(paths: Sequence[Path], decode: bool = False, threads: int = PROBE_THREADS,
                 slow_s: float | None = None) -> list[tuple[str, str] | None]:
    """``probe_image`` for each path, in order, ``threads`` at a time where the files are slow to
    reach. The first paths are probed in this thread: threads only pay when a probe waits for the
    disk or network, and the rest go to the threads when the mean probe took over ``slow_s``
    seconds (default ``PROBE_SLOW_S``; 0: always threads). Small files in the page cache take ~0.07
    ms each, nearly all of it Python holding the GIL, and 16 threads made the demo's 19,200
    pretraining images take 4.2 s instead of 1.4 s. Each thread takes a run of paths (a task per
    image spent most of the time submitting)."""
    head = min(len(paths), PROBE_SERIAL_FIRST)
    start = time.perf_counter()
    done = [probe_image(p, decode) for p in paths[:head]]
    rest = paths[head:]
    if not rest:
        return done
    if threads < 2 or (time.perf_counter() - start) / head < (PROBE_SLOW_S if slow_s is None else slow_s):
        return done + [probe_image(p, decode) for p in rest]
    size = max(1, min(64, -(-len(rest) // threads)))
    runs = [rest[i:i + size] for i in range(0, len(rest), size)]
    with ThreadPoolExecutor(max_workers=min(threads, len(runs))) as pool:
        return done + [r for run in pool.map(lambda run: [probe_image(p, decode) for p in run], runs) for r in run]


@dataclass
class SplitCheck:
    """What the check found in one ``<Task>/<split>.json``."""

    task: str
    split: str
    path: Path
    ok: int = 0  # records read without any problem
    file_error: DataError | None = None  # missing / unreadable / not a list of records
    missing_images: list[str] = field(default_factory=list)  # image path of each affected record
    unreadable_images: list[str] = field(default_factory=list)
    malformed: list[DataError] = field(default_factory=list)  # one per malformed record

    @property
    def records(self) -> int | None:
        """Number of records in the file (None when the file itself could not be read)."""
        if self.file_error is not None:
            return None
        return self.ok + len(self.missing_images) + len(self.unreadable_images) + len(self.malformed)

    @property
    def n_problems(self) -> int:
        """Problems found in this file (a file-level problem counts once)."""
        return (self.file_error is not None) + len(self.missing_images) + len(self.unreadable_images) \
            + len(self.malformed)

    @property
    def status(self) -> str:
        """``ok``, ``PROBLEMS``, ``MISSING FILE`` or ``BAD FILE``."""
        if self.file_error is not None:
            return "MISSING FILE" if self.file_error.kind == "missing_file" else "BAD FILE"
        return "ok" if self.n_problems == 0 else "PROBLEMS"

    def to_json(self) -> dict:
        """The check as plain data (``mmcit data check --json``)."""
        return {
            "task": self.task, "split": self.split, "path": str(self.path), "status": self.status,
            "records": self.records, "ok": self.ok,
            "file_error": None if self.file_error is None else str(self.file_error),
            "missing_images": {"records": len(self.missing_images),
                               "distinct": len(set(self.missing_images)),
                               "first": first_distinct(self.missing_images)},
            "unreadable_images": {"records": len(self.unreadable_images),
                                  "first": first_distinct(self.unreadable_images)},
            "malformed": [{"index": e.index, "message": str(e)} for e in self.malformed],
        }


@dataclass
class CheckReport:
    """The whole check: one ``SplitCheck`` per task and split, plus notes that are not errors."""

    instruction_root: Path
    image_root: Path
    variant: str
    splits: list[SplitCheck]
    notes: list[str] = field(default_factory=list)
    variant_root: Path | None = None  # the variant's folder, aliases resolved

    @property
    def n_problems(self) -> int:
        """Problems over all files."""
        return sum(s.n_problems for s in self.splits)

    @property
    def ok(self) -> bool:
        """True when no file has a problem."""
        return self.n_problems == 0


def first_distinct(paths: Sequence[str], n: int = SHOW_FIRST) -> list[str]:
    """The first ``n`` distinct paths, in order."""
    return list(dict.fromkeys(paths))[:n]


def parse_tasks(text: str | None, reader: LayoutReader) -> list[str]:
    """``"A,B"`` -> ``["A", "B"]``; None or empty -> every task of the layout. Unknown names are a
    user error: a typo would otherwise show up as a "missing file" and look like a data problem."""
    if not text:
        return reader.task_names
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in reader.task_scorers]
    if unknown:
        raise DataError(f"unknown task(s) {', '.join(unknown)}; the {reader.name} tasks are "
                        f"{', '.join(reader.task_names)}")
    return tasks


def check_tree(instruction_root: Path | str, image_root: Path | str, variant: str = "Instructions",
               tasks: Sequence[str] | None = None, *, verify_images: bool = False,
               splits: Sequence[str] = SPLITS, layout: str = "coin", suite: "Suite | None" = None) -> CheckReport:
    """Check every task and split of a tree in ``layout`` (a registered ``LayoutReader``), or of a
    suite's tasks each with its own reader, and collect all problems (never raises for a problem
    inside the tree; raises ``DataError`` if the roots themselves are not folders)."""
    reader = layout_reader(suite.layout if suite is not None else layout)
    if suite is not None and tasks is None:
        tasks = suite.task_names
    instruction_root, image_root = Path(instruction_root), Path(image_root)
    variant_root = instruction_root / reader.variant_dir(variant)
    # Wrong roots are a usage mistake, not a data problem: one clear error beats a table of
    # every file "missing".
    if not variant_root.is_dir():
        raise DataError(f"instruction variant folder not found: {variant_root}")
    if not image_root.is_dir():
        raise DataError(f"image root not found: {image_root}")
    report = CheckReport(instruction_root, image_root, variant, [], variant_root=variant_root)
    for task in tasks if tasks is not None else reader.task_names:
        if suite is not None:
            reader = suite.reader_for(task)
        for split in splits:
            errors: list[DataError] = []
            data = reader.load_task(instruction_root, image_root, variant, task, splits=(split,),
                                    verify_images=verify_images, errors=errors)
            check = SplitCheck(task, split, reader.split_path(instruction_root, variant, task, split))
            for e in errors:
                if e.kind in ("missing_file", "bad_file") and e.index is None and check.file_error is None:
                    check.file_error = e
                elif e.kind == "missing_image":
                    check.missing_images.append(e.image or "?")
                elif e.kind == "unreadable_image":
                    check.unreadable_images.append(e.image or "?")
                else:
                    check.malformed.append(e)
            samples = getattr(data, split)
            check.ok = len(samples)
            if split == "test" and samples:
                scorer = suite.scorer_for(task) if suite is not None else data.scorer
                check.ok -= _check_scoring(check, scorer, samples, report)
            report.splits.append(check)
        report.notes += reader.notes(image_root, task, splits)
    return report


def _check_scoring(check: SplitCheck, scorer: str, samples: list, report: CheckReport) -> int:
    """Run the scorer over the test samples (``check_samples``, default mode); a sample it cannot
    score becomes a malformed record, a fallback a note. Returns the number refused."""
    refused = 0
    for sample in samples:
        problem = sample_problem(scorer, sample)
        if problem is not None:
            refused += 1
            check.malformed.append(DataError(f"{check.path}, question_id {sample.id}: cannot be scored: {problem}",
                                             path=check.path))
    _, warning = check_samples(scorer, samples)
    if warning is not None:
        report.notes.append(f"{check.task} {check.split}: {warning}")
    return refused


def layout_reader(name: str) -> LayoutReader:
    """The registered reader ``name``, which must read a task-by-task layout."""
    reader = READERS.get(name, "layout")()
    if not isinstance(reader, LayoutReader):
        raise ConfigError(f"reader {name!r} does not read a <root>/<variant>/<task> layout")
    return reader
