"""``mmcit data check``: validate a CoIN tree (instruction files + images) before any training.

The check reads every requested task and split with the CoIN reader in its collecting mode
(``errors=[]``), so one run reports every problem of the tree, not only the first: missing files,
unreadable or malformed files, malformed records (file + record index), missing images (count and
the first few paths) and, with ``--verify-images``, images PIL cannot open. It prints a table per
task and split, then the problems; the exit status is 1 when any problem was found, 0 otherwise.
User errors (an instruction root that does not exist, an unknown task) raise ``DataError`` and the
CLI turns them into a one-line error with exit status 2.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from data_recipes.coin import (
    COIN_TASKS, TASK_SCORERS, TEXTVQA_GOLDS, DataError, load_task, variant_dir,
)

SPLITS: tuple[str, ...] = ("train", "test")
#: How many example paths / record errors are printed per file; the counts are always complete.
SHOW_FIRST = 5


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
        return (self.file_error is not None) + len(self.missing_images) + len(self.unreadable_images) \
            + len(self.malformed)

    @property
    def status(self) -> str:
        if self.file_error is not None:
            return "MISSING FILE" if self.file_error.kind == "missing_file" else "BAD FILE"
        return "ok" if self.n_problems == 0 else "PROBLEMS"

    def to_json(self) -> dict:
        return {
            "task": self.task, "split": self.split, "path": str(self.path), "status": self.status,
            "records": self.records, "ok": self.ok,
            "file_error": None if self.file_error is None else str(self.file_error),
            "missing_images": {"records": len(self.missing_images),
                               "distinct": len(set(self.missing_images)),
                               "first": _first_distinct(self.missing_images)},
            "unreadable_images": {"records": len(self.unreadable_images),
                                  "first": _first_distinct(self.unreadable_images)},
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

    @property
    def n_problems(self) -> int:
        return sum(s.n_problems for s in self.splits)

    @property
    def ok(self) -> bool:
        return self.n_problems == 0


def _first_distinct(paths: Sequence[str], n: int = SHOW_FIRST) -> list[str]:
    return list(dict.fromkeys(paths))[:n]


def parse_tasks(text: str | None) -> list[str]:
    """``"A,B"`` -> ``["A", "B"]``; None or empty -> every CoIN task. Unknown names are a user
    error: a typo would otherwise show up as a "missing file" and look like a data problem."""
    if not text:
        return list(COIN_TASKS)
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASK_SCORERS]
    if unknown:
        raise DataError(f"unknown task(s) {', '.join(unknown)}; CoIN tasks are {', '.join(COIN_TASKS)}")
    return tasks


def check_tree(instruction_root: Path | str, image_root: Path | str, variant: str = "Instructions",
               tasks: Sequence[str] | None = None, *, verify_images: bool = False,
               splits: Sequence[str] = SPLITS) -> CheckReport:
    """Check every task and split of a CoIN tree and collect all problems (never raises for a
    problem inside the tree; raises ``DataError`` if the roots themselves are not folders)."""
    instruction_root, image_root = Path(instruction_root), Path(image_root)
    variant_root = instruction_root / variant_dir(variant)
    # Wrong roots are a usage mistake, not a data problem: one clear error beats a table of
    # every file "missing".
    if not variant_root.is_dir():
        raise DataError(f"instruction variant folder not found: {variant_root}")
    if not image_root.is_dir():
        raise DataError(f"image root not found: {image_root}")
    report = CheckReport(instruction_root, image_root, variant, [])
    for task in tasks if tasks is not None else COIN_TASKS:
        for split in splits:
            errors: list[DataError] = []
            data = load_task(instruction_root, image_root, variant, task, splits=(split,),
                             verify_images=verify_images, errors=errors)
            check = SplitCheck(task, split, variant_root / task / f"{split}.json",
                               ok=len(getattr(data, split)))
            for e in errors:
                if e.kind in ("missing_file", "bad_file") and e.index is None and check.file_error is None:
                    check.file_error = e
                elif e.kind == "missing_image":
                    check.missing_images.append(e.image or "?")
                elif e.kind == "unreadable_image":
                    check.unreadable_images.append(e.image or "?")
                else:
                    check.malformed.append(e)
            report.splits.append(check)
        if task == "TextVQA" and "test" in splits and not (image_root / TEXTVQA_GOLDS).is_file():
            # Not an error (the reader falls back to the single 'answer'), but the scores then
            # differ from the reference's 10-answer soft accuracy.
            report.notes.append(f"TextVQA: {image_root / TEXTVQA_GOLDS} not found; TextVQA is then "
                                "scored against the single 'answer' of each test record")
    return report


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table: text columns left-aligned, numbers right-aligned."""
    cells = [[str(h) for h in headers]] + [["-" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [bool(rows) and all(isinstance(r[i], (int, float)) or r[i] is None for r in rows)
               for i in range(len(headers))]
    lines = []
    for r in cells:
        lines.append("  ".join(c.rjust(w) if num else c.ljust(w)
                               for c, w, num in zip(r, widths, numeric)).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_report(report: CheckReport) -> str:
    """The table, then every problem grouped by file (a few examples each, full counts)."""
    headers = ["task", "split", "records", "ok", "missing img", "unreadable img", "malformed", "status"]
    rows = [[s.task, s.split, s.records, s.ok if s.file_error is None else None,
             len(s.missing_images) if s.file_error is None else None,
             len(s.unreadable_images) if s.file_error is None else None,
             len(s.malformed) if s.file_error is None else None, s.status] for s in report.splits]
    out = [f"CoIN tree: {report.instruction_root / variant_dir(report.variant)} "
           f"(images: {report.image_root})", "", format_table(headers, rows), ""]
    problems = []
    for s in report.splits:
        if s.file_error is not None:
            problems.append(f"- {s.file_error}")
            continue
        if s.missing_images:
            distinct = _first_distinct(s.missing_images)
            more = len(set(s.missing_images)) - len(distinct)
            problems.append(f"- {s.path}: {len(s.missing_images)} record(s) with a missing image "
                            f"({len(set(s.missing_images))} distinct): {', '.join(distinct)}"
                            + (f" ... and {more} more" if more > 0 else ""))
        if s.unreadable_images:
            distinct = _first_distinct(s.unreadable_images)
            problems.append(f"- {s.path}: {len(s.unreadable_images)} record(s) with an unreadable "
                            f"image: {', '.join(distinct)}")
        for e in s.malformed[:SHOW_FIRST]:
            problems.append(f"- {e}")
        if len(s.malformed) > SHOW_FIRST:
            problems.append(f"- {s.path}: ... and {len(s.malformed) - SHOW_FIRST} more malformed record(s)")
    n_files = len(report.splits)
    if problems:
        bad = sum(s.n_problems > 0 for s in report.splits)
        out += [f"{report.n_problems} problem(s) in {bad} of {n_files} file(s):", *problems]
    else:
        total = sum(s.records or 0 for s in report.splits)
        out.append(f"no problems: {total} records in {n_files} file(s)")
    out += [f"note: {n}" for n in report.notes]
    return "\n".join(out)


def add_check_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mmcit data check``."""
    parser.add_argument("--instruction-root", required=True, type=Path,
                        help="folder holding <Variant>/<Task>/{train,test}.json")
    parser.add_argument("--image-root", required=True, type=Path,
                        help="folder the records' image paths are relative to")
    parser.add_argument("--variant", default="Instructions",
                        help="instruction variant folder or alias (original, diverse, 10type, heldout)")
    parser.add_argument("--tasks", default=None,
                        help=f"comma-separated tasks (default: all of {','.join(COIN_TASKS)})")
    parser.add_argument("--verify-images", action="store_true",
                        help="also open every image with PIL (slower; finds truncated files)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def cmd_check(args: argparse.Namespace) -> int:
    """Run the check; 0 if the tree has no problem, 1 otherwise (user errors raise DataError)."""
    report = check_tree(args.instruction_root, args.image_root, args.variant, parse_tasks(args.tasks),
                        verify_images=args.verify_images)
    if args.json:
        print(json.dumps({"instruction_root": str(report.instruction_root),
                          "image_root": str(report.image_root), "variant": report.variant,
                          "ok": report.ok, "problems": report.n_problems,
                          "splits": [s.to_json() for s in report.splits], "notes": report.notes},
                         indent=2))
    else:
        print(format_report(report))
    return 0 if report.ok else 1


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Convenience for the CLI: adds ``data`` with its ``check`` subcommand."""
    data = subparsers.add_parser("data", help="inspect benchmark data")
    sub = data.add_subparsers(dest="data_command", required=True)
    p = sub.add_parser("check", help="validate a CoIN tree: counts, missing images, malformed records")
    add_check_arguments(p)
    p.set_defaults(func=cmd_check)
