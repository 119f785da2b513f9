"""AdaptiveEMA against a plain python form of LCIA's reference update, hand-computed cases, and the
method hooks / Trainer callback built on it. Everything runs on CPU in a few seconds."""
from __future__ import annotations

import json
import math
import os

import pytest
import torch

from mmcit.ema import AdaptiveEMA as _AdaptiveEMA
from mmcit.ema.groups import layer_group

# tests/test_ema_kernels.py runs the exactness tests below again with the fused Triton kernels
# (under Triton's CPU interpreter): every AdaptiveEMA this file builds then takes that path.
KERNEL = os.environ.get("MMCIT_TEST_EMA_KERNEL", "torch")


def AdaptiveEMA(*args, **kwargs) -> _AdaptiveEMA:
    kwargs.setdefault("kernel", KERNEL)
    ema = _AdaptiveEMA(*args, **kwargs)
    assert ema.kernel == KERNEL
    return ema

# -- the reference, written out plainly ---------------------------------------------------------


def ref_alpha(a: float, b: float, c: float, scale: float = 2.0, fallback: float = 0.01) -> float:
    """The reference code's form (docs/method.md): python floats, a fallback for anything not in (0, 1)."""
    try:
        alpha = scale * (1 + b) / (a * c)
    except ZeroDivisionError:
        return fallback
    if not math.isfinite(alpha) or not 0 < alpha < 1:
        return fallback
    return alpha


class RefEMA:
    """Per-group python loop in float64 with one host sync per norm, as the authors' code does."""

    def __init__(self, groups: dict[str, list[str]], scale: float = 2.0, fallback: float = 0.01,
                 fixed_alpha: float | None = None, mean: bool = False):
        self.groups, self.scale, self.fallback, self.fixed = groups, scale, fallback, fixed_alpha
        self.mean = mean  # alpha_norm "mean": the three norms divided by the group's element count
        self.E: dict[str, torch.Tensor] = {}
        self.gp: dict[str, torch.Tensor] = {}
        self.alphas: dict[str, float] = {}
        self.fallbacks = self.skipped = 0

    def update(self, params: dict[str, torch.nn.Parameter]) -> None:
        for group, names in self.groups.items():
            grads = [params[n].grad for n in names]
            if any(g is None or not torch.isfinite(g).all() for g in grads):
                self.skipped += 1
                continue
            theta = {n: params[n].detach().double() for n in names}
            grad = {n: params[n].grad.double() for n in names}
            if names[0] not in self.E:  # first step: copy, no blend
                for n in names:
                    self.E[n], self.gp[n] = theta[n].clone(), grad[n].clone()
                continue
            a = sum(float((theta[n] - self.E[n]).abs().sum()) for n in names)
            b = sum(float(grad[n].abs().sum()) for n in names)
            c = sum(float((grad[n] - self.gp[n]).abs().sum()) for n in names)
            if self.mean:
                numel = sum(theta[n].numel() for n in names)
                a, b, c = a / numel, b / numel, c / numel
            if self.fixed is not None:
                alpha = self.fixed
            else:
                alpha = ref_alpha(a, b, c, self.scale, self.fallback)
                self.fallbacks += alpha == self.fallback
            self.alphas[group] = alpha
            for n in names:
                self.E[n] = (1 - alpha) * self.E[n] + alpha * theta[n]
                self.gp[n] = grad[n].clone()


def make_params(shapes: dict[str, tuple[int, ...]], seed: int = 0, dtype=torch.float32) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {n: torch.nn.Parameter(torch.randn(s, generator=gen).to(dtype)) for n, s in shapes.items()}


def fake_step(params: dict, gen: torch.Generator, lr: float = 0.5) -> None:
    """A gradient, then an SGD step plus noise: theta moves away from E, g changes every step."""
    with torch.no_grad():
        for p in params.values():
            p.grad = torch.randn(p.shape, generator=gen).to(p.dtype)
            p.add_(-lr * p.grad + 0.3 * torch.randn(p.shape, generator=gen).to(p.dtype))


def assert_close_rel(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-6) -> None:
    """Relative to the tensor's scale, so that entries near zero do not demand absolute exactness."""
    scale = expected.abs().max().item() or 1.0
    err = (actual.double() - expected.double()).abs().max().item()
    assert err <= rtol * scale, f"max error {err:.3g} > {rtol:g} * {scale:.3g}"


SHAPES = {"w1": (16, 8), "w2": (8, 16), "bias": (32,), "tiny": (2,), "cube": (4, 4, 3)}


# -- exactness ----------------------------------------------------------------------------------


@pytest.mark.parametrize("granularity", ["tensor", "layer"])
def test_mean_norms_match_the_reference_and_do_not_grow_as_tensors_shrink(granularity):
    """alpha_norm: mean divides each norm by the group's element count (a weight independent of size)."""
    shapes = {"m.lora_A.default.weight": (8, 64), "m.lora_B.default.weight": (64, 8), "small": (4,)}
    params = make_params(shapes)
    ema = AdaptiveEMA(params.items(), alpha_norm="mean", granularity=granularity, scale=0.5)
    groups = ({n: [n] for n in params} if granularity == "tensor"
              else {"m:default": list(shapes)[:2], "small": ["small"]})
    ref = RefEMA(groups, scale=0.5, mean=True)
    gen = torch.Generator().manual_seed(3)
    for _ in range(4):
        fake_step(params, gen)
        ema.update()
        ref.update(params)
        for g, expected in ref.alphas.items():
            assert ema.last_alphas[g] == pytest.approx(expected, rel=1e-6)
    for n in params:
        assert_close_rel(ema.shadow[n], ref.E[n])
    # The same per-element statistics in a tensor 16x as large give the same mean-norm alpha, where
    # the reference's summed norms would give about a 16th of it.
    one = {"w": torch.nn.Parameter(torch.ones(4))}
    big = {"w": torch.nn.Parameter(torch.ones(64))}
    alphas = {}
    for key, p in (("one", one), ("big", big)):
        for norm in ("sum", "mean"):
            e = AdaptiveEMA(p.items(), alpha_norm=norm, scale=1e-3)
            for step, (delta, grad) in enumerate([(0.0, 1.0), (0.5, 3.0)]):
                with torch.no_grad():
                    p["w"].add_(delta)
                p["w"].grad = torch.full_like(p["w"], grad)
                e.update()
            alphas[key, norm] = e.last_alphas["w"]
    assert alphas["one", "mean"] == pytest.approx(alphas["big", "mean"], rel=1e-6)
    assert alphas["one", "mean"] == pytest.approx(1e-3 * (1 + 3.0) / (0.5 * 2.0), rel=1e-6)  # 4e-3
    assert alphas["one", "sum"] == pytest.approx(1e-3 * (1 + 12.0) / (2.0 * 8.0), rel=1e-6)
    assert alphas["big", "sum"] == pytest.approx(1e-3 * (1 + 192.0) / (32.0 * 128.0), rel=1e-6)


@pytest.mark.parametrize("shapes", [SHAPES, {"big": (3, 4099), "w1": (16, 8), "long": (9000,), "tiny": (2,)}],
                         ids=["small", "several-blocks"])
def test_matches_reference_over_steps(shapes, monkeypatch):
    params = make_params(shapes)
    ema = AdaptiveEMA(params.items())
    if KERNEL == "triton":  # every step must take the fused path, not fall back to the plain one
        monkeypatch.setattr("mmcit.ema.plain.norms", None)
    ref = RefEMA({n: [n] for n in params})
    gen = torch.Generator().manual_seed(1)
    seen_adaptive = seen_fallback = 0
    for _ in range(6):
        fake_step(params, gen)
        ema.update()
        ref.update(params)
        alphas = ema.last_alphas
        for g, expected in ref.alphas.items():
            assert alphas[g] == pytest.approx(expected, rel=1e-6)
            seen_fallback += expected == 0.01
            seen_adaptive += expected != 0.01
        for n in params:
            assert_close_rel(ema.shadow[n], ref.E[n])
    assert ema.num_fallbacks == ref.fallbacks
    assert seen_adaptive > 0 and seen_fallback > 0  # both branches were exercised


def two_element_ema(**kwargs) -> tuple[_AdaptiveEMA, torch.nn.Parameter]:
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    return AdaptiveEMA([("w", p)], **kwargs), p


def set_step(p: torch.nn.Parameter, theta: list[float], grad: list[float]) -> None:
    with torch.no_grad():
        p.copy_(torch.tensor(theta))
    p.grad = torch.tensor(grad)


def test_mean_alpha_is_the_mean_of_all_blend_weights():
    params = make_params(SHAPES)
    ema = AdaptiveEMA(params.items())
    ref = RefEMA({n: [n] for n in params})
    gen = torch.Generator().manual_seed(5)
    assert math.isnan(ema.mean_alpha)  # no blend yet
    weights = []
    for step in range(5):
        fake_step(params, gen)
        ema.update()
        ref.update(params)
        if step:  # the first update copies and blends nothing
            weights += list(ref.alphas.values())
    assert len(set(weights)) > 2  # adaptive values, not only the fallback
    assert ema.mean_alpha == pytest.approx(sum(weights) / len(weights), rel=1e-6)
    restored = AdaptiveEMA(params.items())
    restored.load_state_dict(ema.state_dict())
    assert restored.mean_alpha == pytest.approx(ema.mean_alpha, rel=1e-7)
    ema.reset()
    assert math.isnan(ema.mean_alpha)


def test_hand_computed_two_elements():
    ema, p = two_element_ema()
    set_step(p, [1.0, 2.0], [1.0, -1.0])
    ema.update()  # first step: E = theta = [1, 2], g_prev = [1, -1]
    assert torch.equal(ema.shadow["w"], torch.tensor([1.0, 2.0]))
    assert math.isnan(ema.last_alphas["w"])

    set_step(p, [3.0, -2.0], [2.0, 1.0])
    ema.update()
    # a = |3-1| + |-2-2| = 6;  b = |2| + |1| = 3;  c = |2-1| + |1+1| = 3
    # alpha = 2 * (1 + 3) / (6 * 3) = 4/9;  E = 5/9 * [1, 2] + 4/9 * [3, -2] = [17/9, 2/9]
    assert ema.last_alphas["w"] == pytest.approx(4 / 9, rel=1e-6)
    assert torch.allclose(ema.shadow["w"], torch.tensor([17 / 9, 2 / 9]), rtol=1e-6, atol=0)

    set_step(p, [2.0, 0.0], [0.0, 1.0])
    ema.update()
    # a = |2-17/9| + |0-2/9| = 1/3;  b = 1;  c = |0-2| + |1-1| = 2
    # alpha = 2 * 2 / (1/3 * 2) = 6 >= 1 -> fallback 0.01;  E = 0.99 * [17/9, 2/9] + 0.01 * [2, 0]
    assert ema.last_alphas["w"] == pytest.approx(0.01)
    expected = torch.tensor([0.99 * 17 / 9 + 0.02, 0.99 * 2 / 9])
    assert torch.allclose(ema.shadow["w"], expected, rtol=1e-6, atol=0)
    assert ema.num_fallbacks == 1 and ema.num_skipped == 0 and ema.num_updates == 3


def test_first_step_copies_weights_and_gradient():
    params = make_params(SHAPES)
    ema = AdaptiveEMA(params.items())
    fake_step(params, torch.Generator().manual_seed(3))
    ema.update()
    state = ema.state_dict()
    for n, p in params.items():
        assert torch.equal(ema.shadow[n], p.detach())  # bit-exact copy, no blend
        assert torch.equal(state["grad_prev"][n], p.grad)
    assert ema.num_fallbacks == 0 and all(math.isnan(a) for a in ema.last_alphas.values())


@pytest.mark.parametrize(
    "case, scale, step2",
    [
        # a = 6, b = 3, c = 3 (as in the hand-computed case) and scale -2: alpha = -4/9 <= 0
        ("alpha <= 0", -2.0, ([3.0, -2.0], [2.0, 1.0])),
        # a = 6, b = 1.1 + 0.8 = 1.9, c = 0.1 + 0.2 = 0.3: alpha = 2 * 2.9 / 1.8 ~ 3.2 >= 1
        ("alpha >= 1", 2.0, ([3.0, -2.0], [1.1, -0.8])),
        # theta == E: a = 0, 2 * (1 + 3) / (0 * 3) divides by zero
        ("a == 0", 2.0, ([1.0, 2.0], [2.0, 1.0])),
        # g == g_prev: c = 0
        ("c == 0", 2.0, ([3.0, -2.0], [1.0, -1.0])),
    ],
)
def test_fallback(case, scale, step2):
    ema, p = two_element_ema(scale=scale)
    set_step(p, [1.0, 2.0], [1.0, -1.0])
    ema.update()
    set_step(p, *step2)
    ema.update()
    theta = torch.tensor(step2[0])
    assert ema.last_alphas["w"] == pytest.approx(0.01), case
    assert torch.allclose(ema.shadow["w"], 0.99 * torch.tensor([1.0, 2.0]) + 0.01 * theta, rtol=1e-6)
    assert ema.num_fallbacks == 1


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nonfinite_gradient_is_skipped(bad):
    params = make_params({"w": (3, 4), "v": (5,)})
    ema = AdaptiveEMA(params.items())
    ref = RefEMA({"w": ["w"], "v": ["v"]})
    gen = torch.Generator().manual_seed(4)
    fake_step(params, gen)
    ema.update(), ref.update(params)
    fake_step(params, gen)
    ema.update(), ref.update(params)
    before = ema.shadow["w"].clone()
    gp_before = ema.state_dict()["grad_prev"]["w"].clone()

    fake_step(params, gen)
    params["w"].grad[1, 2] = bad
    with torch.no_grad():  # what an optimizer does with a NaN gradient
        params["w"][1, 2] = math.nan
    ema.update(), ref.update(params)
    assert torch.equal(ema.shadow["w"], before)  # untouched, not poisoned by the NaN weight
    assert torch.equal(ema.state_dict()["grad_prev"]["w"], gp_before)
    assert ema.num_skipped == 1 and ema.skipped_per_group == {"w": 1, "v": 0}
    assert_close_rel(ema.shadow["v"], ref.E["v"])  # the other group blended as usual

    with torch.no_grad():
        params["w"][1, 2] = 0.0
    fake_step(params, gen)  # next step: c against the g_prev of the last good step
    ema.update(), ref.update(params)
    assert ema.last_alphas["w"] == pytest.approx(ref.alphas["w"], rel=1e-6)
    assert_close_rel(ema.shadow["w"], ref.E["w"])


def test_missing_gradient_is_skipped():
    params = make_params({"w": (3, 4), "v": (5,)})
    ema = AdaptiveEMA(params.items())
    gen = torch.Generator().manual_seed(5)
    fake_step(params, gen)
    ema.update()
    fake_step(params, gen)
    params["w"].grad = None
    before = ema.shadow["w"].clone()
    ema.update()
    assert torch.equal(ema.shadow["w"], before)
    assert ema.skipped_per_group == {"w": 1, "v": 0}


def test_first_step_waits_for_a_valid_gradient():
    params = make_params({"w": (3,)})
    ema = AdaptiveEMA(params.items())
    params["w"].grad = torch.tensor([1.0, math.nan, 0.0])
    ema.update()  # skipped: no g_prev yet, so the next valid step is the first one
    fake_step(params, torch.Generator().manual_seed(6))
    ema.update()
    assert torch.equal(ema.shadow["w"], params["w"].detach())
    assert torch.equal(ema.state_dict()["grad_prev"]["w"], params["w"].grad)
    assert ema.num_skipped == 1 and ema.num_fallbacks == 0


# -- grouping -----------------------------------------------------------------------------------

PEFT_NAMES = {
    "base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.default.weight": (4, 8),
    "base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_B.default.weight": (8, 4),
    "base_model.model.model.language_model.layers.0.self_attn.v_proj.lora_A.default.weight": (4, 8),
    "base_model.model.model.language_model.layers.0.self_attn.v_proj.lora_B.default.weight": (8, 4),
    "base_model.model.model.multi_modal_projector.modules_to_save.default.linear_1.weight": (8, 6),
    "base_model.model.model.multi_modal_projector.modules_to_save.default.linear_1.bias": (8,),
    "base_model.model.model.multi_modal_projector.modules_to_save.default.linear_2.weight": (8, 8),
    "base_model.model.model.multi_modal_projector.modules_to_save.default.linear_2.bias": (8,),
    "base_model.model.lm_head.modules_to_save.default.weight": (10, 8),
}


def test_layer_groups_from_peft_names():
    params = make_params(PEFT_NAMES)
    groups = AdaptiveEMA(params.items(), granularity="layer").groups
    names = list(PEFT_NAMES)
    lm = "base_model.model.model.language_model.layers.0.self_attn"
    assert groups == {
        f"{lm}.q_proj:default": names[0:2],
        f"{lm}.v_proj:default": names[2:4],
        "base_model.model.model.multi_modal_projector:default": names[4:8],
        "base_model.model.lm_head:default": names[8:9],
    }
    assert layer_group("model.multi_modal_projector.linear_1.bias") == "model.multi_modal_projector"
    assert layer_group("encoder.fc.weight") == "encoder.fc"


def test_layer_granularity_matches_reference():
    params = make_params(PEFT_NAMES, seed=7)
    ema = AdaptiveEMA(params.items(), granularity="layer")
    ref = RefEMA(ema.groups)
    gen = torch.Generator().manual_seed(8)
    for _ in range(4):
        fake_step(params, gen)
        ema.update(), ref.update(params)
    for g, alpha in ref.alphas.items():
        assert ema.last_alphas[g] == pytest.approx(alpha, rel=1e-6)
    for n in params:
        assert_close_rel(ema.shadow[n], ref.E[n])


def test_custom_group_fn():
    params = make_params(SHAPES)
    ema = AdaptiveEMA(params.items(), group_fn=lambda name: "all")
    assert ema.groups == {"all": list(SHAPES)}
    ref = RefEMA(ema.groups)
    gen = torch.Generator().manual_seed(9)
    for _ in range(3):
        fake_step(params, gen)
        ema.update(), ref.update(params)
    assert ema.last_alphas["all"] == pytest.approx(ref.alphas["all"], rel=1e-6)


# -- state, swapping, dtypes, modes ---------------------------------------------------------------


def test_state_dict_round_trip():
    params = make_params(SHAPES)
    a = AdaptiveEMA(params.items())
    gen = torch.Generator().manual_seed(10)
    for _ in range(3):
        fake_step(params, gen)
        a.update()
    state = {k: ({n: t.clone() for n, t in v.items()} if isinstance(v, dict) else
                 v.clone() if isinstance(v, torch.Tensor) else v) for k, v in a.state_dict().items()}
    b = AdaptiveEMA(params.items())
    b.load_state_dict(state)
    assert b.num_updates == 3 and b.num_fallbacks == a.num_fallbacks
    fake_step(params, gen)
    a.update(), b.update()
    for n in params:
        assert torch.equal(a.shadow[n], b.shadow[n])
    assert a.last_alphas == b.last_alphas

    other = AdaptiveEMA(params.items(), group_fn=lambda name: "all")
    with pytest.raises(ValueError, match="grouping"):
        other.load_state_dict(state)


def test_store_copy_to_restore():
    params = make_params(SHAPES)
    ema = AdaptiveEMA(params.items())
    gen = torch.Generator().manual_seed(11)
    for _ in range(3):
        fake_step(params, gen)
        ema.update()
    live = {n: p.detach().clone() for n, p in params.items()}
    ema.store()
    ema.copy_to()
    for n, p in params.items():
        assert torch.equal(p.detach(), ema.shadow[n])
        assert not torch.equal(p.detach(), live[n])
    ema.restore()
    for n, p in params.items():
        assert torch.equal(p.detach(), live[n])
    with pytest.raises(RuntimeError):
        ema.restore()


def test_reset_starts_afresh():
    params = make_params(SHAPES)
    ema = AdaptiveEMA(params.items())
    gen = torch.Generator().manual_seed(12)
    for _ in range(3):
        fake_step(params, gen)
        ema.update()
    ema.reset()
    assert ema.num_updates == 0 and ema.num_fallbacks == 0
    fake_step(params, gen)
    ema.update()
    for n, p in params.items():
        assert torch.equal(ema.shadow[n], p.detach())


def test_bf16_weights_keep_a_one_percent_blend():
    p = torch.nn.Parameter(torch.ones(4, dtype=torch.bfloat16))
    ema = AdaptiveEMA([("w", p)], fixed_alpha=0.01)
    p.grad = torch.ones(4, dtype=torch.bfloat16)
    ema.update()
    with torch.no_grad():
        p.fill_(1.25)
    for _ in range(10):
        ema.update()
    # In bf16, 1 + 0.01 * 0.25 rounds back to 1 every step; in float32 the blends add up.
    expected = 1 + 0.25 * (1 - 0.99**10)
    assert ema.shadow["w"].dtype == torch.float32
    assert torch.allclose(ema.shadow["w"], torch.full((4,), expected), rtol=1e-6)
    bf16_state = torch.ones(4, dtype=torch.bfloat16)
    for _ in range(10):
        bf16_state = 0.99 * bf16_state + 0.01 * p.detach()
    assert torch.equal(bf16_state, torch.ones(4, dtype=torch.bfloat16))  # what a bf16 state loses


def test_bf16_weights_match_reference():
    params = make_params(SHAPES, dtype=torch.bfloat16)
    ema = AdaptiveEMA(params.items())
    ref = RefEMA({n: [n] for n in params})
    gen = torch.Generator().manual_seed(13)
    for _ in range(4):
        fake_step(params, gen)
        ema.update(), ref.update(params)
    for g, alpha in ref.alphas.items():
        assert ema.last_alphas[g] == pytest.approx(alpha, rel=1e-5)
    for n in params:
        assert_close_rel(ema.shadow[n], ref.E[n], rtol=1e-5)


def test_fixed_alpha_is_a_plain_ema():
    params = make_params(SHAPES)
    ema = AdaptiveEMA(params.items(), fixed_alpha=0.01)
    ref = RefEMA({n: [n] for n in params}, fixed_alpha=0.01)
    gen = torch.Generator().manual_seed(14)
    for _ in range(5):
        fake_step(params, gen)
        ema.update(), ref.update(params)
    for n in params:
        assert_close_rel(ema.shadow[n], ref.E[n])
    assert ema.num_fallbacks == 0 and list(ema.last_alphas.values()) == [pytest.approx(0.01)] * len(params)


def test_alpha_trace_records_every_blend_per_step_and_group():
    """Row k of the trace: each group's alpha at update k, NaN where it did not blend (the first
    update copies; a NaN gradient skips the group); it survives a state_dict round trip and resets."""
    params = make_params({"w": (3, 4), "v": (5,), "b": (2,)})
    ema = AdaptiveEMA(params.items())
    ref = RefEMA({n: [n] for n in params})
    gen = torch.Generator().manual_seed(7)
    expected = []
    for step in range(6):
        fake_step(params, gen)
        if step == 3:
            params["v"].grad[0] = math.nan
        ref.alphas = {}
        ema.update()
        ref.update(params)
        expected.append([ref.alphas.get(g, math.nan) for g in ema.groups])
    trace = ema.alpha_trace()
    assert trace.shape == (6, 3) and trace.dtype == torch.float32
    assert list(ema.groups) == ["w", "v", "b"]
    assert torch.isnan(trace[0]).all() and torch.isnan(trace[3, 1]) and not torch.isnan(trace[3, 0])
    torch.testing.assert_close(trace, torch.tensor(expected, dtype=torch.float32), rtol=1e-6, atol=0, equal_nan=True)
    restored = AdaptiveEMA(params.items())
    restored.load_state_dict(ema.state_dict())
    assert torch.equal(restored.alpha_trace().nan_to_num(-1), trace.nan_to_num(-1))
    ema.reset()
    assert ema.alpha_trace().shape == (0, 3)


def test_alpha_trace_grows_past_its_initial_capacity():
    from mmcit.ema.trace import INITIAL_CAPACITY

    p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    ema = AdaptiveEMA([("w", p)], fixed_alpha=0.25)
    for _ in range(INITIAL_CAPACITY + 5):
        p.grad = torch.ones(2)
        ema.update()
    trace = ema.alpha_trace()
    assert trace.shape == (INITIAL_CAPACITY + 5, 1)
    assert torch.isnan(trace[0, 0]) and (trace[1:, 0] == 0.25).all()


def test_update_never_syncs_with_the_host(monkeypatch):
    """No python-level read of a tensor's value inside update() (which on a GPU would sync)."""
    params = make_params(PEFT_NAMES)
    ema = AdaptiveEMA(params.items(), granularity="layer")
    gen = torch.Generator().manual_seed(15)

    def forbidden(*args, **kwargs):
        raise AssertionError("host synchronisation inside update()")

    for _ in range(3):
        fake_step(params, gen)
        with monkeypatch.context() as m:
            for attr in ("item", "tolist", "__bool__", "__float__", "__int__", "__index__"):
                m.setattr(torch.Tensor, attr, forbidden)
            ema.update()


def test_rejects_bad_arguments():
    params = make_params({"w": (2,)})
    with pytest.raises(ValueError):
        AdaptiveEMA([])
    with pytest.raises(ValueError):
        AdaptiveEMA(params.items(), granularity="row")
    with pytest.raises(ValueError):
        AdaptiveEMA(params.items(), fixed_alpha=1.5)
    with pytest.raises(RuntimeError):  # torch.distributed is not initialised here
        AdaptiveEMA(params.items(), sharded=True)


# -- method hooks -------------------------------------------------------------------------------


class FakeModel:
    """The one thing the EMA methods need from the model wrapper."""

    def __init__(self, seed: int = 0):
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2))

    def trainable_named_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        return [(n, p) for n, p in self.net.named_parameters() if p.requires_grad]


def train_task(method, model: FakeModel, ref: RefEMA, steps: int, seed: int) -> None:
    from mmcit.methods.base import Stage

    stage = Stage(name=f"task{seed}", train=[], evaluate=[])
    method.before_stage(stage, model)
    params = dict(model.trainable_named_parameters())
    opt = torch.optim.SGD(params.values(), lr=0.2)
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(16, 4, generator=gen), torch.randn(16, 2, generator=gen)
    for _ in range(steps):
        torch.nn.functional.mse_loss(model.net(x), y).backward()
        opt.step()
        method.after_optimizer_step(model)
        ref.update(params)
        opt.zero_grad(set_to_none=True)
    method.after_stage(stage, model)


@pytest.mark.parametrize("kind", ["adaptive_ema", "ema"])
def test_method_hooks_copy_the_ema_in_after_each_task(kind):
    from mmcit.methods import METHODS, RunContext, build_method

    cfg = METHODS.get(kind).config_cls()
    assert cfg.type == kind
    method = build_method(cfg)
    model = FakeModel()
    method.setup(model, RunContext(run_dir=None, task_names=["a", "b"]))
    groups = {n: [n] for n, _ in model.trainable_named_parameters()}
    for task in range(2):
        ref = RefEMA(groups, fixed_alpha=0.01 if kind == "ema" else None)  # afresh each task
        train_task(method, model, ref, steps=5, seed=task)
        for n, p in model.trainable_named_parameters():
            assert_close_rel(p.detach(), ref.E[n])  # live weights are now the EMA weights
    summary = method.summary()
    assert set(summary) >= {"fallbacks", "skipped", "last_alpha_mean"}
    assert summary["skipped"] == 0 and len(summary["per_task"]) == 2
    if kind == "ema":
        assert summary["fallbacks"] == 0 and summary["last_alpha_mean"] == pytest.approx(0.01)
        assert all(t["mean_alpha"] == pytest.approx(0.01) for t in summary["per_task"])
    else:
        assert all(0 < t["mean_alpha"] < 1 for t in summary["per_task"])
    json.dumps(method.state_dict())  # between tasks the state is plain JSON for the runner


def test_method_state_resumes_mid_task():
    from mmcit.ema import EMASettings
    from mmcit.methods.adaptive_ema import AdaptiveEMAConfig, AdaptiveEMAMethod
    from mmcit.methods.base import Stage

    model = FakeModel()
    first = AdaptiveEMAMethod(AdaptiveEMAConfig(ema=EMASettings(granularity="layer")))
    stage = Stage(name="t", train=[], evaluate=[])
    first.before_stage(stage, model)
    params = dict(model.trainable_named_parameters())
    gen = torch.Generator().manual_seed(16)
    for _ in range(3):
        fake_step(params, gen)
        first.after_optimizer_step(model)
    state = first.state_dict()
    assert "ema" in state
    second = AdaptiveEMAMethod(AdaptiveEMAConfig(ema=EMASettings(granularity="layer")))
    second.load_state_dict(state)
    second.before_stage(stage, model)  # applies the loaded state instead of starting afresh
    assert second.ema.ema.num_updates == 3
    fake_step(params, gen)
    first.after_optimizer_step(model)
    second.after_optimizer_step(model)
    for n in params:
        assert torch.equal(first.ema.ema.shadow[n], second.ema.ema.shadow[n])


def test_method_rebuilds_for_new_trainable_parameters():
    from mmcit.methods.adaptive_ema import AdaptiveEMAConfig, AdaptiveEMAMethod
    from mmcit.methods.base import Stage

    model = FakeModel()
    method = AdaptiveEMAMethod(AdaptiveEMAConfig())
    method.before_stage(Stage(name="a", train=[], evaluate=[]), model)
    ema = method.ema.ema
    method.before_stage(Stage(name="b", train=[], evaluate=[]), model)
    assert method.ema.ema is ema  # same parameters: reset, not rebuilt
    model.net[0].weight.requires_grad_(False)
    method.before_stage(Stage(name="c", train=[], evaluate=[]), model)
    assert method.ema.ema is not ema and "0.weight" not in method.ema.ema.names


@pytest.mark.parametrize("method", ["adaptive_ema", "lcia", "ema"])
@pytest.mark.parametrize("setting, message", [
    ("granularity: module", "method.ema.granularity must be one of tensor, layer"),
    ("fallback: 0", "method.ema.fallback must be in (0, 1]"),
    ("scale: -1", "method.ema.scale must be > 0"),
    ("fixed_alpha: 2", "method.ema.fixed_alpha must be in (0, 1]")])
def test_every_method_validates_its_ema_settings_the_same_way(method, setting, message):
    from mmcit.config import ConfigError, load_config

    with pytest.raises(ConfigError) as e:
        load_config(None, [f"method={{type: {method}, ema: {{{setting}}}}}"])
    assert str(e.value).startswith(message)


def test_ema_method_needs_its_fixed_alpha():
    from mmcit.config import ConfigError, load_config

    assert load_config(None, ["method={type: ema}"]).method.ema.fixed_alpha == 0.01  # decay 0.99
    with pytest.raises(ConfigError, match="method.ema.fixed_alpha is required"):
        load_config(None, ["method={type: ema, ema: {fixed_alpha: null}}"])


# -- Hugging Face Trainer callback ----------------------------------------------------------------


class TinyRegressor(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(4, 8)
        self.b = torch.nn.Linear(8, 2)

    def forward(self, x, labels=None):
        out = self.b(torch.tanh(self.a(x)))
        return {"loss": torch.nn.functional.mse_loss(out, labels), "logits": out}


def test_trainer_callback_leaves_the_ema_weights(tmp_path):
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from mmcit.ema.callback import AdaptiveEMACallback

    class Recorder(TrainerCallback):
        """Snapshots of (theta, grad) at each optimizer step, for the manual reference loop."""

        def __init__(self):
            self.steps = []

        def on_optimizer_step(self, args, state, control, model=None, **kwargs):
            self.steps.append({n: (p.detach().clone(), p.grad.clone()) for n, p in model.named_parameters()})

    torch.manual_seed(0)
    data = [{"x": torch.randn(4), "labels": torch.randn(2)} for _ in range(32)]
    model = TinyRegressor()
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=5, per_device_train_batch_size=4, learning_rate=0.05,
        use_cpu=True, report_to="none", save_strategy="no", logging_strategy="no", disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=data)
    recorder, callback = Recorder(), AdaptiveEMACallback(granularity="layer")
    trainer.add_callback(recorder)
    trainer.add_callback(callback)
    trainer.train()

    assert len(recorder.steps) == 5 and callback.ema.num_updates == 5
    ref = RefEMA(callback.ema.groups)
    for snap in recorder.steps:
        shadow = {n: torch.nn.Parameter(theta) for n, (theta, _) in snap.items()}
        for n, (_, grad) in snap.items():
            shadow[n].grad = grad
        ref.update(shadow)
    last_trained = recorder.steps[-1]
    for n, p in model.named_parameters():
        assert_close_rel(p.detach(), ref.E[n])
        assert not torch.equal(p.detach(), last_trained[n][0])
