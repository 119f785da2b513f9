"""The peak memory of a run counts that run only, also in a worker process that ran others before."""
from __future__ import annotations

import mmap
from pathlib import Path

import pytest
import torch

from mmcit.results.costs import peak_memory, reset_peak_memory

MIB = 2**20


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc/self/clear_refs")
def test_reset_forgets_an_earlier_peak_of_the_process():
    big = b"\x01" * (256 * MIB)  # written, so resident: the process's peak now includes it
    before, source = peak_memory(torch.device("cpu"))
    del big
    reset_peak_memory()
    after, _ = peak_memory(torch.device("cpu"))
    assert source == "VmHWM"
    assert before - after > 200 * MIB  # the 256 MiB of the earlier "run" are no longer counted
    # Fresh pages, written: a bytes object could reuse memory the allocator kept resident after
    # earlier tests of this worker (seen once in a full run: the peak did not move).
    again = mmap.mmap(-1, 64 * MIB)
    again.write(b"\x02" * (64 * MIB))
    grown, _ = peak_memory(torch.device("cpu"))
    assert grown - after > 50 * MIB  # and a new peak is counted again
    again.close()
