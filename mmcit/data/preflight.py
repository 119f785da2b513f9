"""What a run checks after reading its data and before it builds a model or touches its folder.

Two things would otherwise stop a run midway, after tasks had trained:

* an image that is missing or unreadable. The reader has already opened every image's header (in
  parallel, and kept the outcome in its parse cache) and left such samples out
  (``StreamData.bad_images``). Without ``data.skip_bad_images`` the run refuses: one ``DataError``
  (exit 2) with one line per image; with it, the run goes on without them and results.json counts
  them.
* a test sample its scorer cannot score in the run's ``eval.scoring_mode`` (e.g. TextVQA without its
  ten gold answers in reference mode): refused, one line per task. What default mode scores with a
  fallback (the same TextVQA questions) is a warning, logged and written to results.json.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from mmcit.data.config import DataConfig
from mmcit.data.stream import StreamData
from mmcit.errors import DataError
from mmcit.evaluation.scoring import check_samples

#: How many skipped images results.json lists by name (the counts are always complete).
RECORD_FIRST = 20


@dataclass
class DataChecks:
    """What the pre-flight check let through: skipped samples and scoring warnings."""

    skipped: dict[str, dict[str, int]] = field(default_factory=dict)  # task -> split -> samples left out
    skipped_images: list[str] = field(default_factory=list)  # one line per distinct image
    warnings: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """The part of results.json that says what the data lacked ({} when nothing)."""
        out: dict[str, Any] = {}
        if self.skipped_images:
            out["skipped_samples"] = {t: dict(s) for t, s in self.skipped.items() if sum(s.values())}
            out["skipped_images"] = {"count": len(self.skipped_images), "first": self.skipped_images[:RECORD_FIRST]}
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


def image_lines(problems: list[DataError]) -> list[str]:
    """One line per distinct image: the first record's problem, and how many more records use it."""
    by_image: dict[str, list[DataError]] = {}
    for e in problems:
        by_image.setdefault(e.image or str(e), []).append(e)
    return [str(errs[0]) + (f" (and {len(errs) - 1} more record(s) with this image)" if len(errs) > 1 else "")
            for errs in by_image.values()]


def preflight(data: StreamData, cfg: DataConfig, scoring_mode: str,
              log: Callable[[str], None] = print) -> DataChecks:
    """Refuse the data with a ``DataError`` listing every problem (see the module docstring), or
    return what goes on record."""
    lines = image_lines(data.bad_images)
    problems: list[str] = []
    if lines and not cfg.skip_bad_images:
        problems += [f"{len(lines)} image(s) missing or unreadable, used by {len(data.bad_images)} sample(s); "
                     "nothing was trained: fix them, or set data.skip_bad_images: true to train and evaluate "
                     "without those samples:", *lines]
    checks = DataChecks(skipped=data.skipped if lines else {}, skipped_images=lines)
    for task in data.tasks:
        if not task.test:
            continue
        error, warning = check_samples(task.scorer, task.test, scoring_mode)
        if error is not None:
            problems.append(f"{task.name}: {error}")
        if warning is not None:
            checks.warnings.append(f"{task.name}: {warning}")
    if problems:
        raise DataError("\n".join(problems))
    if lines:
        log(f"skipping {len(data.bad_images)} sample(s) whose image is missing or unreadable "
            f"({len(lines)} image(s), data.skip_bad_images); results.json lists them")
    for warning in checks.warnings:
        log(f"warning: {warning}")
    return checks
