"""``mmcit data check``: validate a data tree (instruction files + images) before any training.

Every image's header is opened (in parallel threads); ``--verify-images`` decodes every pixel. The
test samples are also run through their scorer: what it cannot score is a problem, what default
mode scores with a fallback (TextVQA without its ten answers) a note."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from mmcit.cli.format import format_table
from mmcit.data.check import SHOW_FIRST, CheckReport, first_distinct, check_tree, layout_reader, parse_tasks
from mmcit.data.suites import find_suite
from mmcit.errors import DataError


def format_report(report: CheckReport) -> str:
    """The table, then every problem grouped by file (a few examples each, full counts)."""
    headers = ["task", "split", "records", "ok", "missing img", "unreadable img", "malformed", "status"]
    rows = [[s.task, s.split, s.records, s.ok if s.file_error is None else None,
             len(s.missing_images) if s.file_error is None else None,
             len(s.unreadable_images) if s.file_error is None else None,
             len(s.malformed) if s.file_error is None else None, s.status] for s in report.splits]
    out = [f"tree: {report.variant_root or report.instruction_root} "
           f"(images: {report.image_root})", "", format_table(headers, rows), ""]
    problems = []
    for s in report.splits:
        if s.file_error is not None:
            problems.append(f"- {s.file_error}")
            continue
        if s.missing_images:
            distinct = first_distinct(s.missing_images)
            more = len(set(s.missing_images)) - len(distinct)
            problems.append(f"- {s.path}: {len(s.missing_images)} record(s) with a missing image "
                            f"({len(set(s.missing_images))} distinct): {', '.join(distinct)}"
                            + (f" ... and {more} more" if more > 0 else ""))
        if s.unreadable_images:
            distinct = first_distinct(s.unreadable_images)
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
    parser.add_argument("--tasks", default=None, help="comma-separated tasks (default: all of the layout's)")
    parser.add_argument("--layout", default="coin", help="the reader of the tree's layout (default: coin)")
    parser.add_argument("--suite", default=None,
                        help="check a suite's tasks, each with its reader and files (mmcit ls suites, or a YAML)")
    parser.add_argument("--verify-images", action="store_true",
                        help="decode every image in full, not only its header (slower; also finds files "
                             "whose pixels are truncated)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def cmd_check(args: argparse.Namespace) -> int:
    """Run the check; 0 if the tree has no problem, 1 otherwise (user errors raise DataError)."""
    suite = find_suite(args.suite) if args.suite else None
    if suite is None:
        tasks = parse_tasks(args.tasks, layout_reader(args.layout))
    else:
        tasks = [t.strip() for t in (args.tasks or "").split(",") if t.strip()] or suite.task_names
        unknown = [t for t in tasks if t not in suite.task_names]
        if unknown:
            raise DataError(f"unknown task(s) {', '.join(unknown)}; the {suite.name} tasks are "
                            f"{', '.join(suite.task_names)}")
    variant = args.variant if suite is None or args.variant != "Instructions" else suite.variant
    report = check_tree(args.instruction_root, args.image_root, variant, tasks,
                        verify_images=args.verify_images, layout=args.layout, suite=suite)
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
    """Adds ``data`` with its ``check`` subcommand."""
    data = subparsers.add_parser("data", help="inspect benchmark data")
    sub = data.add_subparsers(dest="data_command", required=True)
    p = sub.add_parser("check", help="validate a data tree: counts, missing images, malformed records")
    add_check_arguments(p)
    p.set_defaults(func=cmd_check)
