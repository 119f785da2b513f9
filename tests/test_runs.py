"""Run-level guarantees: determinism, and a NaN loss stops the task cleanly."""
import json
from dataclasses import dataclass

import pytest
import torch
from safetensors.torch import load_file

from mmcit.methods.base import METHODS, Method, MethodConfig
from mmcit.errors import NonFiniteLoss
from mmcit.recipe import run
from tests.test_integration import tiny_cfg


def test_same_config_and_seed_give_identical_results(tmp_path, cache_dir):
    a = run(tiny_cfg(tmp_path / "a", cache_dir), progress=False, log=lambda m: None)
    b = run(tiny_cfg(tmp_path / "b", cache_dir), progress=False, log=lambda m: None)
    assert a["accuracy_matrix"] == b["accuracy_matrix"]
    wa = load_file(tmp_path / "a" / "run" / "checkpoints" / "02_GQA" / "adapters.safetensors")
    wb = load_file(tmp_path / "b" / "run" / "checkpoints" / "02_GQA" / "adapters.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@dataclass
class _NaNConfig(MethodConfig):
    type: str = "nan_on_second_task"


class _NaNOnSecondTask(Method):
    """Test-only method: the loss turns NaN during the second task."""

    name = "nan_on_second_task"
    config_cls = _NaNConfig

    def before_stage(self, stage, model):
        self.poison = stage.index == 1

    def extra_loss(self, model, batch, outputs):
        return torch.tensor(float("nan")) if self.poison else None


def test_nan_loss_stops_the_task_and_keeps_the_previous_results(tmp_path, cache_dir):
    with METHODS.temporarily(_NaNOnSecondTask):
        cfg = tiny_cfg(tmp_path, cache_dir, "method={type: nan_on_second_task}")
        with pytest.raises(NonFiniteLoss, match="loss is nan at step 1"):
            run(cfg, progress=False, log=lambda m: None)
    assert "nan_on_second_task" not in METHODS
    d = tmp_path / "run"
    saved = json.loads((d / "results.json").read_text())
    assert len(saved["accuracy_matrix"]) == 1 and not saved["complete"]  # task 1's row is intact
    assert (d / "checkpoints" / "01_TextVQA" / "adapters.safetensors").exists()
    assert not (d / "checkpoints" / "02_GQA").exists()
