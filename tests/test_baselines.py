"""The classic baselines' mechanisms, with numbers computed by hand: replay's reservoir buffer and
batch mix, EWC's Fisher, penalty and its all-reduce, LwF's distillation term and its memory.

Whole runs of each method (hook order, state round trip, resume after a lost checkpoint and after a
SIGKILL inside a stage, costs) are in tests/test_methods.py; options that must fail up front are in
tests/test_validation.py; other backends in tests/test_backends.py.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import random
import socket

import pytest
import torch

import mmcit.training.loop as loop
from mmcit.data.collate import IGNORE_INDEX
from mmcit.data.sample import Sample, TaskData
from mmcit.methods.base import RunContext, Stage, build_method
from mmcit.methods.ewc import EWCConfig, add_squared_gradients, all_reduce_mean, ewc_penalty
from mmcit.methods.lwf import LwFConfig, distillation_kl, weights_swapped
from mmcit.methods.replay import ReplayConfig, reservoir
from mmcit.training import distributed as dist
from mmcit.training.checkpoint import join_tensors, split_tensors
from mmcit.training.config import TrainConfig
from mmcit.training.loop import mixed_rows, train_stage
from tests.test_integration import tiny_cfg


def _task(name: str, n: int) -> TaskData:
    return TaskData(name, "exact", [Sample(name, f"{name}-{i}", None, [("q", "a")]) for i in range(n)], [])


# -- replay -------------------------------------------------------------------------------------------
class _ScriptedRandom(random.Random):
    """randint answers from a script, to follow Algorithm R by hand."""

    def __init__(self, answers):
        super().__init__(0)
        self.answers = list(answers)

    def randint(self, a, b):
        value = self.answers.pop(0)
        assert a <= value <= b
        return value


def test_reservoir_follows_algorithm_r_by_hand():
    # n=5, k=2: start [0, 1]; i=2 draws 1 -> slot 1 = 2; i=3 draws 0 -> slot 0 = 3; i=4 draws 4 (>= k): kept.
    assert reservoir(5, 2, _ScriptedRandom([1, 0, 4])) == [3, 2]
    assert reservoir(3, 5, random.Random(0)) == [0, 1, 2]  # fewer items than room: all of them
    # Every 2-subset of 4 items is equally likely: 6 subsets, 1/6 each (checked on 6,000 seeded draws).
    counts: dict = {}
    rng = random.Random(1)
    for _ in range(6000):
        key = tuple(sorted(reservoir(4, 2, rng)))
        counts[key] = counts.get(key, 0) + 1
    assert len(counts) == 6 and all(abs(c - 1000) < 120 for c in counts.values()), counts


@pytest.mark.parametrize("options, kept", [({"per_task_fraction": 0.25}, [3, 2, 1]),  # 2.5, 1.75, 0.75 rounded up
                                           ({"per_task_count": 4, "per_task_fraction": None}, [4, 4, 3])])
def test_the_buffer_holds_the_configured_share_of_every_past_task(options, kept):
    tasks = [_task("A", 10), _task("B", 7), _task("C", 3)]
    cfg = ReplayConfig(**options)
    method = build_method(cfg)
    method.setup(None, RunContext(run_dir=None, task_names=["A", "B", "C"], seed=7))
    stages = method.plan(tasks)
    for stage in stages:
        method.before_stage(stage, None)
        mixed, ratio = method.mixed_in(stage)
        # Only earlier tasks are mixed in, each with its kept share.
        assert sorted(s.id for s in mixed) == sorted(i for t in method.buffer.values() for i in t["ids"])
        assert {s.task for s in mixed} == {t.name for t in tasks[: stage.index]} and ratio == cfg.ratio
        method.after_stage(stage, None)
    assert [len(method.buffer[t.name]["indices"]) for t in tasks] == kept
    for t in tasks:  # the ids are those of the kept positions, each position once
        entry = method.buffer[t.name]
        assert entry["ids"] == [t.train[i].id for i in entry["indices"]] and len(set(entry["indices"])) == len(entry["indices"])
    # Deterministic from the seed: a second method with the same seed keeps the same samples.
    again = build_method(cfg)
    again.setup(None, RunContext(run_dir=None, task_names=[], seed=7))
    again.plan(tasks)
    for stage in stages:
        again.after_stage(stage, None)
    assert again.buffer == method.buffer
    other = build_method(cfg)
    other.setup(None, RunContext(run_dir=None, task_names=[], seed=8))
    other.plan(tasks)
    other.after_stage(stages[0], None)
    assert other.buffer["A"] != method.buffer["A"]  # (for these two seeds)


def test_mixed_rows_rounds_half_up_and_keeps_a_row_of_each_kind():
    assert [mixed_rows(0.25, b) for b in (2, 4, 6, 10, 16)] == [1, 1, 2, 3, 4]  # 0.5 1 1.5 2.5 4
    assert mixed_rows(0.01, 8) == 1 and mixed_rows(0.99, 8) == 7 and mixed_rows(0.5, 1) == 0


class _FakeModel:
    """Just what train_stage touches when the forward is replaced: one parameter, a pad id."""

    def __init__(self):
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.tokenizer = type("T", (), {"pad_token_id": 0})()

    def trainable_named_parameters(self):
        return [("w", self.weight)]

    def projector_parameter_names(self):
        return set()

    def train(self):
        pass


class _Indices:
    """StageInputs stand-in: row i is the number i."""

    def __init__(self, model, samples, cfg):
        self.samples, self.via_tokens = samples, False

    def __getitem__(self, i):
        return i


def _batches(monkeypatch, n_stage: int, n_extra: int, share: float, *, seed=3, steps=6, resume=None,
             on_checkpoint=None) -> list[list[int]]:
    """The global batches train_stage draws (each row: a stage index, or n_stage + a buffer index)."""
    drawn: list[list[int]] = []
    monkeypatch.setattr(loop, "StageInputs", _Indices)
    monkeypatch.setattr(loop, "_accumulate", lambda model, method, local, *a: drawn.append(list(local)) or 1.0)
    cfg = TrainConfig(batch_size=4, max_steps=steps, checkpoint_every=2 if on_checkpoint else None)
    stage, extra = [f"s{i}" for i in range(n_stage)], [f"x{i}" for i in range(n_extra)]
    train_stage(_FakeModel(), build_method(ReplayConfig()), stage, cfg, seed=seed, progress=False,
                mix=(extra, share), resume=resume, on_checkpoint=on_checkpoint)
    return drawn


def test_each_batch_mixes_in_the_configured_share(monkeypatch):
    batches = _batches(monkeypatch, n_stage=9, n_extra=5, share=0.25, steps=6)
    assert len(batches) == 6
    for rows in batches:  # batch 4, ratio 0.25: one buffered row and three of the stage
        assert len(rows) == 4 and sum(r >= 9 for r in rows) == 1 and rows[-1] >= 9
    stage_rows = [r for rows in batches for r in rows if r < 9]
    assert sorted(stage_rows[:9]) == list(range(9))  # the stage's rows: a permutation per epoch
    buffer_rows = [r - 9 for rows in batches for r in rows if r >= 9]
    assert sorted(buffer_rows[:5]) == list(range(5))  # the buffer's rows: their own permutation
    assert _batches(monkeypatch, 9, 5, 0.25) == batches  # deterministic from the seed
    assert _batches(monkeypatch, 9, 5, 0.25, seed=4) != batches
    assert all(len(rows) == 4 and max(rows) < 9 for rows in _batches(monkeypatch, 9, 0, 0.25))  # empty buffer
    half = _batches(monkeypatch, 9, 5, 0.5, steps=2)
    assert [sum(r >= 9 for r in rows) for rows in half] == [2, 2]


def test_the_mixed_rows_continue_exactly_after_a_step_checkpoint(monkeypatch):
    full = _batches(monkeypatch, 9, 5, 0.25, steps=6)
    states = []
    _batches(monkeypatch, 9, 5, 0.25, steps=6, on_checkpoint=states.append)
    assert [s.step for s in states] == [2, 4, 6] and states[0].mix is not None
    saved = json.loads(json.dumps(states[0].mix))  # as a step checkpoint stores it
    resumed = _batches(monkeypatch, 9, 5, 0.25, steps=6, resume=type(states[0])(**{**vars(states[0]), "mix": saved}))
    assert resumed == full[2:]


# -- EWC ----------------------------------------------------------------------------------------------
def _logistic_sample_gradients(w: torch.nn.Parameter, samples) -> dict[str, torch.Tensor]:
    """Fisher of p(y=1|x) = sigmoid(w . x) over ``samples``, through the EWC helpers."""
    fisher = {"w": torch.zeros(2)}
    for x, y in samples:
        w.grad = None
        z = (w * torch.tensor(x)).sum()
        nll = torch.nn.functional.binary_cross_entropy_with_logits(z, torch.tensor(float(y)))
        nll.backward()
        add_squared_gradients(fisher, {"w": w})
    return fisher


TOY = [((1.0, 2.0), 1), ((-1.0, 0.5), 0)]


def _hand_fisher() -> list[float]:
    # d(-log p)/dw = (sigmoid(w.x) - y) x. w = (0.5, -0.25):
    # sample 1: w.x = 0, sigmoid 0.5, g = -0.5 * (1, 2) = (-0.5, -1);  squares (0.25, 1)
    # sample 2: w.x = -0.625, s = 1 / (1 + e^0.625), g = s * (-1, 0.5); squares (s^2, s^2 / 4)
    s = 1 / (1 + math.exp(0.625))
    return [(0.25 + s * s) / 2, (1 + s * s / 4) / 2]


def test_fisher_of_a_two_parameter_toy_equals_the_hand_computation():
    w = torch.nn.Parameter(torch.tensor([0.5, -0.25]))
    fisher = _logistic_sample_gradients(w, TOY)
    all_reduce_mean(fisher, len(TOY))
    want = _hand_fisher()
    assert fisher["w"].tolist() == pytest.approx(want, rel=1e-6)
    assert want == pytest.approx([0.185777, 0.515194], abs=1e-6)
    # Online accumulation, as EWC folds a new task in: F <- gamma * F + F_task.
    method = build_method(EWCConfig(gamma=0.5))
    method.fisher = {"w": torch.tensor([1.0, 2.0])}
    method.fisher["w"].mul_(method.cfg.gamma).add_(fisher["w"])
    assert method.fisher["w"].tolist() == pytest.approx([0.5 + want[0], 1.0 + want[1]], rel=1e-6)


def test_the_penalty_and_its_gradient_by_hand():
    theta = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    fisher, anchor = torch.tensor([2.0, 0.5]), torch.tensor([0.5, 1.0])
    penalty = ewc_penalty([(theta, fisher, anchor)], lam=4.0)
    # (4 / 2) * (2 * 0.5^2 + 0.5 * 3^2) = 2 * (0.5 + 4.5) = 10
    assert penalty.item() == pytest.approx(10.0) and penalty.dtype == torch.float32
    penalty.backward()
    # lambda * F * (theta - theta*) = 4 * (2 * 0.5, 0.5 * -3) = (4, -6)
    assert theta.grad.tolist() == pytest.approx([4.0, -6.0])
    descent = -theta.grad
    assert torch.all(descent * (anchor - theta.detach()) > 0)  # each coordinate moves towards theta*
    assert ewc_penalty([(anchor.clone(), fisher, anchor)], lam=4.0).item() == 0.0  # at theta*: nothing


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_two_processes_all_reduce_the_fisher_to_the_single_process_one(tmp_path):
    """Two forked processes in a gloo group each take their share of six toy samples (rows
    rank::2, as SamplePass shards them): the all-reduced Fisher equals one process's."""
    samples = [((1.0, 2.0), 1), ((-1.0, 0.5), 0), ((0.3, -1.2), 1), ((2.0, 0.1), 0), ((-0.4, -0.4), 1),
               ((0.7, 1.5), 0)]
    w0 = torch.tensor([0.5, -0.25])
    single = _logistic_sample_gradients(torch.nn.Parameter(w0.clone()), samples)
    all_reduce_mean(single, len(samples))
    port = _free_port()
    pids = []
    for rank in range(2):
        pid = os.fork()
        if pid == 0:  # child: join the group, compute its share, write rank 0's result
            code = 1
            try:
                torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                                     world_size=2, timeout=datetime.timedelta(seconds=60))
                fisher = _logistic_sample_gradients(torch.nn.Parameter(w0.clone()), dist.shard(samples))
                all_reduce_mean(fisher, len(samples))
                if rank == 0:
                    torch.save(fisher["w"], tmp_path / "fisher.pt")
                torch.distributed.destroy_process_group()
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    both = torch.load(tmp_path / "fisher.pt")
    torch.testing.assert_close(both, single["w"], rtol=1e-6, atol=0)


# -- LwF ----------------------------------------------------------------------------------------------
def test_distillation_term_and_its_gradient_by_hand():
    # Vocabulary of 2, T = 2. Positions 0 and 1 predict answer tokens (labels at 1 and 2); position 2
    # predicts a padded label and must get no gradient.
    teacher = torch.tensor([[[2.0, 0.0], [0.0, 2.0], [5.0, 5.0], [0.0, 0.0]]])
    student = torch.zeros(1, 4, 2, requires_grad=True)
    labels = torch.tensor([[IGNORE_INDEX, 7, 8, IGNORE_INDEX]])
    kl = distillation_kl(student, teacher, labels, temperature=2.0)
    # p = softmax((1, 0)) = (e/(e+1), 1/(e+1)) (mirrored at position 1), q = (1/2, 1/2):
    # KL = p1 log(2 p1) + p2 log(2 p2) at both positions; the mean equals it.
    p1, p2 = math.e / (math.e + 1), 1 / (math.e + 1)
    assert kl.item() == pytest.approx(p1 * math.log(2 * p1) + p2 * math.log(2 * p2), rel=1e-6)
    assert kl.item() == pytest.approx(0.110944, abs=1e-6)
    kl.backward()
    # d KL / d z_student = (q - p) / T, divided by the 2 answer positions.
    g = (0.5 - p1) / 2 / 2
    want = torch.tensor([[g, -g], [-g, g], [0.0, 0.0], [0.0, 0.0]])
    torch.testing.assert_close(student.grad[0], want, rtol=0, atol=1e-7)
    none = torch.zeros(1, 4, 2, requires_grad=True)
    assert distillation_kl(none, teacher, torch.full((1, 4), IGNORE_INDEX), 2.0).item() == 0.0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, cache_dir):
    """The tiny model of the test stream and two encoded GQA training samples, collated."""
    from mmcit.data.stream import load_data
    from mmcit.models.factory import build_model

    cfg = tiny_cfg(tmp_path_factory.mktemp("lwf"), cache_dir)
    data = load_data(cfg.data, cache_dir, lambda m: None)
    model = build_model(cfg, data, cache_dir, lambda m: None, progress=False)
    enc = model.encoder()
    batch = model.collate([enc.encode_train(s) for s in data.tasks[1].train[:2]], "right")
    return model, data, batch


def _gradients(model) -> dict:
    return {n: p.grad.clone() for n, p in model.trainable_named_parameters() if p.grad is not None}


def test_lwf_term_is_zero_with_equal_weights_and_memory_is_one_adapter_copy(tiny):
    model, data, batch = tiny
    method = build_method(LwFConfig())
    named = model.trainable_named_parameters()
    trainable, total = model.num_parameters()
    pointers = {n: p.data_ptr() for n, p in named}
    stage = Stage("GQA", [data.tasks[1]], data.tasks, index=1)
    method.before_stage(stage, model)
    # One copy of the trainable tensors, nothing else: no second model, no module held.
    assert set(method.teacher) == {n for n, _ in named}
    assert sum(t.numel() for t in method.teacher.values()) == trainable
    assert all(method.teacher[n].data_ptr() != p.data_ptr() for n, p in named)
    assert not any(isinstance(v, torch.nn.Module) for v in vars(method).values())
    model.train()
    outputs = model(**batch)
    term = method.extra_loss(model, batch, outputs)
    assert term.item() == 0.0  # the kept weights are the live ones
    assert model.num_parameters() == (trainable, total)
    assert {n: p.data_ptr() for n, p in model.trainable_named_parameters()} == pointers  # live storage back
    for p in method.teacher.values():
        p.add_(0.05)  # make the kept weights differ
    outputs = model(**batch)
    assert method.extra_loss(model, batch, outputs).item() > 0
    method.after_stage(stage, model)
    assert method.teacher is None and method.stored_tensors() == {}


def test_the_teacher_forward_leaves_the_training_gradients_unchanged(tiny):
    """Swapping the kept weights in between a forward and its backward must not change the
    gradients of the language-model loss (the graph refers to the parameters, restored by then)."""
    model, _, batch = tiny
    named = model.trainable_named_parameters()
    with torch.no_grad():
        for _, p in named:
            p.add_(0.01 * torch.randn_like(p))  # LoRA B starts at 0: give every tensor a gradient
    model.train()
    model.peft.zero_grad(set_to_none=True)
    model(**batch).loss.backward()
    plain = _gradients(model)
    model.peft.zero_grad(set_to_none=True)
    loss = model(**batch).loss
    with torch.no_grad(), weights_swapped([p for _, p in named], [torch.randn_like(p) for _, p in named]):
        model(**{k: v for k, v in batch.items() if k != "labels"})
    loss.backward()
    swapped = _gradients(model)
    model.peft.zero_grad(set_to_none=True)
    assert plain.keys() == swapped.keys() and plain
    assert all(torch.equal(plain[k], swapped[k]) for k in plain)


def test_lwf_resumes_inside_a_task_with_the_kept_weights_of_its_start(tiny):
    """A step checkpoint holds LwF's kept weights (split into safetensors like any method tensor); a
    resumed method, whose before_stage copied the weights of the resume's moment, loads them back
    and gives the identical distillation term."""
    model, data, batch = tiny
    stage = Stage("GQA", [data.tasks[1]], data.tasks, index=1)
    method = build_method(LwFConfig())
    method.before_stage(stage, model)
    named = model.trainable_named_parameters()
    start = {n: p.detach().clone() for n, p in named}
    model.train()
    with torch.no_grad():
        for _, p in named:
            p.add_(0.02)  # as if some steps had trained
    before = method.extra_loss(model, batch, model(**batch)).item()
    skeleton, tensors = split_tensors(method.state_dict())
    assert len(tensors) == len(named)  # the kept copy goes to method_tensors.safetensors
    state = join_tensors(json.loads(json.dumps(skeleton)), {k: v.clone() for k, v in tensors.items()})
    resumed = build_method(LwFConfig())
    resumed.before_stage(stage, model)  # copies today's (moved) weights ...
    resumed.load_state_dict(state)  # ... which the checkpoint's copy replaces
    assert all(torch.equal(resumed.teacher[n], start[n]) for n in start)
    assert resumed.extra_loss(model, batch, model(**batch)).item() == before > 0
    assert resumed.state_dict()["kl"][1] == method.state_dict()["kl"][1] + 1
    with torch.no_grad():
        for n, p in named:
            p.copy_(start[n])
