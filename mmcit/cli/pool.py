"""Running several experiments at once, each in its own single-threaded process, with their log lines
forwarded to this process (used by ``mmcit sweep``)."""
from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Callable

from mmcit.config import load_config
from mmcit.data.stream import load_data
from mmcit.models.factory import build_model
from mmcit.recipe import run


def default_jobs(n_runs: int) -> int:
    """Up to 1.5 single-threaded processes per core (measured: with one per core, three runs on two
    cores ran two at a time and then one alone, leaving a core idle for a third of the time)."""
    return max(1, min(n_runs, (os.cpu_count() or 1) * 3 // 2))


def _run_worker(config_path: str | None, overrides: list[str], queue) -> dict:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return run(load_config(config_path, overrides), progress=False, log=lambda msg: queue.put(msg))


def _prepare_worker(config_path: str | None, overrides: list[str], queue) -> None:
    """Build (or load) the data and the pretrained base a run will use, so runs share the cache."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    cfg = load_config(config_path, overrides)
    data = load_data(cfg.data, cfg.data.cache_path(), log=lambda msg: queue.put(msg))
    build_model(cfg, data, cfg.data.cache_path(), log=lambda msg: queue.put(msg), progress=False)


class _Lines:
    """A queue-like sink that logs every line at once (for jobs run in this process)."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.put = log


def run_all(jobs: list[tuple[str | None, list[str]]], n_jobs: int, log: Callable[[str], None],
            prepare: bool = False) -> list[dict | None]:
    """Run ``(config_path, overrides)`` jobs in ``n_jobs`` processes (one job at a time in this
    process when ``n_jobs`` is 1); returns their results in order (``prepare``: only build their data
    and bases, returns Nones)."""
    worker = _prepare_worker if prepare else _run_worker
    if n_jobs == 1:
        return [worker(path, overrides, _Lines(log)) for path, overrides in jobs]
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        queue = manager.Queue()
        with ProcessPoolExecutor(max_workers=n_jobs, mp_context=ctx) as pool:
            futures = [pool.submit(worker, path, overrides, queue) for path, overrides in jobs]
            while not all(f.done() for f in futures) or not queue.empty():
                try:
                    log(queue.get(timeout=0.5))
                except Exception:  # queue.Empty from the manager proxy
                    continue
            return [f.result() for f in futures]
