"""A run folder as an object: ``Run(run_dir)`` (also ``mmcit.load_run``) reads what a finished or
interrupted run wrote and gives it back as pandas DataFrames and matplotlib Figures.

What it reads: ``results.json`` (tasks, stages, accuracy matrix, metrics, timing, costs, the
method's summary), ``config.yaml``, ``answers/NN_<stage>/<task>.jsonl`` (whose ``metadata`` holds
the gold answer, score, adapter and image path, see ``mmcit.evaluation.generate.answer_records``),
``alpha_trace/NN_<stage>.safetensors`` (methods with an EMA) and ``codebook.json`` (LCIA). Reading
needs neither torch nor the model; only :meth:`Run.ask` loads the model.
"""
from __future__ import annotations

import json
import math
import re
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml

from mmcit.errors import DataError
from mmcit.results import html, plots

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from mmcit.evaluation.predict import Predictor

__all__ = ["Run", "ANSWER_COLUMNS"]

ANSWER_COLUMNS = ["stage_index", "stage", "task", "question_id", "prompt", "prediction", "gold", "score",
                  "adapter", "image"]
_FOLDER = re.compile(r"^(\d+)_(.+)$")


class Run:
    """A run folder (see the module docstring). ``results`` may be passed instead of read from
    ``results.json`` (the recipe does so while it writes the report)."""

    def __init__(self, run_dir: str | Path, results: dict | None = None) -> None:
        self.path = Path(run_dir)
        if results is None:
            file = self.path / "results.json"
            if not file.is_file():
                raise DataError(f"{self.path}: no results.json (not a run folder, or no stage finished yet)",
                                kind="missing_file", path=file)
            results = json.loads(file.read_text(encoding="utf-8"))
        self.results: dict[str, Any] = results
        self._predictor: "Predictor | None" = None

    def __repr__(self) -> str:
        state = "complete" if self.complete else f"{len(self.stages)} stage(s) done"
        return f"Run({str(self.path)!r}, method={self.method!r}, {state})"

    # -- what results.json holds --------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The run's name (``name`` in its config)."""
        return str(self.results.get("name") or self.path.name)

    @property
    def method(self) -> str:
        """The method (``method.type``)."""
        return str(self.results.get("method", ""))

    @property
    def tasks(self) -> list[str]:
        """The stream's tasks, in training order."""
        return list(self.results.get("tasks", []))

    @property
    def stages(self) -> list[str]:
        """The stages finished so far (one per task; a joint run has one)."""
        return list(self.results.get("stages", []))

    @property
    def complete(self) -> bool:
        """Whether every stage of the stream finished."""
        return bool(self.results.get("complete", True))

    @property
    def metrics(self) -> dict[str, float | None]:
        """Average accuracy, forgetting, new accuracy, BWT and MAA (None where undefined)."""
        return dict(self.results.get("metrics") or {})

    @property
    def costs(self) -> dict[str, Any]:
        """What the run cost (``costs`` in results.json; empty when the run did not record it)."""
        return dict(self.results.get("costs") or {})

    @property
    def seed(self) -> int | None:
        """The run's seed (from its config)."""
        return self.config.get("seed")

    @cached_property
    def config(self) -> dict[str, Any]:
        """The resolved config the run saved (``config.yaml``) as plain data; {} if absent."""
        file = self.path / "config.yaml"
        return (yaml.safe_load(file.read_text(encoding="utf-8")) or {}) if file.is_file() else {}

    @property
    def matrix(self) -> pd.DataFrame:
        """The accuracy matrix in %: row = after training that stage, column = evaluated task (NaN
        where not evaluated)."""
        rows = [[(row[i] if i < len(row) and row[i] is not None else math.nan) for i in range(len(self.tasks))]
                for row in self.results.get("accuracy_matrix", [])]
        frame = pd.DataFrame(rows, index=pd.Index(self.stages[: len(rows)], name="after"),
                             columns=pd.Index(self.tasks, name="on"), dtype=float)
        return frame

    def codebook(self) -> dict[str, Any] | None:
        """LCIA's codebook (``codebook.json``: groups, their instructions and adapters, and per stage
        the routing decision); None for a method without one."""
        file = self.path / "codebook.json"
        return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else None

    # -- per-sample answers -------------------------------------------------------------------------
    @cached_property
    def _answers(self) -> pd.DataFrame:
        records = []
        root = self.path / "answers"
        folders = sorted(p for p in root.iterdir() if p.is_dir() and _FOLDER.match(p.name)) if root.is_dir() else []
        for folder in folders:
            index, stage = _FOLDER.match(folder.name).groups()
            for file in sorted(folder.glob("*.jsonl")):
                for line in file.read_text(encoding="utf-8").splitlines():
                    if not line.strip():
                        continue
                    row = json.loads(line)
                    meta = row.get("metadata") or {}
                    records.append([int(index) - 1, stage, file.stem, str(row.get("question_id")), row.get("prompt"),
                                    row.get("text"), meta.get("gold"), meta.get("score"), meta.get("adapter"),
                                    meta.get("image")])
        frame = pd.DataFrame(records, columns=ANSWER_COLUMNS)
        frame["score"] = pd.to_numeric(frame["score"], errors="coerce")
        return frame

    def answers(self, stage: str | int | None = None, task: str | None = None) -> pd.DataFrame:
        """Every evaluated answer: one row per (stage, task, question) with the prediction, gold
        answer, score in [0, 1], the adapter that answered and the image path. ``stage``: a stage
        name, or an index (0-based; -1 the last); ``task``: a task name."""
        frame = self._answers
        if stage is not None:
            if isinstance(stage, int):
                indices = sorted(frame["stage_index"].unique())
                stage_index = indices[stage] if indices else None
                frame = frame[frame["stage_index"] == stage_index]
            else:
                frame = frame[frame["stage"] == stage]
        if task is not None:
            frame = frame[frame["task"] == task]
        return frame.reset_index(drop=True)

    def flips(self, threshold: float = 0.5) -> pd.DataFrame:
        """Samples whose answer changed between the stage that trained their task and the last stage:
        ``kind`` ``forgotten`` (right then, wrong at the end) or ``gained`` (the reverse). Right means
        a score of at least ``threshold``. Tasks trained in the last stage, or in no stage of their
        own (a joint run), have no flips."""
        return _flips(self.answers(), threshold)

    # -- routing and the EMA ------------------------------------------------------------------------
    def routing(self) -> pd.DataFrame:
        """Test samples per (evaluated stage, task) and parameter group: LCIA's routing counts, or
        for other methods the adapter that answered each sample (from the answer files)."""
        counts = (self.results.get("method_summary") or {}).get("routing_counts")
        if counts:
            rows = {(stage, task): groups for stage, c in counts.items() for task, groups in c.get("per_task", {}).items()}
            frame = pd.DataFrame.from_dict(rows, orient="index").fillna(0).astype(int)
            frame.index = pd.MultiIndex.from_tuples(frame.index, names=["stage", "task"])
            frame.columns.name = "group"
            return frame[sorted(frame.columns, key=_natural)]
        answers = self.answers()
        if answers.empty or answers["adapter"].isna().all():
            return pd.DataFrame(index=pd.MultiIndex.from_tuples([], names=["stage", "task"]))
        frame = answers.groupby(["stage_index", "stage", "task", "adapter"]).size().unstack(fill_value=0)
        frame.index = frame.index.droplevel("stage_index")
        frame.columns.name = "adapter"
        return frame

    def alpha_trace(self, stage: str | None = None) -> pd.DataFrame:
        """The EMA's balance weight per optimizer step and parameter group, as recorded during
        training: columns stage, stage_index, step (1-based within the stage), group, alpha (NaN
        where the group did not blend: the first step of a stage, skipped steps). Empty for a
        method without an EMA."""
        from safetensors import safe_open

        frames = []
        folder = self.path / "alpha_trace"
        for file in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
            match = _FOLDER.match(file.stem)
            if not match or (stage is not None and match.group(2) != stage):
                continue
            with safe_open(str(file), framework="numpy") as f:
                values, groups = f.get_tensor("alpha"), json.loads(f.metadata()["groups"])
            frame = pd.DataFrame(values, columns=groups)
            frame.insert(0, "step", range(1, len(frame) + 1))
            frame = frame.melt(id_vars="step", var_name="group", value_name="alpha")
            frame.insert(0, "stage_index", int(match.group(1)) - 1)
            frame.insert(0, "stage", match.group(2))
            frames.append(frame)
        if not frames:
            return pd.DataFrame(columns=["stage", "stage_index", "step", "group", "alpha"])
        return pd.concat(frames, ignore_index=True)

    # -- pictures -----------------------------------------------------------------------------------
    def plot_matrix(self, theme: str = "light") -> "Figure":
        """The accuracy matrix as an annotated heatmap."""
        return plots.matrix_heatmap(self.matrix, f"{self.method}: accuracy (%)", theme)

    def plot_curves(self, theme: str = "light") -> "Figure":
        """Each task's accuracy after every stage from the one that trained it: one line per task."""
        return plots.task_curves(self.matrix, f"{self.method}: accuracy along the stream", theme)

    def plot_alpha(self, groups: list[str] | None = None, theme: str = "light") -> "Figure":
        """The EMA's alpha per step over the stream (each group when there are few or ``groups``
        names them, else the median and the 10-90% band over groups)."""
        return plots.alpha_trace(self.alpha_trace(), f"{self.method}: EMA balance weight", theme, groups)

    def plot_routing(self, stage: str | None = None, theme: str = "light") -> "Figure":
        """Test samples per task and group, one heatmap per evaluated stage (or just ``stage``)."""
        return plots.routing_heatmaps(self.routing(), f"{self.method}: routing of test samples", theme, stage)

    def show_flips(self, n: int = 8, kind: str = "forgotten", theme: str = "light") -> "Figure":
        """A grid of up to ``n`` flipped samples (``forgotten`` or ``gained``) with their image,
        question, gold answer and the answers before and after."""
        flips = self.flips()
        return plots.flip_grid(flips[flips["kind"] == kind].head(n), f"{self.method}: {kind} samples", theme)

    def write_html(self, path: str | Path | None = None) -> Path:
        """Write the self-contained HTML report (default: ``report.html`` in the run folder)."""
        return html.write_run_html(self, Path(path) if path is not None else self.path / "report.html")

    # -- the model ----------------------------------------------------------------------------------
    def ask(self, image: str | Path, prompt: str) -> dict[str, Any]:
        """Answer ``prompt`` about ``image`` with the run's last checkpoint, routed as the method
        routes (LCIA: by the prompt's text alone, no task named); returns the answer, group, adapter and
        similarity. The model is loaded on the first call (this needs torch)."""
        if self._predictor is None:
            from mmcit.evaluation.predict import load_predictor  # lazy: loads torch and the model

            self._predictor = load_predictor(self.path, log=lambda msg: None)
        return self._predictor.answer(image, prompt)


def _natural(name: str) -> tuple:
    """group_2 before group_10."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(name)))


def _flips(answers: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """See :meth:`Run.flips`: each task's answers at the stage that trained it (the stage named
    after it) against the same questions' answers at the last stage."""
    columns = ["kind", "task", "question_id", "prompt", "gold", "before", "after", "score_before", "score_after",
               "adapter_before", "adapter_after", "stage_before", "stage_after", "image"]
    if answers.empty or answers["score"].isna().all():
        return pd.DataFrame(columns=columns)
    last = answers["stage_index"].max()
    own = answers[(answers["stage"] == answers["task"]) & (answers["stage_index"] != last)]
    final = answers[answers["stage_index"] == last][["task", "question_id", "prediction", "score", "adapter", "stage"]]
    both = own.merge(final, on=["task", "question_id"], suffixes=("_before", "_after"))
    right_before, right_after = both["score_before"] >= threshold, both["score_after"] >= threshold
    both = both[right_before != right_after].rename(columns={"prediction_before": "before", "prediction_after": "after"})
    both.insert(0, "kind", ["forgotten" if r else "gained" for r in both["score_before"] >= threshold])
    return both[columns].reset_index(drop=True)
