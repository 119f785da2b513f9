"""Evaluation: batched greedy generation, per-sample routing, scoring, CoIN answer files."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from mmcit.data.sample import Sample, TaskData
from mmcit.evaluation.config import EvalConfig
from mmcit.evaluation.scoring import score_task
from mmcit.io import write_jsonl
from mmcit.methods.base import Method, Stage
from mmcit.models.tower_cache import MAX_CACHE_BYTES, with_cached_images
from mmcit.models.wrapper import MMModel
from mmcit.progress import Progress
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
    options: EvalConfig | None = None,
) -> list[str]:
    """Answer every sample with the adapter chosen for it; answers come back in input order.

    Samples are grouped by adapter, so that each adapter is switched to once; the speed options of
    ``options`` (an ``EvalConfig``; docs/performance.md) merge each adapter into the weights for its
    batches, use a static KV cache, or reuse each image's tower output."""
    opts = options or EvalConfig()
    encoder = model.encoder()
    previous = model.active_adapter
    by_adapter: dict[str | None, list[int]] = {}
    for i, name in enumerate(adapters):
        by_adapter.setdefault(name, []).append(i)
    kwargs = {"cache_implementation": "static"} if opts.static_cache else {}
    answers: list[str] = [""] * len(samples)
    model.eval()
    bar = Progress(len(samples), desc, enabled=progress)
    for name, indices in by_adapter.items():
        if name is not None:
            model.set_adapter(name)
        with model.merged() if opts.merge_adapters else contextlib.nullcontext():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                batch = model.collate(_encoded(model, encoder, [samples[i] for i in chunk]), "left")
                if opts.image_cache:
                    keys = [str(samples[i].image) for i in chunk if samples[i].image is not None]
                    with model.autocast():
                        batch = with_cached_images(model.peft.get_base_model(), model.to_device(batch), keys,
                                                   model.image_tokens) or batch
                for i, text in zip(chunk, model.generate(batch, max_new_tokens, **kwargs)):
                    answers[i] = text
                bar.update(len(chunk))
    bar.close()
    model.set_adapter(previous)
    return answers


def _encoded(model: MMModel, encoder, samples: list[Sample]) -> list[dict]:
    """``encoder.encode_prompt`` of each sample (the new ones encoded together where the encoder can:
    ``encode_prompts``), kept on the model for the next evaluation of the same test sample (every
    later stage evaluates it again) while the kept pixels stay under MAX_CACHE_BYTES. Encoding is
    deterministic: the same ids and pixels, without decoding the image again."""
    keys = [(s.task, s.id, str(s.image), s.turns[0][0] if s.turns else "") for s in samples]
    rows = [model.encoded_prompts.get(key) for key in keys]
    new = [k for k, row in enumerate(rows) if row is None]
    if new:
        todo = [samples[k] for k in new]
        fresh = encoder.encode_prompts(todo) if hasattr(encoder, "encode_prompts") else \
            [encoder.encode_prompt(s) for s in todo]
        for k, row in zip(new, fresh):
            rows[k] = row
            pixels = row.get("pixel_values")
            size = 0 if pixels is None else pixels.numel() * pixels.element_size()
            if model.encoded_bytes + size <= MAX_CACHE_BYTES:
                model.encoded_prompts[keys[k]] = row
                model.encoded_bytes += size
    return rows  # type: ignore[return-value]


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
    options: EvalConfig | None = None,
    split: str = "test",
) -> TaskResult:
    """Route, answer (sharded across processes) and score one task's samples of ``split`` (test or
    val); with ``answers_file``, write the answers in CoIN's answer-file layout."""
    start = time.perf_counter()
    samples = task.split(split)
    adapters = method.select_adapter(samples)  # every process routes all samples: counts stay equal
    used = [model.active_adapter if a is None else a for a in adapters]  # None keeps the active one
    # Data parallel: each process answers its share; every process gets all answers back.
    predictions = dist.gather_shards(generate_answers(
        model, dist.shard(samples), dist.shard(adapters), batch_size, max_new_tokens, progress,
        desc=f"eval {task.name}", options=options), len(samples))
    accuracy, scores = score_task(task.scorer, predictions, samples, mode=scoring_mode)
    if answers_file is not None:
        write_jsonl(answers_file, answer_records(samples, predictions, model_id, scores, used))
    return TaskResult(task.name, accuracy, predictions, scores, time.perf_counter() - start)


def answer_records(samples: list[Sample], predictions: list[str], model_id: str,
                   scores: list[float] | None = None, adapters: list[str | None] | None = None) -> list[dict]:
    """Rows in the layout of CoIN's reference answer files (one JSON object per line).

    CoIN's files leave ``metadata`` empty; mmcit puts there what the run's analysis needs
    (``mmcit.results.run.Run.answers``): the gold answer, the image path and, when given, the
    sample's score in [0, 1] and the adapter that answered it. Readers of the layout use only
    ``question_id`` and ``text``.
    """
    rows = []
    for k, (s, p) in enumerate(zip(samples, predictions)):
        meta = {"gold": s.answer, "image": None if s.image is None else str(s.image)}
        if scores is not None:
            meta["score"] = scores[k]
        if adapters is not None:
            meta["adapter"] = adapters[k]
        rows.append({"question_id": s.id, "prompt": s.prompt, "text": p, "answer_id": f"{model_id}-{s.id}",
                     "model_id": model_id, "metadata": meta})
    return rows


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
                                options=cfg, split=cfg.split)
            row[tasks.index(task.name)] = round(res.accuracy, 4)
            seconds += res.seconds
    return row, seconds
