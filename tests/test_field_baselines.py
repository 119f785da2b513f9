"""MoELoRA, O-LoRA and SEFE's RegLoRA (mmcit/methods/{moelora,olora,sefe}.py): their mechanisms on
hand-computed toys and on a tiny model, their options refused up front, a SIGKILL inside a task
and the resume, predict, and a short stream of each on the hf_llava and composed backends.

(tests/test_methods.py runs every registered method, these included, through the hook order, the
state round trip and a resume at a stage boundary.)
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict

import pytest
import torch
import yaml
from safetensors.torch import load_file

import mmcit.recipe
from mmcit.config import ConfigError, load_config
from mmcit.methods import RunContext, Stage, build_method
from mmcit.methods.moelora import ExpertDown, install_experts
from mmcit.methods.olora import orthogonality
from mmcit.methods.sefe import key_positions, penalty
from mmcit.models.tiny_llava.build import build_tiny_llava
from mmcit.models.tiny_llava.tokenizer import train_tokenizer
from mmcit.models.wrapper import LoraSettings, MMModel
from mmcit.recipe import run
from mmcit.training.checkpoint import MANIFEST, STEPS, step_checkpoints
from tests.forking import fork_cli, kill_once_written
from tests.test_backends import ckpt, cfg_for, composed_args, hf_args, quiet  # noqa: F401 (ckpt: a fixture)
from tests.test_integration import tiny_cfg
from tests.test_lcia import SPEC

METHODS = ("moelora", "olora", "sefe")
OPTIONS = {"moelora": ["method.experts=2"]}  # the tiny stream's LoRA rank is 4


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(["USER: What color is it? ASSISTANT: red blue", "Describe the image."] * 20, 300)


@pytest.fixture
def model(tokenizer):
    torch.manual_seed(0)
    base, processor = build_tiny_llava(SPEC, tokenizer)
    return MMModel.from_base(base, processor, LoraSettings(r=4))


def _method(name, *options):
    return build_method(load_config(None, [f"method={{type: {name}}}", *options]).method)


def _stage(index):
    return Stage(name=f"T{index}", train=[], evaluate=[], index=index)


def _loss(model):
    """A language-model loss of the tiny model on one made-up row (no image)."""
    ids = torch.tensor([[5, 9, 14, 20, 7, 3]])
    return model.peft(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss


# -- MoELoRA ---------------------------------------------------------------------------------------
def test_moelora_mixture_equals_the_hand_computation():
    down = ExpertDown(in_features=2, rank=2, experts=2)
    with torch.no_grad():
        down.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, -1.0]]))  # A_0 = [1, 2], A_1 = [3, -1]
        down.router.weight.copy_(torch.eye(2))
    b = torch.tensor([[1.0, 1.0], [2.0, -1.0]])  # B_0 = column 0 = (1, 2), B_1 = column 1 = (1, -1)
    x = torch.tensor([[2.0, 1.0], [0.0, 0.0]])  # two tokens
    gates = down.gates(x)
    # token 1: router scores (2, 1) -> softmax; A_0 x = 4, A_1 x = 5
    g0, g1 = math.exp(2) / (math.exp(2) + math.exp(1)), math.exp(1) / (math.exp(2) + math.exp(1))
    assert gates[0].tolist() == pytest.approx([g0, g1]) and gates[1].tolist() == pytest.approx([0.5, 0.5])
    assert gates.sum(-1).tolist() == pytest.approx([1.0, 1.0])
    mixed = down(x) @ b.T
    assert mixed[0].tolist() == pytest.approx([4 * g0 * 1 + 5 * g1 * 1, 4 * g0 * 2 + 5 * g1 * -1])  # (4.2689, 4.5038)
    assert mixed[0].tolist() == pytest.approx([4.2689, 4.5038], abs=1e-4) and mixed[1].tolist() == [0.0, 0.0]


def test_moelora_experts_in_the_model_shapes_routing_and_size(model):
    plain_trainable, _ = model.num_parameters()
    layers = install_experts(model, experts=2)
    assert layers == len(model.lora_layers()) == 7  # q, k, v, o, gate, up, down of the one LM layer
    name, layer = model.lora_layers()[4]  # gate_proj: 32 -> 64
    down, up = layer.lora_A["default"], layer.lora_B["default"]
    assert name.endswith("mlp.gate_proj") and isinstance(down, ExpertDown)
    assert [tuple(down.expert(e).shape) for e in range(2)] == [(2, 32), (2, 32)]  # rank 4 / 2 experts
    assert tuple(up.weight.shape) == (64, 4) and float(up.weight.detach().abs().sum()) == 0  # B = 0: the base at start
    # Trainable size: plain LoRA at rank 4 plus a bias-free 2 x d_in router per layer.
    routers = sum(layer.lora_A["default"].router.weight.numel() for _, layer in model.lora_layers())
    assert routers == 2 * (32 * 6 + 64)  # six layers read 32 features, down_proj reads 64
    assert model.num_parameters()[0] == plain_trainable + routers
    names = [n for n, _ in model.trainable_named_parameters()]
    assert any(n.endswith("gate_proj.lora_A.default.router.weight") for n in names)
    assert set(model.adapter_state()) == set(names)  # checkpoints and the EMA see the routers too
    # The layer's output is W x + scaling * sum_e g_e(x) B_e A_e x, per token.
    torch.manual_seed(1)
    with torch.no_grad():
        up.weight.normal_()
    x = torch.randn(1, 3, 32)
    g = torch.softmax(x @ down.router.weight.T, dim=-1)
    want = layer.base_layer(x) + layer.scaling["default"] * sum(
        g[..., e:e + 1] * (x @ down.expert(e).T @ up.weight[:, 2 * e:2 * e + 2].T) for e in range(2))
    torch.testing.assert_close(layer(x), want)
    assert install_experts(model, experts=2) == 7 and layer.lora_A["default"] is down  # a second call keeps them


# -- O-LoRA ----------------------------------------------------------------------------------------
def test_olora_orthogonality_term_by_hand():
    a0 = torch.tensor([[0.0, 0.0, 1.0]])
    a1 = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    new = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    # a1 new^T = [[2, 0], [1, 0]]; a0 new^T = [[0, 3]]
    assert float(orthogonality([a1], new, "squared")) == 4 + 1
    assert float(orthogonality([a1], new, "abs")) == 2 + 1
    assert float(orthogonality([a0, a1], new, "squared")) == 9 + 5
    assert float(orthogonality([a0, a1], new, "abs")) == 3 + 3
    assert float(orthogonality([torch.tensor([[0.0, 0.0, 1.0]])], torch.tensor([[1.0, 1.0, 0.0]]))) == 0


def test_olora_adds_a_fresh_lora_and_earlier_loras_get_no_gradient(model):
    m = _method("olora", "method.lambda_orth=0.5", "method.lambda_l2=0.25")
    m.setup(model, RunContext(run_dir=None, task_names=["T0", "T1"]))
    m.before_stage(_stage(0), model)
    layers = [layer for _, layer in model.lora_layers()]

    @torch.no_grad()
    def l2(adapter):
        return sum(float(l.lora_A[adapter].weight.pow(2).sum() + l.lora_B[adapter].weight.pow(2).sum())
                   for l in layers)

    first_extra = float(m.extra_loss(model, {}, None).detach())
    assert first_extra == pytest.approx(0.25 * l2("default"), rel=1e-5)  # no earlier LoRA: the L2 term only
    with torch.no_grad():  # as if task 1 had trained
        for n, p in model.trainable_named_parameters():
            p.add_(0.1 * torch.randn_like(p))
    first = model.adapter_state("default")
    m.before_stage(_stage(1), model)
    assert model.adapters == ["default", "task_2"] and model.stacked == ["default", "task_2"]
    new = model.adapter_state("task_2")
    for k, v in new.items():
        old = first[k.replace(".task_2.", ".default.")]
        if "lora_B" in k:
            assert float(v.abs().sum()) == 0  # fresh: adds nothing until it trains
        elif "lora_A" in k:
            assert not torch.equal(v, old)  # freshly drawn, not copied
        else:
            assert torch.equal(v, old)  # the projector carries on from the previous task
    assert {n for n, _ in model.trainable_named_parameters()} == set(new)
    # The extra loss is lambda_orth * sum over layers of ||A_1 A_2^T||^2 + lambda_l2 * ||new LoRA||^2.
    with torch.no_grad():
        orth = sum(float((l.lora_A["default"].weight @ l.lora_A["task_2"].weight.T).pow(2).sum()) for l in layers)
    extra = m.extra_loss(model, {}, None)
    assert extra.item() == pytest.approx(0.5 * orth + 0.25 * l2("task_2"), rel=1e-5) and orth > 0
    (_loss(model) + extra).backward()
    params = dict(model.peft.named_parameters())
    assert all(params[k].grad is None for k in first)  # the earlier LoRA and projector copy: untouched
    assert all(params[k].grad is not None and params[k].grad.abs().sum() > 0 for k in new if "lora_A" in k)
    # Both LoRAs answer: a layer's output is the base plus the sum of the two updates.
    layer = layers[0]
    with torch.no_grad():
        layer.lora_B["task_2"].weight.normal_()
    x = torch.randn(2, 32)
    s = layer.scaling["default"]
    want = layer.base_layer(x) + sum(s * x @ layer.lora_A[a].weight.T @ layer.lora_B[a].weight.T
                                     for a in ("default", "task_2"))
    torch.testing.assert_close(layer(x), want)


# -- SEFE ------------------------------------------------------------------------------------------
def test_sefe_positions_and_penalty_by_hand():
    update = torch.tensor([[1.0, -4.0, 2.0], [0.0, 3.0, -0.5]])
    assert key_positions(update, 1 / 3).tolist() == [1, 4]  # floor(6 / 3) = 2 largest: |-4| and |3|
    assert key_positions(update, 0.01).tolist() == [1]  # at least one
    new = torch.tensor([[0.1, 0.2, 0.3], [0.4, -0.5, 0.6]])
    other = torch.tensor([[2.0, -1.0]])
    # layer 1: mean(|0.2|, |-0.5|) = 0.35; layer 2: |2.0| = 2.0; mean over layers 1.175
    value = penalty([new, other], [torch.tensor([1, 4]), torch.tensor([0])])
    assert float(value) == pytest.approx((0.35 + 2.0) / 2)


def test_sefe_holds_the_new_lora_to_the_earlier_tasks_positions(model):
    m = _method("sefe", "method.top_fraction=0.25", "method.reg_weight=10")
    m.setup(model, RunContext(run_dir=None, task_names=["T0", "T1", "T2"]))
    m.before_stage(_stage(0), model)
    assert m.extra_loss(model, {}, None) is None and m.positions == []
    with torch.no_grad():
        for n, p in model.trainable_named_parameters():
            if "lora_B" in n:
                p.normal_()
    m.before_stage(_stage(1), model)
    layers = [layer for _, layer in model.lora_layers()]
    with torch.no_grad():
        for layer, pos in zip(layers, m.positions):  # 25 % of each task-1 update, by magnitude
            delta = (layer.lora_B["default"].weight @ layer.lora_A["default"].weight).abs().flatten()
            assert pos.numel() == delta.numel() // 4
            rest = [i for i in range(delta.numel()) if i not in set(pos.tolist())]
            assert float(delta[pos].min()) >= float(delta[rest].max())
    with torch.no_grad():
        for layer in layers:
            layer.lora_B["task_2"].weight.normal_()
        deltas = [l.lora_B["task_2"].weight @ l.lora_A["task_2"].weight for l in layers]
        want = 10 * sum(float(d.flatten()[p].abs().mean()) for d, p in zip(deltas, m.positions)) / len(layers)
    extra = m.extra_loss(model, {}, None)
    assert extra.item() == pytest.approx(want, rel=1e-5)
    extra.backward()
    params = dict(model.peft.named_parameters())
    assert all(p.grad is None for n, p in params.items() if ".default." in n)  # the earlier LoRA is frozen
    assert all(p.grad is not None for n, p in params.items() if ".task_2." in n and "lora_" in n)
    # Task 3 is held to the union of tasks 1 and 2's positions (each position once).
    m.after_stage(_stage(1), model)
    m.before_stage(_stage(2), model)
    for layer, pos in zip(layers, m.positions):
        each = [key_positions(layer.lora_B[a].weight @ layer.lora_A[a].weight, 0.25) for a in ("default", "task_2")]
        assert pos.tolist() == sorted(set(each[0].tolist()) | set(each[1].tolist()))
    assert model.stacked == ["default", "task_2", "task_3"]
    held = m.summary()["stages"][0]
    sizes = [l.lora_A["default"].weight.shape[1] * l.lora_B["default"].weight.shape[0] for l in layers]
    assert held["stage"] == "T1" and held["positions"] == sum(n // 4 for n in sizes)
    assert held["penalty"] == pytest.approx(extra.item() / 10, rel=1e-5)  # after_stage: the same update


# -- options -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("options, message", [
    (["method={type: moelora, experts: 3}", "model.lora_r=4"], "must divide model.lora_r=4"),
    (["method={type: moelora, experts: 0}"], "method.experts must be >= 1"),
    (["method={type: olora, lambda_orth: -1}"], "must be >= 0"),
    (["method={type: olora, orth_penalty: l1}"], "method.orth_penalty must be one of squared, abs"),
    (["method={type: sefe, top_fraction: 0}"], r"method.top_fraction must be in \(0, 1\]"),
    (["method={type: sefe, reg_weight: -2}"], "method.reg_weight must be >= 0"),
])
def test_options_are_refused_before_anything_is_built(options, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, options)


# -- whole runs: SIGKILL and resume, predict, the other backends ------------------------------------
# The default suite kills olora (a LoRA added inside the killed task); the others are slow-marked.
@pytest.fixture(scope="module", params=[pytest.param("moelora", marks=pytest.mark.slow), "olora",
                                        pytest.param("sefe", marks=pytest.mark.slow)])
def finished(request, tmp_path_factory, cache_dir):
    """An uninterrupted 2-task tiny run of each method."""
    tmp = tmp_path_factory.mktemp(request.param)
    cfg = tiny_cfg(tmp, cache_dir, f"method={{type: {request.param}}}", *OPTIONS.get(request.param, []))
    return request.param, tmp, run(cfg, progress=False, log=quiet)


def _fork_resume_sleeping_after_step_1(run_dir, last: int) -> int:
    """``mmcit run --resume RUN_DIR`` in a forked child that sleeps after the first step checkpoint
    of stage ``last`` (the parent kills it there)."""

    def setup() -> None:
        real = mmcit.recipe.save_step_checkpoint

        def save_then_sleep(run_dir, index, *args, **kwargs):
            folder = real(run_dir, index, *args, **kwargs)
            if index == last:
                time.sleep(120)
            return folder

        mmcit.recipe.save_step_checkpoint = save_then_sleep

    return fork_cli(["run", "--resume", str(run_dir), "--no-progress"], setup)


@pytest.mark.slow  # 16 s; test_methods resumes every method after a lost checkpoint in the default suite
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_sigkill_inside_the_last_task_then_resume_is_identical(finished, cache_dir, tmp_path):
    """The finished run's folder without its last checkpoint is resumed with a step checkpoint after
    every step, SIGKILLed after the first one inside task 2 (its LoRA just added or its experts
    training), and resumed again from there: the matrix, the method summary and every adapter
    tensor equal the uninterrupted run's."""
    name, tmp, res = finished
    run_dir = tmp_path / "run"
    shutil.copytree(tmp / "run", run_dir)
    last = sorted((run_dir / "checkpoints").iterdir())[-1]
    shutil.rmtree(last)
    cfg = tiny_cfg(tmp_path, cache_dir, f"method={{type: {name}}}", *OPTIONS.get(name, []), "train.checkpoint_every=1")
    (run_dir / "config.yaml").write_text(yaml.safe_dump(asdict(cfg), sort_keys=False))
    manifest = last / STEPS / "step_000001" / MANIFEST
    pid = _fork_resume_sleeping_after_step_1(run_dir, 1)
    kill_once_written(pid, manifest)
    assert not (last / MANIFEST).exists()
    logs: list[str] = []
    again = run(cfg, progress=False, log=logs.append, resume=True)
    assert any("at step 1/3" in m for m in logs), logs
    assert again["accuracy_matrix"] == res["accuracy_matrix"]
    assert again["method_summary"] == res["method_summary"]
    before = load_file(tmp / "run" / last.relative_to(run_dir) / "adapters.safetensors")
    after = load_file(last / "adapters.safetensors")
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert not step_checkpoints(run_dir)


# Each method runs on both backends; the default suite runs each on one of them.
@pytest.mark.parametrize("name, backend", [
    ("moelora", "hf_llava"), pytest.param("moelora", "composed", marks=pytest.mark.slow),
    ("olora", "composed"), pytest.param("olora", "hf_llava", marks=pytest.mark.slow),
    ("sefe", "hf_llava"), pytest.param("sefe", "composed", marks=pytest.mark.slow)])
def test_a_short_stream_on_each_backend_and_predict(tmp_path, cache_dir, ckpt, name, backend):  # noqa: F811
    """A 2-task stream, then ``mmcit predict``'s loader on its folder: it runs the method's setup
    before loading the weights (MoELoRA's experts) and restores its state after (O-LoRA's and
    SEFE's summed LoRAs)."""
    from PIL import Image

    from mmcit.evaluation.predict import load_predictor

    args = hf_args(ckpt) if backend == "hf_llava" else composed_args(ckpt)
    res = run(cfg_for(tmp_path, cache_dir, args, f"method={{type: {name}}}", *OPTIONS.get(name, [])),
              progress=False, log=quiet)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["complete"] and [len(r) for r in saved["accuracy_matrix"]] == [1, 2]
    assert all(t["steps"] == 2 and math.isfinite(t["first_loss"]) for t in saved["timing"]["stages"])
    tensors = load_file(tmp_path / "run" / "checkpoints" / "02_ImageNet" / "adapters.safetensors")
    summary = res["method_summary"]
    if name == "moelora":
        assert summary["layers"] > 0 and summary["expert_rank"] == 2
        assert sum(v.numel() for k, v in tensors.items() if "router" in k) == summary["router_parameters"] > 0
    else:
        assert summary["adapters"] == ["default", "task_2"] and any(".task_2." in k for k in tensors)
        last = summary["stages"][-1]
        assert last["orthogonality" if name == "olora" else "penalty"] > 0
    predictor = load_predictor(tmp_path / "run", log=quiet)
    model = predictor.model
    assert all(torch.equal(tensors[k], v) for a in model.adapters for k, v in model.adapter_state(a).items())
    if name == "moelora":
        assert all(isinstance(layer.lora_A["default"], ExpertDown) for _, layer in model.lora_layers())
    else:
        assert model.stacked == summary["adapters"]
    image = tmp_path / "probe.png"
    Image.new("RGB", (32, 32), (0, 0, 255)).save(image)
    assert isinstance(predictor.answer(image, "What is shown?")["answer"], str)
