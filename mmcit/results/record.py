"""The results of a run as they grow, stage by stage, and the dict written to results.json."""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmcit.data.order import order_label
from mmcit.io import write_json
from mmcit.results.costs import run_costs
from mmcit.results.report import build_results, environment

if TYPE_CHECKING:
    from mmcit.config import RunConfig
    from mmcit.methods.base import Method, Stage
    from mmcit.models.wrapper import MMModel
    from mmcit.training.resume import ResumePoint
    from mmcit.training.state import TrainStats


class RunRecord:
    """The accuracy matrix (row j = after stage j), per-stage timing and everything results.json
    holds (with ``model``, the run's ``costs``, mmcit.results.costs); a resumed run starts from the
    rows of its finished stages."""

    def __init__(self, cfg: "RunConfig", tasks: list[str], stages: list["Stage"], method: "Method",
                 point: "ResumePoint", started: float, data_checks: dict | None = None,
                 model: "MMModel | None" = None) -> None:
        self.cfg, self.tasks, self.stages, self.method, self.model = cfg, tasks, stages, method, model
        self.data_checks = data_checks or {}  # skipped samples, scoring warnings (mmcit.data.preflight)
        self.matrix: list[list[float | None]] = list(point.matrix)
        self.timing: list[dict] = list(point.timing)
        self.history = list(point.history)
        self.t0 = started - point.elapsed  # total_seconds counts the interrupted run's time too
        self.env = environment()
        self.general: dict | None = None  # general-skill scores: base, final, retention
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
        elapsed = self.elapsed()
        costs = {} if self.model is None else {"costs": run_costs(self.model, self.method, self.timing, elapsed)}
        return build_results(
            cfg.method.type, self.tasks, [s.name for s in self.stages[: len(self.matrix)]], self.matrix,
            self.method.joint,
            {"name": cfg.name, "scoring_mode": cfg.eval.scoring_mode, "eval_split": cfg.eval.split, "complete": len(self.matrix) == len(self.stages),
             "timing": {"stages": self.timing, "total_seconds": elapsed},
             "method_summary": self.method.summary(), **costs, "environment": self.env,
             **({"data_checks": self.data_checks} if self.data_checks else {}),
             "order": order_label(cfg.data.order), "suite": cfg.data.suite,
             **({"general": self.general} if self.general else {}),
             **({"resumed_with": self.history} if self.history else {})})

    def set_general(self, general: dict) -> None:
        """Record the general-skill scores (``mmcit/evaluation/general.py``)."""
        self.general = general
        self.results = self.snapshot()

    def write(self, run_dir: Path) -> None:
        """Write the latest results to ``run_dir/results.json`` (atomically)."""
        write_json(Path(run_dir) / "results.json", self.results)
