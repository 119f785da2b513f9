"""Progress display shared by training, evaluation, the tiny base's pretraining and ``mmcit demo``.

On a terminal a :class:`Progress` is a tqdm bar (description, count, ETA and a postfix such as the
loss). When the output is not a terminal (a log file, a pipe, CI, a notebook) a bar would write one
carriage-return update per step, thousands of them per run; instead a plain line is written about
every 10% of the total (``fraction``) or every ``seconds``, whichever comes first, and one at the end:

    train GQA: 30/100 (30%), loss 1.234, 12 s, ETA 28 s

``MMCIT_PROGRESS=bar|lines|off`` forces a mode (default ``auto``: a bar on a terminal, else lines).
"""
from __future__ import annotations

import os
import sys
import time
from typing import IO, Any

__all__ = ["Progress", "progress_mode"]

MODES = ("auto", "bar", "lines", "off")


def progress_mode(stream: IO[str] | None = None) -> str:
    """``bar``, ``lines`` or ``off``: ``MMCIT_PROGRESS`` when set, else a bar on a terminal."""
    forced = os.environ.get("MMCIT_PROGRESS", "auto").strip().lower()
    if forced in MODES and forced != "auto":
        return forced
    stream = stream if stream is not None else sys.stderr
    try:
        return "bar" if stream.isatty() else "lines"
    except (AttributeError, ValueError):  # a closed or minimal stream object
        return "lines"


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """A progress display over ``total`` units (see the module docstring); use as a context manager
    or call :meth:`close`.

    Args:
        total: units to do (steps, samples, stages).
        desc: what is being done, e.g. ``"train GQA"``.
        enabled: False shows nothing (every method is then a no-op).
        initial: units already done (a resumed stage).
        stream: where to write (default ``sys.stderr``, like tqdm).
        mode: ``auto`` (see :func:`progress_mode`), ``bar``, ``lines`` or ``off``.
        fraction: in lines mode, write a line every this fraction of ``total``.
        seconds: in lines mode, also write a line when this much time passed since the last one.
    """

    def __init__(self, total: int, desc: str, *, enabled: bool = True, initial: int = 0,
                 stream: IO[str] | None = None, mode: str = "auto", fraction: float = 0.1,
                 seconds: float = 60.0) -> None:
        self.total, self.desc, self.n = int(total), desc, int(initial)
        self.stream = stream if stream is not None else sys.stderr
        self.mode = "off" if not enabled else (progress_mode(self.stream) if mode == "auto" else mode)
        self.postfix: dict[str, Any] = {}
        self._start = self._last_time = time.perf_counter()
        self._start_n = self.n
        self._step = max(1, int(self.total * fraction)) if self.total > 0 else 1
        self._next = self.n + self._step
        self._seconds = seconds
        self._last_written = -1
        self._bar = None
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, initial=self.n, desc=desc, leave=False, dynamic_ncols=True,
                             file=self.stream)

    def update(self, n: int = 1, **postfix: Any) -> None:
        """``n`` more units done; keyword arguments replace the postfix (e.g. ``loss=1.23``)."""
        self.n += n
        if postfix:
            self.set_postfix(**postfix)
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode == "lines":
            now = time.perf_counter()
            if self.n >= self._next or now - self._last_time >= self._seconds or self.n >= self.total:
                self._write(now)

    def set_postfix(self, **postfix: Any) -> None:
        """Values shown after the count (floats with 3 decimals)."""
        self.postfix.update(postfix)
        if self._bar is not None:
            self._bar.set_postfix({k: _fmt(v) for k, v in self.postfix.items()}, refresh=False)

    def _write(self, now: float) -> None:
        if self.n == self._last_written:
            return
        elapsed = now - self._start
        parts = [f"{self.desc}: {self.n}/{self.total}" + (f" ({100 * self.n / self.total:.0f}%)" if self.total else "")]
        parts += [f"{k} {_fmt(v)}" for k, v in self.postfix.items()]
        parts.append(_duration(elapsed))
        done = self.n - self._start_n
        if 0 < done and self.n < self.total:
            parts.append(f"ETA {_duration(elapsed / done * (self.total - self.n))}")
        self.stream.write(", ".join(parts) + "\n")
        self.stream.flush()
        self._last_written, self._last_time = self.n, now
        while self._next <= self.n:
            self._next += self._step

    def close(self) -> None:
        """Remove the bar, or write the final line (lines mode) if the last count was not written."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.mode == "lines" and self.n > self._start_n:
            self._write(time.perf_counter())

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)
