"""The shared progress display: a bar on a terminal, plain lines (no carriage returns) elsewhere."""
from __future__ import annotations

import io

from mmcit.progress import Progress, progress_mode


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_a_line_every_tenth_and_at_the_end(monkeypatch):
    monkeypatch.delenv("MMCIT_PROGRESS", raising=False)
    out = io.StringIO()
    with Progress(95, "train GQA", stream=out, seconds=1e9) as bar:
        for step in range(95):
            bar.update(1, loss=2.0 - step / 100)
    text = out.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and bar.mode == "lines"
    assert len(lines) == 11  # at 9, 18, ..., 90 (every 9 steps, a tenth) and at the last count, 95
    assert lines[0].startswith("train GQA: 9/95 (9%), loss 1.920, ") and "ETA" in lines[0]
    assert lines[-1].startswith("train GQA: 95/95 (100%), loss 1.060, ") and "ETA" not in lines[-1]


def test_a_line_after_every_interval_of_seconds_and_a_resumed_start(monkeypatch):
    monkeypatch.delenv("MMCIT_PROGRESS", raising=False)
    out = io.StringIO()
    bar = Progress(1000, "eval", stream=out, seconds=0.0, initial=990)
    for _ in range(10):
        bar.update(1)
    bar.close()
    assert out.getvalue().splitlines()[0].startswith("eval: 991/1000 (99%)")
    assert len(out.getvalue().splitlines()) == 10  # every update: the interval has always passed, no repeat


def test_modes(monkeypatch):
    monkeypatch.delenv("MMCIT_PROGRESS", raising=False)
    assert progress_mode(_Terminal()) == "bar" and progress_mode(io.StringIO()) == "lines"
    terminal = _Terminal()
    bar = Progress(3, "train", stream=terminal)
    bar.update(3, loss=1.0)
    bar.close()
    assert bar.mode == "bar" and "\r" in terminal.getvalue()  # tqdm redraws in place on a terminal
    silent = io.StringIO()
    Progress(3, "x", stream=silent, enabled=False).update(3)
    monkeypatch.setenv("MMCIT_PROGRESS", "off")
    Progress(3, "x", stream=silent).update(3)
    assert silent.getvalue() == ""
    monkeypatch.setenv("MMCIT_PROGRESS", "lines")
    assert progress_mode(_Terminal()) == "lines"
