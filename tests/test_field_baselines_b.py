"""Field baselines, part B: eproj, disco and hide_llava.

The mechanisms on numbers worked out by hand: task anchors and the test-time choice (which never
reads the task label), the per-task adapters each method trains, HiDe's fusion of the lower layers
(checked down to a layer's output), then hide_llava end to end on the hf_llava backend, where the
fused and per-task weights of the real run are checked against the weights each task trained.
The SIGKILL-and-resume tests are in tests/test_faults.py (hide_llava in the quick campaign, eproj
and disco in the slow one); every method also goes through tests/test_methods.py.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import mmcit.recipe
from mmcit.config import ConfigError, load_config
from mmcit.data.sample import Sample, TaskData
from mmcit.data.stream import load_data
from mmcit.methods.base import RunContext, Stage, build_method
from mmcit.methods.hide_llava import fuse_lower, split_layers
from mmcit.models.task_adapters import lora_tensors, projector_tensors
from mmcit.models.wrapper import LoraSettings, MMModel
from mmcit.recipe import run
from mmcit.routing.anchors import AnchorSelector, AnchorSettings, TaskAnchors
from mmcit.routing.embedders import EMBEDDERS, Embedder

# -- a toy embedder and a toy model: every number below can be worked out by hand -----------------------
WORDS = ("red", "blue", "count", "name")


class WordAxes(Embedder):
    """One axis per word of WORDS: a text's vector counts its words (normalised by ``embed``)."""

    name = "word_axes"

    def __init__(self, path=None):
        super().__init__()

    @property
    def dim(self):
        return len(WORDS)

    def _embed(self, texts):
        return np.array([[t.split().count(w) for w in WORDS] for t in texts], dtype=np.float32)


@pytest.fixture
def word_axes():
    with EMBEDDERS.temporarily(WordAxes):
        yield


class _Attn(nn.Module):
    def __init__(self):
        super().__init__()
        self.q_proj = nn.Linear(4, 4, bias=False)


class _Layer(nn.Module):
    def __init__(self):
        super().__init__()
        self.self_attn = _Attn()


class _LM(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([_Layer(), _Layer()])


class _Toy(nn.Module):
    """Two decoder layers with a q_proj each, and a projector: what the methods touch."""

    def __init__(self):
        super().__init__()
        self.language_model = _LM()
        self.multi_modal_projector = nn.Linear(2, 4)


def toy_model() -> MMModel:
    torch.manual_seed(0)
    base = _Toy()
    for layer in base.language_model.layers:
        nn.init.zeros_(layer.self_attn.q_proj.weight)  # a zero base weight: a layer's output is its LoRA's
    lora = LoraSettings(r=2, alpha=2, dropout=0.0, target_modules=["q_proj"])  # scale alpha / r = 1
    return MMModel.from_base(base, SimpleNamespace(tokenizer=None), lora)


def sample(task: str, prompt: str, i: int = 0) -> Sample:
    return Sample(task=task, id=str(i), image=None, turns=[(prompt, "x")], instruction="")


def stage(index: int, task: str, prompts: list[str]) -> Stage:
    data = TaskData(task, "exact", train=[sample(task, p, i) for i, p in enumerate(prompts)], test=[])
    return Stage(name=task, train=[data], evaluate=[data], index=index)


def method(kind: str, *options: str):
    cfg = load_config(None, [f"method={{type: {kind}}}", "method.anchors.modalities=[text]",
                             "method.anchors.embedder=word_axes", *options])
    return build_method(cfg.method)


def set_lora(model: MMModel, adapter: str, values: dict[tuple[int, str], torch.Tensor]) -> None:
    """Write hand-made LoRA matrices: ``values[(layer, "A" or "B")]``."""
    with torch.no_grad():
        for name, p in lora_tensors(model, adapter).items():
            layer = int(name.split(".layers.")[1].split(".")[0])
            p.copy_(values[(layer, "A" if "lora_A" in name else "B")])


def get_lora(model: MMModel, adapter: str, layer: int, part: str) -> torch.Tensor:
    return next(p.detach().clone() for n, p in lora_tensors(model, adapter).items()
                if f".layers.{layer}." in n and f"lora_{part}" in n)


def projector(model: MMModel, adapter: str) -> list[torch.Tensor]:
    return [p.detach().clone() for p in projector_tensors(model, adapter).values()]


def fill_projector(model: MMModel, adapter: str, value: float) -> None:
    with torch.no_grad():
        for p in projector_tensors(model, adapter).values():
            p.fill_(value)


def trainable(model: MMModel) -> set[str]:
    return {n for n, _ in model.trainable_named_parameters()}


# -- anchors and the choice ---------------------------------------------------------------------------
def test_similarity_is_the_mean_cosine_over_the_modalities_a_sample_has():
    anchors = TaskAnchors()
    yes = np.array([True, True])
    # a: image mean (1, 1), text mean (.5, .5, 0); b: image (0, 3), text (0, 0, 1)
    anchors.set("a", {"image": (np.array([[1, 0], [1, 2]], np.float32), yes),
                      "text": (np.array([[1, 0, 0], [0, 1, 0]], np.float32), yes)})
    anchors.set("b", {"image": (np.array([[0, 3]], np.float32), yes[:1]),
                      "text": (np.array([[0, 0, 1]], np.float32), yes[:1])})
    # sample 0 has both; sample 1 has no image (its zero row is not used)
    sims = anchors.similarities({"image": (np.array([[1, 0], [0, 0]], np.float32), np.array([True, False])),
                                 "text": (np.array([[1, 0, 0], [0, 0, 1]], np.float32), yes)})
    r = 1 / math.sqrt(2)  # cos((1,0),(1,1)) = cos((1,0,0),(.5,.5,0))
    np.testing.assert_allclose(sims, [[(r + r) / 2, (0 + 0) / 2], [0.0, 1.0]], atol=1e-7)
    assert anchors.counts == {"a": {"image": 2, "text": 2}, "b": {"image": 1, "text": 1}}
    state = json.loads(json.dumps(anchors.state_dict()))
    again = TaskAnchors()
    again.load_state_dict(state)
    assert all(np.array_equal(again.means[k][m], anchors.means[k][m]) for k in anchors.means for m in ("image", "text"))


def test_choice_by_text_anchors_reads_no_task_label(word_axes):
    selector = AnchorSelector(AnchorSettings(modalities=["text"], embedder="word_axes"), temperature=0.05)
    # A: mean of (1,0,1,0)/sqrt2 and (1,0,0,1)/sqrt2; B: (0,1,1,0)/sqrt2
    selector.fit("a", ["A"], None, [sample("A", "red count"), sample("A", "red name")], seed=0)
    selector.fit("b", ["B"], None, [sample("B", "blue count")], seed=0)
    tests = [sample("A", "red"), sample("B", "count"), sample("B", "")]
    # "red": cos with A = .7071 / |A| = .7071 / .8660 = .8165, with B 0 -> a.
    # "count": A .3536 / .8660 = .4082, B .7071 -> b. "": no feature -> the newest task, b.
    assert selector.select(None, tests) == ["a", "b", "b"]
    counts = selector.counts["all"]
    assert counts["samples"] == 3 and counts["fallbacks"] == 1 and counts["matched"] == 3
    # the authors' softmax weight on the chosen task: 1 / (1 + exp(-(s_best - s_other) / T))
    want = 1 / (1 + math.exp(-0.8165 / 0.05)) + 1 / (1 + math.exp(-(0.7071 - 0.4082) / 0.05))
    assert counts["chosen_weight"] == pytest.approx(want, abs=1e-3)
    assert selector.summary()["selection"]["all"]["mean_chosen_weight"] == pytest.approx(want / 2, abs=1e-3)
    # the same samples with other task labels are sent to the same adapters
    relabelled = [Sample(task=t, id=s.id, image=None, turns=s.turns) for s, t in zip(tests, ["Z", "Y", "X"])]
    assert selector.select(None, relabelled) == ["a", "b", "b"]
    # ties go to the earlier task
    chosen, fell = selector.choose(np.array([[0.5, 0.5], [np.nan, np.nan]]))
    assert chosen == ["a", "b"] and fell == [False, True]


def test_an_anchor_averages_at_most_max_samples_drawn_with_the_seed(word_axes):
    settings = AnchorSettings(modalities=["text"], embedder="word_axes", max_samples=2)
    samples = [sample("A", w) for w in ("red", "blue", "count", "name")]
    means = []
    for seed in (0, 0, 1):
        selector = AnchorSelector(settings)
        selector.fit("a", ["A"], None, samples, seed=seed)
        means.append(selector.anchors.means["a"]["text"])
    assert selector.anchors.counts["a"]["text"] == 2
    assert np.array_equal(means[0], means[1])  # the same seed draws the same two samples
    assert sorted(means[0].tolist()).count(0.5) == 2  # two words, half each


@pytest.mark.parametrize("override, message", [
    ("method.anchors.embedder=tfidf", "no fixed vectors"),
    ("method.anchors.modalities=[sound]", "modalities"),
    ("method.anchors.max_samples=-1", "max_samples"),
    ("method.anchors.text=question", "anchors.text"),
])
def test_anchor_options_are_checked_when_the_config_loads(override, message):
    for kind in ("eproj", "disco", "hide_llava"):
        with pytest.raises(ConfigError, match=message):
            load_config(None, [f"method={{type: {kind}}}", override])


def test_method_options_are_checked_when_the_config_loads():
    with pytest.raises(ConfigError, match="top_layers"):
        load_config(None, ["method={type: hide_llava}", "method.top_layers=0"])
    with pytest.raises(ConfigError, match="fusion"):
        load_config(None, ["method={type: hide_llava}", "method.fusion=ties"])
    with pytest.raises(ConfigError, match="method.init"):
        load_config(None, ["method={type: eproj}", "method.init=random"])


# -- the per-task adapters of each method, on the toy model ---------------------------------------------
def test_disco_trains_a_fresh_lora_per_task_shares_the_projector_and_chooses_by_text(tmp_path, word_axes):
    model, disco = toy_model(), method("disco")
    disco.setup(model, RunContext(run_dir=tmp_path, task_names=["A", "B"]))
    first = stage(0, "A", ["red count", "red name"])
    disco.before_stage(first, model)
    assert all(torch.count_nonzero(get_lora(model, "default", k, "B")) == 0 for k in (0, 1))
    assert trainable(model) == set(lora_tensors(model, "default")) | set(projector_tensors(model, "default"))
    fill_projector(model, "default", 1.0)  # "training"
    disco.after_stage(first, model)
    second = stage(1, "B", ["blue count"])
    disco.before_stage(second, model)
    assert model.adapters == ["default", "task_2"] and model.active_adapter == "task_2"
    assert all(torch.count_nonzero(get_lora(model, "task_2", k, "B")) == 0 for k in (0, 1))  # fresh, not a copy
    assert all(torch.equal(p, torch.ones_like(p)) for p in projector(model, "task_2"))  # the projector goes on
    assert trainable(model) == set(lora_tensors(model, "task_2")) | set(projector_tensors(model, "task_2"))
    fill_projector(model, "task_2", 2.0)
    disco.after_stage(second, model)
    assert all(torch.equal(p, torch.full_like(p, 2.0)) for p in projector(model, "default"))  # one projector
    assert disco.select_adapter([sample("?", "red"), sample("?", "count")]) == ["default", "task_2"]


@pytest.mark.parametrize("init", ["previous", "base"])
def test_eproj_trains_only_a_projector_per_task(tmp_path, word_axes, init):
    model, eproj = toy_model(), method("eproj", f"method.init={init}")
    lora_before = {n: p.detach().clone() for n, p in lora_tensors(model, "default").items()}
    base_projector = projector(model, "default")
    eproj.setup(model, RunContext(run_dir=tmp_path, task_names=["A", "B"]))
    first = stage(0, "A", ["red count"])
    eproj.before_stage(first, model)
    assert trainable(model) == set(projector_tensors(model, "default"))  # the LLM stays frozen
    fill_projector(model, "default", 1.0)
    eproj.after_stage(first, model)
    second = stage(1, "B", ["blue name"])
    eproj.before_stage(second, model)
    assert trainable(model) == set(projector_tensors(model, "task_2"))
    start = base_projector if init == "base" else [torch.ones_like(p) for p in base_projector]
    assert all(torch.equal(a, b) for a, b in zip(projector(model, "task_2"), start))
    fill_projector(model, "task_2", 2.0)
    eproj.after_stage(second, model)
    assert all(torch.equal(p, torch.ones_like(p)) for p in projector(model, "default"))  # its own, kept
    assert all(torch.equal(p, lora_before[n]) for n, p in lora_tensors(model, "default").items())
    assert eproj.select_adapter([sample("?", "blue"), sample("?", "red")]) == ["task_2", "default"]


A1 = torch.tensor([[1., 0, 0, 0], [0, 1, 0, 0]])
A2 = torch.tensor([[0., 0, 1, 0], [0, 0, 0, 1]])
A3 = torch.tensor([[1., 1, 0, 0], [0, 0, 1, 1]])
B1 = torch.tensor([[1., 0], [0, 1], [0, 0], [0, 0]])
B2 = torch.tensor([[0., 0], [0, 0], [1, 0], [0, 1]])
B3 = torch.tensor([[1., 0], [1, 0], [0, 1], [0, 1]])
TOP = {k: (torch.full((2, 4), float(k)), torch.full((4, 2), float(k))) for k in (1, 2, 3)}  # layer 1 of task k


def _hand_lora(k: int, a: torch.Tensor, b: torch.Tensor) -> dict:
    return {(0, "A"): a, (0, "B"): b, (1, "A"): TOP[k][0], (1, "B"): TOP[k][1]}


def test_hide_fuses_the_lower_layers_by_summing_a_and_b(tmp_path, word_axes):
    model, hide = toy_model(), method("hide_llava")
    hide.setup(model, RunContext(run_dir=tmp_path, task_names=["A", "B", "C"]))
    assert (hide.lower, hide.top) == ([0], [1])
    for k, (task, prompt, a, b) in enumerate([("A", "red", A1, B1), ("B", "blue", A2, B2), ("C", "name", A3, B3)]):
        st = stage(k, task, [prompt])
        hide.before_stage(st, model)
        name = hide.adapters.names[k]
        assert torch.count_nonzero(get_lora(model, name, 0, "B")) == 0  # fresh
        set_lora(model, name, _hand_lora(k + 1, a, b))  # "training"
        hide.after_stage(st, model)
        if k == 1:
            # layer 0 of every adapter: sum A = [[1,0,1,0],[0,1,0,1]], sum B = [[1,0],[0,1],[1,0],[0,1]]
            for adapter in ("default", "task_2"):
                assert torch.equal(get_lora(model, adapter, 0, "A"), torch.tensor([[1., 0, 1, 0], [0, 1, 0, 1]]))
                assert torch.equal(get_lora(model, adapter, 0, "B"), torch.tensor([[1., 0], [0, 1], [1, 0], [0, 1]]))
            # the fused layer's output for x = (1, 2, 3, 4): (sum B)(sum A) x = (sum B)(4, 6) = (4, 6, 4, 6)
            # (the per-task products alone would give B1 A1 x + B2 A2 x = (1, 2, 3, 4): the fusion keeps
            # the cross terms, as the authors' code does)
            model.set_adapter("task_2")
            layer = model.peft.base_model.model.language_model.layers[0].self_attn.q_proj
            with torch.no_grad():
                out = layer(torch.tensor([[1., 2, 3, 4]]))
            assert out.tolist() == [[4.0, 6.0, 4.0, 6.0]]
    for k, adapter in enumerate(hide.adapters.names):  # the top layer stays each task's own
        assert torch.equal(get_lora(model, adapter, 1, "A"), TOP[k + 1][0])
        assert torch.equal(get_lora(model, adapter, 1, "B"), TOP[k + 1][1])
    assert torch.equal(get_lora(model, "default", 0, "A"), A1 + A2 + A3)
    assert torch.equal(get_lora(model, "task_3", 0, "B"), B1 + B2 + B3)
    assert hide.select_adapter([sample("?", "blue"), sample("?", "name"), sample("?", "red")]) == \
        ["task_2", "task_3", "default"]


def test_hide_mean_fusion_averages_a_and_b():
    model = toy_model()
    model.add_adapter("task_2")
    set_lora(model, "default", _hand_lora(1, A1, B1))
    set_lora(model, "task_2", _hand_lora(2, A2, B2))
    fuse_lower(model, ["default", "task_2"], {0}, "mean")
    assert torch.equal(get_lora(model, "default", 0, "A"), (A1 + A2) / 2)
    assert torch.equal(get_lora(model, "task_2", 0, "B"), (B1 + B2) / 2)
    model.add_adapter("task_3")
    set_lora(model, "task_3", _hand_lora(3, A3, B3))
    fuse_lower(model, ["default", "task_2", "task_3"], {0}, "mean")  # the mean of 2, times 2, plus the new
    torch.testing.assert_close(get_lora(model, "task_2", 0, "A"), (A1 + A2 + A3) / 3, rtol=0, atol=1e-7)
    assert torch.equal(get_lora(model, "task_3", 1, "A"), TOP[3][0])


def test_hide_splits_top_and_lower_layers_by_their_index():
    names = [f"x.layers.{i}.self_attn.q_proj.lora_A.default.weight" for i in (0, 1, 2)]
    assert split_layers(names, 1) == ([0, 1], [2])
    assert split_layers(names, 2) == ([0], [1, 2])
    with pytest.raises(ConfigError, match="only 3 decoder layers"):
        split_layers(names, 4)


# -- end to end on a real backend ------------------------------------------------------------------------
class _Capture:
    """Wraps the run's method: records each task's trained LoRA and projector (before after_stage
    fuses and shares them) and each new adapter's LoRA B at the start of its task."""

    def __init__(self, method):
        self.method, self.trained, self.start_b = method, {}, {}

    def __getattr__(self, name):
        return getattr(self.method, name)

    def before_stage(self, stage, model):
        self.method.before_stage(stage, model)
        self.start_b[model.active_adapter] = [p.detach().clone() for n, p in
                                               lora_tensors(model, model.active_adapter).items() if "lora_B" in n]

    def after_stage(self, stage, model):
        self.trained[model.active_adapter] = model.adapter_state(model.active_adapter)
        self.method.after_stage(stage, model)


def test_hide_llava_on_hf_llava_fuses_what_each_task_trained(tmp_path, cache_dir):
    from tests.tiny_checkpoints import write_llava

    folder = write_llava(tmp_path / "llava")  # a LLaVA checkpoint with 2 decoder layers
    cfg = load_config(None, [
        "data.tasks=[TextVQA, ImageNet]", "data.sample_factor=0.05", "train.max_steps=2", "train.batch_size=4",
        "eval.max_new_tokens=4", "threads=1", "model.type=hf_llava", f"model.path={folder}",
        "model.dtype=float32", "model.gradient_checkpointing=false", "model.lora_r=4",
        f"output_dir={tmp_path / 'run'}", f"data.cache_dir={cache_dir}", "method={type: hide_llava}"])
    kept = []

    def build(method_cfg):
        kept.append(_Capture(build_method(method_cfg)))
        return kept[0]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mmcit.recipe, "build_method", build)
        res = run(cfg, progress=False, log=lambda m: None)
    capture = kept[0]
    summary = res["method_summary"]
    assert (summary["fused_layer_indices"], summary["top_layer_indices"]) == ([0], [1])
    assert list(summary["adapters"]) == ["default", "task_2"] and summary["anchor_samples"]["task_2"]["image"] > 0
    assert all(torch.count_nonzero(b) == 0 for b in capture.start_b["task_2"])  # task 2's LoRA started fresh
    final = capture.method.model
    one, two = capture.trained["default"], capture.trained["task_2"]
    for adapter in ("default", "task_2"):
        for name, p in lora_tensors(final, adapter).items():
            mine = name.replace(f".{adapter}.", ".default.")
            theirs = name.replace(f".{adapter}.", ".task_2.")
            if ".layers.0." in name:  # fused: the sum of both tasks' trained factors
                assert torch.equal(p.detach(), one[mine] + two[theirs]), name
            else:  # top layer: the task's own
                assert torch.equal(p.detach(), (one[mine] if adapter == "default" else two[theirs])), name
        for name, p in projector_tensors(final, adapter).items():  # task 2's trained projector, everywhere
            assert torch.equal(p.detach(), two[name.replace(f".{adapter}.", ".task_2.")])
    # the choice reads image and prompt only: the same test samples under other labels go to the same adapters
    tests = [s for t in load_data(cfg.data, Path(cache_dir), lambda m: None).tasks for s in t.test]
    chosen = capture.method.select_adapter(tests)
    relabelled = [Sample(task="unknown", id=s.id, image=s.image, turns=s.turns) for s in tests]
    assert capture.method.select_adapter(relabelled) == chosen and set(chosen) <= {"default", "task_2"}


# -- slow: every method on both checkpoint backends, and a resume from inside task 2 ---------------------
def _backend_args(kind: str, root: Path) -> list[str]:
    from tests.tiny_checkpoints import write_causal_lm, write_llava, write_open_clip

    common = ["model.dtype=float32", "model.gradient_checkpointing=false", "model.lora_r=4"]
    if kind == "hf_llava":
        return ["model.type=hf_llava", f"model.path={write_llava(root / 'llava')}", *common]
    return ["model.type=composed", f"model.vision_model=local-dir:{write_open_clip(root / 'clip')}",
            f"model.lm_path={write_causal_lm(root / 'lm')}", *common]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["eproj", "disco", "hide_llava"])
@pytest.mark.parametrize("backend", ["hf_llava", "composed"])
def test_each_method_runs_on_each_checkpoint_backend(tmp_path, cache_dir, backend, kind):
    cfg = load_config(None, [
        "data.tasks=[TextVQA, ImageNet]", "data.sample_factor=0.05", "train.max_steps=2", "train.batch_size=4",
        "eval.max_new_tokens=4", "threads=1", *_backend_args(backend, tmp_path), f"output_dir={tmp_path / 'run'}",
        f"data.cache_dir={cache_dir}", f"method={{type: {kind}}}"])
    res = run(cfg, progress=False, log=lambda m: None)
    assert res["complete"] and [len(r) for r in res["accuracy_matrix"]] == [1, 2]
    summary = res["method_summary"]
    assert list(summary["adapters"]) == ["default", "task_2"]
    last = summary["selection"]["ImageNet"]
    assert last["samples"] == 6 and last["fallbacks"] == 0  # both modalities on every test sample
    if kind == "hide_llava":  # both test LMs have 2 decoder layers
        assert (summary["fused_layer_indices"], summary["top_layer_indices"]) == ([0], [1])


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["eproj", "disco", "hide_llava"])
def test_a_task_resumed_from_its_step_checkpoint_equals_the_uninterrupted_run(tmp_path, cache_dir, monkeypatch, kind):
    """Task 2's adapter is added (and made fresh) in before_stage, then the step checkpoint's weights
    and method state replace it: the result must equal a run never interrupted."""
    from tests.test_step_resume import STEPPED, _assert_same_run, _run_interrupted_after_step

    from tests.test_integration import tiny_cfg

    method_arg = f"method={{type: {kind}}}"
    ref = run(tiny_cfg(tmp_path / "ref", cache_dir, method_arg, "model.text_layers=2", *STEPPED),
              progress=False, log=lambda m: None)
    cfg = tiny_cfg(tmp_path, cache_dir, method_arg, "model.text_layers=2", *STEPPED)
    _run_interrupted_after_step(cfg, 4, monkeypatch)
    logs: list[str] = []
    run(cfg, progress=False, log=logs.append, resume=True)
    assert any("resuming GQA at step 4/5" in m for m in logs)
    _assert_same_run(tmp_path / "run", tmp_path / "ref" / "run", ref)
