"""One behaviour test over every registered method: its hooks fire in the documented order inside the
real recipe, its state survives a JSON round trip, a 2-task tiny stream runs, and a resume after the
last stage's checkpoint was lost gives the identical matrix and adapter tensors."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

import mmcit.recipe
from mmcit.methods.base import METHODS, build_method
from mmcit.recipe import run
from tests.test_integration import tiny_cfg

HOOKS = ("setup", "plan", "before_stage", "extra_loss", "after_optimizer_step", "after_stage", "select_adapter",
         "state_dict", "load_state_dict")
STEPS = 3  # train.max_steps of the tiny stream; one micro-batch per step


class Recording:
    """Wraps a method: every hook call is recorded, then passed on; ``plan``'s stages are kept."""

    def __init__(self, method):
        self.method = method
        self.calls: list[str] = []
        self.stages = None

    def __getattr__(self, name):
        attr = getattr(self.method, name)
        if name not in HOOKS:
            return attr

        def hook(*args, **kwargs):
            self.calls.append(name)
            out = attr(*args, **kwargs)
            if name == "plan":
                self.stages = out
            return out
        return hook


def expected_calls(stages) -> list[str]:
    """The documented order (mmcit/methods/base.py) for these stages of the tiny stream."""
    calls = ["setup", "plan"]
    for stage in stages:
        calls.append("before_stage")
        if any(t.train for t in stage.train):
            calls += ["extra_loss", "after_optimizer_step"] * STEPS
        calls += ["after_stage", *["select_adapter"] * len(stage.evaluate), "state_dict"]
    return calls


def _run(tmp, cache_dir, name, resume=False):
    recorded = []

    def build(cfg):
        recorded.append(Recording(build_method(cfg)))
        return recorded[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mmcit.recipe, "build_method", build)
        res = run(tiny_cfg(tmp, cache_dir, f"method={{type: {name}}}"), progress=False, log=lambda m: None,
                  resume=resume)
    return res, recorded[0]


@pytest.fixture(scope="module", params=METHODS.names())
def finished(request, tmp_path_factory, cache_dir):
    """An uninterrupted 2-task run of each registered method, with its recorded hook calls."""
    tmp = tmp_path_factory.mktemp(request.param)
    res, recording = _run(tmp, cache_dir, request.param)
    return request.param, tmp, res, recording


def test_hooks_fire_in_the_documented_order(finished):
    name, _, res, recording = finished
    assert recording.calls == expected_calls(recording.stages), name
    rows = res["accuracy_matrix"]
    assert len(rows) == len(recording.stages) == (1 if recording.method.joint else 2)
    assert all(len(r) == (2 if recording.method.joint else k + 1) for k, r in enumerate(rows))
    assert res["complete"] and set(res["tasks"]) == {"TextVQA", "GQA"}


def test_state_survives_a_json_round_trip(finished):
    name, _, _, recording = finished
    state = json.loads(json.dumps(recording.method.state_dict()))  # between stages: plain JSON
    fresh = build_method(recording.method.cfg)
    fresh.load_state_dict(state)
    assert fresh.state_dict() == state
    assert json.loads(json.dumps(fresh.summary())) == recording.method.summary()


def test_resume_after_a_lost_last_checkpoint_is_identical(finished, cache_dir):
    """results.json is written before a stage's checkpoint: a kill in between leaves the row without
    the checkpoint, and the resume must redo that stage to the same numbers and weights."""
    name, tmp, res, recording = finished
    run_dir = tmp / "run"
    last = sorted((run_dir / "checkpoints").iterdir())[-1]
    before = load_file(last / "adapters.safetensors")
    shutil.rmtree(last)
    again, resumed = _run(tmp, cache_dir, name, resume=True)
    assert again["accuracy_matrix"] == res["accuracy_matrix"]
    after = load_file(last / "adapters.safetensors")
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    done = len(recording.stages) - 1  # stages whose checkpoint survived
    assert resumed.calls[:2] == ["setup", "plan"] and resumed.calls.count("before_stage") == 1
    assert ("load_state_dict" in resumed.calls) == (done > 0)
