"""The results of a run as they grow, stage by stage, and the dict written to results.json."""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmcit.io import write_json
from mmcit.results.report import build_results, environment

if TYPE_CHECKING:
    from mmcit.config import RunConfig
    from mmcit.methods.base import Method, Stage
    from mmcit.training.resume import ResumePoint
    from mmcit.training.state import TrainStats


class RunRecord:
    """The accuracy matrix (row j = after stage j), per-stage timing and everything results.json
    holds; a resumed run starts from the rows of its finished stages."""

    def __init__(self, cfg: "RunConfig", tasks: list[str], stages: list["Stage"], method: "Method",
                 point: "ResumePoint", started: float) -> None:
        self.cfg, self.tasks, self.stages, self.method = cfg, tasks, stages, method
        self.matrix: list[list[float | None]] = list(point.matrix)
        self.timing: list[dict] = list(point.timing)
        self.history = list(point.history)
        self.t0 = started - point.elapsed  # total_seconds counts the interrupted run's time too
        self.env = environment()
        self.results = self.snapshot()

    def elapsed(self) -> float:
        """Seconds of the run so far, interrupted runs included."""
        return time.perf_counter() - self.t0

    def add(self, stage: "Stage", row: list[float | None], stats: "TrainStats", eval_seconds: float) -> None:
        """Record a finished stage: its row (lower-triangular unless the method is joint) and timing."""
        self.matrix.append(row if self.method.joint else row[: stage.index + 1])
        self.timing.append({"stage": stage.name, "train_seconds": stats.seconds, "steps": stats.steps,
                            "first_loss": stats.first_loss if stats.steps else None,
                            "last_loss": stats.last_loss if stats.steps else None, "eval_seconds": eval_seconds})
        self.results = self.snapshot()

    def snapshot(self) -> dict[str, Any]:
        """The results dict as of now (what results.json holds)."""
        cfg = self.cfg
        return build_results(
            cfg.method.type, self.tasks, [s.name for s in self.stages[: len(self.matrix)]], self.matrix,
            self.method.joint,
            {"name": cfg.name, "scoring_mode": cfg.eval.scoring_mode, "eval_split": cfg.eval.split,
             "complete": len(self.matrix) == len(self.stages),
             "timing": {"stages": self.timing, "total_seconds": self.elapsed()},
             "method_summary": self.method.summary(), "environment": self.env,
             **({"resumed_with": self.history} if self.history else {})})

    def write(self, run_dir: Path) -> None:
        """Write the latest results to ``run_dir/results.json`` (atomically)."""
        write_json(Path(run_dir) / "results.json", self.results)
