"""Tests that fail when training is quietly broken: the EMA must blend inside the real loop (no skipped
updates, a finite mean alpha, EMA weights that differ from both the stage's start and the live
weights), the end-of-stage copy-in must happen and be what is checkpointed, and evaluation must score
exactly what the model answered.

(A mutation these catch: moving ``optimizer.zero_grad()`` above ``method.after_optimizer_step()`` in
mmcit/training/loop.py skips every EMA update, and LCIA would copy each stage's starting weights back.)
"""
from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

import mmcit.recipe
from mmcit.data.sample import Sample, TaskData
from mmcit.evaluation.generate import evaluate_task
from mmcit.methods.base import Method, build_method
from mmcit.recipe import run
from tests.test_integration import tiny_cfg

STEPS = 3


class Snapshots:
    """Wraps an EMA method; snapshots the trainable weights at the stage's start, the live and EMA
    weights just before the copy-in, and the live weights just after it."""

    def __init__(self, method):
        self.method, self.stages = method, []

    def __getattr__(self, name):
        return getattr(self.method, name)

    def _trainable(self, model):
        return {n: p.detach().clone() for n, p in model.trainable_named_parameters()}

    def before_stage(self, stage, model):
        self.method.before_stage(stage, model)
        self.stages.append({"name": stage.name, "start": self._trainable(model)})

    def after_stage(self, stage, model):
        rec = self.stages[-1]
        ema = self.method.ema
        rec["ema_on"] = ema.active
        if ema.active:
            rec["live"] = self._trainable(model)
            rec["shadow"] = {n: t.clone() for n, t in ema.ema.shadow.items()}
        self.method.after_stage(stage, model)
        rec["after"] = self._trainable(model)


@pytest.fixture(scope="module", params=["adaptive_ema", "lcia"])
def ema_run(request, tmp_path_factory, cache_dir):
    tmp = tmp_path_factory.mktemp(f"guard-{request.param}")
    made = []

    def build(cfg):
        made.append(Snapshots(build_method(cfg)))
        return made[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mmcit.recipe, "build_method", build)
        res = run(tiny_cfg(tmp, cache_dir, f"method={{type: {request.param}}}"), progress=False, log=lambda m: None)
    return request.param, tmp / "run", res, made[0]


def _differs(a: dict, b: dict) -> bool:
    return any(not torch.equal(a[n], b[n]) for n in a)


def test_the_ema_blends_at_every_step_of_the_real_loop(ema_run):
    name, _, res, _ = ema_run
    per_task = res["method_summary"]["ema"]["per_task"] if name == "lcia" else res["method_summary"]["per_task"]
    assert per_task, "the EMA never ran"
    for t in per_task:
        assert t["updates"] == STEPS and t["skipped"] == 0
        assert t["mean_alpha"] is not None and math.isfinite(t["mean_alpha"]) and 0 < t["mean_alpha"] < 1
    # lcia turns the EMA on for the stage that re-trains a group: GQA re-trains TextVQA's.
    assert [t["stage"] for t in per_task] == (["GQA"] if name == "lcia" else ["TextVQA", "GQA"])


def test_ema_weights_move_away_from_the_start_and_differ_from_the_live_weights(ema_run):
    _, _, _, snap = ema_run
    blended = [s for s in snap.stages if s["ema_on"]]
    assert blended
    for s in blended:
        shadow = {n: s["shadow"][n].to(s["start"][n].dtype) for n in s["start"]}
        assert _differs(shadow, s["start"]), f"{s['name']}: the EMA stayed at the stage's start"
        assert _differs(shadow, s["live"]), f"{s['name']}: the EMA followed the live weights exactly"


def test_the_copy_in_happens_and_is_what_the_checkpoint_holds(ema_run):
    _, run_dir, _, snap = ema_run
    for k, s in enumerate(snap.stages):
        if not s["ema_on"]:
            continue
        for n, w in s["after"].items():
            assert torch.equal(w, s["shadow"][n].to(w.dtype)), f"{s['name']}: {n} is not the EMA weight"
        saved = load_file(next((run_dir / "checkpoints").glob(f"{k + 1:02d}_*")) / "adapters.safetensors")
        for n, w in s["after"].items():
            assert torch.equal(saved[n], w), n


class _Echo:
    """A stand-in model for evaluation: answers each prompt with a fixed string per sample id."""

    def __init__(self, answers: dict[str, str]):
        self.answers = answers
        self.active_adapter = "default"
        self.tokenizer = type("T", (), {"pad_token_id": 0})()
        self.encoded_prompts, self.encoded_bytes = {}, 0

    def encoder(self):
        return type("E", (), {"encode_prompt": staticmethod(lambda s: {"input_ids": [1], "id": s.id,
                                                                       "pixel_values": torch.zeros(1)})})()

    def eval(self):
        pass

    def set_adapter(self, name):
        pass


def test_evaluation_scores_exactly_what_was_answered():
    samples = [Sample(task="GQA", id=str(i), image=None, turns=[("q", gold)])
               for i, gold in enumerate(["red", "blue", "cube", "two"])]
    task = TaskData("GQA", "gqa", [], samples)
    answers = {"0": "red", "1": "Blue.", "2": "sphere", "3": "two"}  # GQA: lower-cased, periods stripped
    model = _Echo(answers)
    model.collate = lambda feats, side: {"ids": [f["id"] for f in feats]}
    model.generate = lambda batch, max_new_tokens: [answers[i] for i in batch["ids"]]
    res = evaluate_task(model, Method(None), task, batch_size=3, max_new_tokens=4, scoring_mode="default",
                        progress=False)
    assert res.predictions == ["red", "Blue.", "sphere", "two"] and res.scores == [1.0, 1.0, 0.0, 1.0]
    assert res.accuracy == 75.0
