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


#: What every run imports (torch, transformers' model and generation code, peft, which pulls in
#: bitsandbytes and torch's compiler, and the tiny model's families): about 8 s of one core per
#: process, paid by each spawned worker before its first run.
WARM_MODULES = ("mmcit.recipe", "mmcit.models.wrapper", "peft", "transformers.models.auto.modeling_auto",
                "transformers.generation.utils", "transformers.models.fast_vlm.modeling_fast_vlm",
                "transformers.models.llama.modeling_llama", "transformers.models.timm_wrapper.modeling_timm_wrapper")


def _warm_worker() -> int:
    """Import ``WARM_MODULES`` in this worker now; returns its process id."""
    import importlib

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    for name in WARM_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:  # an optional family missing from this transformers: imported on use, if ever
            pass
    return os.getpid()


class WorkerPool:
    """``n_jobs`` spawned worker processes and the queue their runs log to, kept for several
    ``run`` calls. ``warm()`` has every worker import what runs need right away, so that the imports
    overlap with work this process still has to do (the demo pretrains its base meanwhile, which
    leaves part of the second core idle)."""

    def __init__(self, n_jobs: int) -> None:
        self.n_jobs = n_jobs
        self._ctx = mp.get_context("spawn")
        self._manager = self._ctx.Manager()
        self.queue = self._manager.Queue()
        self._pool = ProcessPoolExecutor(max_workers=n_jobs, mp_context=self._ctx)
        self._warming: list = []

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._manager.shutdown()

    def warm(self) -> None:
        """Start every worker now and have it import ``WARM_MODULES`` (returns at once)."""
        self._warming = [self._pool.submit(_warm_worker) for _ in range(self.n_jobs)]

    def run(self, jobs: list[tuple[str | None, list[str]]], log: Callable[[str], None],
            prepare: bool = False) -> list[dict | None]:
        """Run the jobs (``run_all``'s) on the workers, forwarding their log lines to ``log``."""
        worker = _prepare_worker if prepare else _run_worker
        futures = [self._pool.submit(worker, path, overrides, self.queue) for path, overrides in jobs]
        while not all(f.done() for f in futures) or not self.queue.empty():
            try:
                log(self.queue.get(timeout=0.5))
            except Exception:  # queue.Empty from the manager proxy
                continue
        for f in self._warming:
            f.result()  # a worker that could not even import fails loudly here
        return [f.result() for f in futures]


def run_all(jobs: list[tuple[str | None, list[str]]], n_jobs: int, log: Callable[[str], None],
            prepare: bool = False, pool: WorkerPool | None = None) -> list[dict | None]:
    """Run ``(config path, overrides)`` jobs in ``n_jobs`` processes (one job at a time in this
    process when ``n_jobs`` is 1), or on ``pool``; returns their results in order (``prepare``: only
    build their data and bases, returns Nones)."""
    if pool is not None:
        return pool.run(jobs, log, prepare)
    if n_jobs == 1:
        worker = _prepare_worker if prepare else _run_worker
        return [worker(path, overrides, _Lines(log)) for path, overrides in jobs]
    with WorkerPool(n_jobs) as own:
        return own.run(jobs, log, prepare)
