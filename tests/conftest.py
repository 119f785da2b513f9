"""Test settings: one torch thread (a second busy process slows 2-thread torch many times over),
and a per-session cache so tests never touch the user's cache."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("mmcit-cache")
    os.environ["MMCIT_CACHE"] = str(path)
    return path
