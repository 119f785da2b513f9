"""Evaluation: batched greedy generation, per-sample routing, scoring, CoIN answer files."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from mmcit.data.collate import collate
from mmcit.data.sample import Sample, TaskData
from mmcit.evaluation.config import EvalConfig
from mmcit.evaluation.scoring import score_task
from mmcit.io import write_jsonl
from mmcit.methods.base import Method, Stage
from mmcit.models.wrapper import MMModel
from mmcit.training import distributed as dist


@dataclass
class TaskResult:
    """One task's evaluation: accuracy in %, the answers, per-sample scores, seconds."""

    task: str
    accuracy: float
    predictions: list[str]
    scores: list[float]
    seconds: float


def generate_answers(
    model: MMModel,
    samples: list[Sample],
    adapters: list[str | None],
    batch_size: int,
    max_new_tokens: int,
    progress: bool = True,
    desc: str = "eval",
) -> list[str]:
    """Answer every sample with the adapter chosen for it; samples are grouped by adapter so
    that each adapter is switched to once per batch, and answers come back in input order."""
    encoder = model.encoder()
    pad = model.tokenizer.pad_token_id
    by_adapter: dict[str | None, list[int]] = {}
    for i, name in enumerate(adapters):
        by_adapter.setdefault(name, []).append(i)
    answers: list[str] = [""] * len(samples)
    previous = model.active_adapter
    model.eval()
    bar = tqdm(total=len(samples), desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    for name, indices in by_adapter.items():
        if name is not None:
            model.set_adapter(name)
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            batch = collate([encoder.encode_prompt(samples[i]) for i in chunk], pad, "left")
            for i, text in zip(chunk, model.generate(batch, max_new_tokens)):
                answers[i] = text
            bar.update(len(chunk))
    bar.close()
    model.set_adapter(previous)
    return answers


def evaluate_task(
    model: MMModel,
    method: Method,
    task: TaskData,
    *,
    batch_size: int,
    max_new_tokens: int,
    scoring_mode: str,
    answers_file: Path | None = None,
    model_id: str = "mmcit",
    progress: bool = True,
    split: str = "test",
) -> TaskResult:
    """Route, answer (sharded across processes) and score one task's samples of ``split`` (test or
    val); with ``answers_file``, write the answers in CoIN's answer-file layout."""
    start = time.perf_counter()
    samples = task.split(split)
    adapters = method.select_adapter(samples)  # every process routes all samples: counts stay equal
    # Data parallel: each process answers its share; every process gets all answers back.
    predictions = dist.gather_shards(generate_answers(
        model, dist.shard(samples), dist.shard(adapters), batch_size, max_new_tokens, progress,
        desc=f"eval {task.name}"), len(samples))
    accuracy, scores = score_task(task.scorer, predictions, samples, mode=scoring_mode)
    if answers_file is not None:
        write_jsonl(answers_file, answer_records(samples, predictions, model_id))
    return TaskResult(task.name, accuracy, predictions, scores, time.perf_counter() - start)


def answer_records(samples: list[Sample], predictions: list[str], model_id: str) -> list[dict]:
    """Rows in the layout of CoIN's reference answer files (one JSON object per line)."""
    return [
        {
            "question_id": s.id,
            "prompt": s.prompt,
            "text": p,
            "answer_id": f"{model_id}-{s.id}",
            "model_id": model_id,
            "metadata": {},
        }
        for s, p in zip(samples, predictions)
    ]


def evaluate_stage(model: MMModel, method: Method, stage: Stage, tasks: list[str], cfg: EvalConfig,
                   run_dir: Path, model_id: str, progress: bool = True) -> tuple[list[float | None], float]:
    """Evaluate every task of ``stage.evaluate`` on the split ``cfg.split`` names; returns the
    accuracy row (one cell per task of the stream, None where not evaluated) and the seconds it took.
    Rank 0 writes the answer files to ``run_dir/answers/NN_<stage>/<task>.jsonl``."""
    row: list[float | None] = [None] * len(tasks)
    seconds = 0.0
    folder = Path(run_dir) / "answers" / f"{stage.index + 1:02d}_{stage.name}"
    with dist.gathered(model):  # FSDP: whole weights while generating, sharded again after
        for task in stage.evaluate:
            res = evaluate_task(model, method, task, batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens,
                                scoring_mode=cfg.scoring_mode, model_id=model_id, progress=progress,
                                answers_file=folder / f"{task.name}.jsonl" if dist.is_main() else None,
                                split=cfg.split)
            row[tasks.index(task.name)] = round(res.accuracy, 4)
            seconds += res.seconds
    return row, seconds
