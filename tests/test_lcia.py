"""The lcia method (mmcit/methods/lcia.py) on a tiny MMModel, its run end to end, and predict."""
import json
from pathlib import Path

import pytest
import torch

from data_recipes.synthetic import ORIGINAL_INSTRUCTIONS
from data_recipes.synthetic.instructions import build_prompt
from mmcit.config import load_config
from mmcit.data.config import COIN_TASKS
from mmcit.data.sample import Sample, TaskData
from mmcit.methods import RunContext, Stage, build_method
from mmcit.models.wrapper import LoraSettings, MMModel
from mmcit.models.tiny_llava.build import TinyModelSpec, build_tiny_llava
from mmcit.models.tiny_llava.tokenizer import train_tokenizer

SPEC = TinyModelSpec(image_size=32, patch_size=16, vision_hidden=32, vision_layers=1, vision_heads=2,
                     text_hidden=32, text_layers=1, text_heads=2, text_intermediate=64, max_positions=128)


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(["USER: What color is it? ASSISTANT: red blue", "Describe the image."] * 20, 300)


@pytest.fixture
def model(tokenizer):
    base, processor = build_tiny_llava(SPEC, tokenizer)
    return MMModel.from_base(base, processor, LoraSettings(r=4))


def prompt(name, instruction=None):
    """A prompt of task ``name`` in CoIN's layout (ImageNet: instruction + short-answer line)."""
    instruction = ORIGINAL_INSTRUCTIONS[name] if instruction is None else instruction
    return build_prompt(name, "the red circle" if name == "Grounding" else "What is it?", instruction)


def task(name, instruction=None):
    instruction = ORIGINAL_INSTRUCTIONS[name] if instruction is None else instruction
    samples = [Sample(task=name, id=f"{name}-{i}", image=None, turns=[(prompt(name, instruction), "a")],
                      instruction=instruction) for i in range(2)]
    return TaskData(name=name, scorer="vqav2", train=samples, test=samples)


def method(**kw):
    """An lcia method; ``tau``, ``embedder`` and ``routing`` (the mode) go to ``method.routing``."""
    routing = {("mode" if k == "routing" else k): kw.pop(k) for k in ("tau", "embedder", "routing") if k in kw}
    cfg = load_config(None, ["method=" + json.dumps({"type": "lcia", "routing": routing, **kw})]).method
    return build_method(cfg)


def train_stream(m, model, names, steps=0):
    """Run the hooks over the tasks; ``steps`` fake optimizer steps per task (weights + grads)."""
    for i, name in enumerate(names):
        stage = Stage(name=name, train=[task(name)], evaluate=[], index=i)
        m.before_stage(stage, model)
        for _ in range(steps):
            fake_step(model)
            m.after_optimizer_step(model)
        m.after_stage(stage, model)


def fake_step(model):
    with torch.no_grad():
        for _, p in model.trainable_named_parameters():
            p.grad = torch.randn_like(p)
            p.add_(0.01 * p.grad)


def adapter_of(m, task_name):
    return m.group_adapters[m.routing.router.task_groups[task_name]]


def test_grouping_of_the_original_instructions_gives_coins_four_groups(model):
    m = method(tau=0.9, embedder="tfidf")
    train_stream(m, model, COIN_TASKS)
    summary = m.summary()
    groups = {g: v["tasks"] for g, v in summary["groups"].items()}
    assert groups == {"group_1": ["ScienceQA"], "group_2": ["TextVQA", "GQA", "VizWiz", "VQAv2", "OCRVQA"],
                      "group_3": ["ImageNet"], "group_4": ["Grounding"]}
    assert model.adapters == ["default", "group_2", "group_3", "group_4"]  # group_1 keeps "default"
    decisions = {r["stage"]: r["decision"] for r in summary["tasks"]}
    assert decisions["ScienceQA"] == "first" and decisions["GQA"] == "reused" and decisions["ImageNet"] == "expanded"
    gqa = next(r for r in summary["tasks"] if r["stage"] == "GQA")
    assert gqa["similarity"] == 1.0 and set(gqa["similarities"]) == {"group_1", "group_2", "group_3"}
    assert json.loads(json.dumps(summary)) == summary  # results.json and report.md take it as is


def test_ema_only_on_reuse_and_copied_in_after_the_task(model):
    m = method(tau=0.9)
    names = ["TextVQA", "GQA", "ImageNet"]  # first, reused, expanded
    seen = {}
    for i, name in enumerate(names):
        stage = Stage(name=name, train=[task(name)], evaluate=[], index=i)
        m.before_stage(stage, model)
        before = m.ema.ema.num_updates if m.ema.ema is not None else None
        for _ in range(2):
            fake_step(model)
            m.after_optimizer_step(model)
        seen[name] = (m.ema.active, before, m.ema.ema.num_updates if m.ema.ema is not None else None)
        if name == "GQA":
            shadow = {n: t.clone() for n, t in m.ema.ema.shadow.items()}
        m.after_stage(stage, model)
        if name == "GQA":  # the EMA weights are what the task leaves behind
            live = dict(model.trainable_named_parameters())
            assert all(torch.equal(live[n].detach(), shadow[n].to(live[n].dtype)) for n in shadow)
            assert all(".default." in n for n in shadow)  # over the re-trained group's adapter only
    assert seen["TextVQA"] == (False, None, None)
    assert seen["GQA"] == (True, 0, 2)
    assert seen["ImageNet"] == (False, 2, 2)  # the stale EMA of GQA is not touched
    assert [r["ema"] for r in m.summary()["tasks"]] == [False, True, False]

    always = method(tau=0.9, ema_when="always")
    train_stream(always, model_copy(model), names, steps=1)
    assert [r["ema"] for r in always.summary()["tasks"]] == [True, True, True]
    assert always.summary()["ema"]["per_task"][-1]["updates"] == 1


def model_copy(model):
    # A fresh tiny model with the same processor (adapters of the first are already taken).
    base, processor = build_tiny_llava(SPEC, model.tokenizer)
    return MMModel.from_base(base, processor, LoraSettings(r=4))


def test_new_group_starts_as_a_copy_of_the_latest_group_and_only_the_active_adapter_trains(model):
    m = method(tau=0.9)
    train_stream(m, model, ["TextVQA"], steps=2)  # makes the default adapter differ from its init
    train_stream(m, model, ["ImageNet"])
    src, new = model.adapter_state("default"), model.adapter_state("group_2")
    assert len(new) == len(src) and any("lora_B" in k for k in src) and any("multi_modal_projector" in k for k in src)
    for k, v in src.items():
        assert torch.equal(new[k.replace(".default.", ".group_2.")], v)
    assert any(v.abs().sum() > 0 for k, v in src.items() if "lora_B" in k)  # a real copy, not two inits
    # Someone left the other adapter trainable: before_stage puts it right.
    for n, p in model.peft.named_parameters():
        if ".default." in n:
            p.requires_grad_(True)
    train_stream(m, model, ["Grounding"])  # expands from the latest group: group_2
    for k, v in model.adapter_state("group_2").items():
        assert torch.equal(model.adapter_state("group_3")[k.replace(".group_2.", ".group_3.")], v)
    names = [n for n, _ in model.trainable_named_parameters()]
    assert len(names) == len(src) and all(".group_3." in n for n in names)
    train_stream(m, model, ["GQA"])  # back to group_1
    names = [n for n, _ in model.trainable_named_parameters()]
    assert len(names) == len(src) and all(".default." in n for n in names)
    assert model.active_adapter == "default"


def test_select_adapter_routes_each_instance_and_round_trips_its_state(model, tmp_path):
    m = method(tau=0.9)
    m.setup(model, RunContext(run_dir=tmp_path, task_names=COIN_TASKS))
    train_stream(m, model, COIN_TASKS)
    samples = [Sample(task=t, id=t, image=None, turns=[(prompt(t), "a")]) for t in COIN_TASKS]
    samples += [Sample(task="X", id="free", image=None, turns=[("Describe the image.", "a")]),
                Sample(task="X", id="none", image=None, turns=[("", "a")])]
    routed = m.select_adapter(samples)
    assert routed[:8] == [adapter_of(m, t) for t in COIN_TASKS]
    assert routed[8:] == ["group_2", "group_2"]  # unmatched and empty -> the latest group (OCRVQA's)
    counts = m.summary()["routing_counts"]["OCRVQA"]
    assert (counts["samples"], counts["fallbacks"], counts["empty"]) == (10, 2, 1)
    written = json.loads((tmp_path / "codebook.json").read_text())
    assert written["groups"]["group_2"] == [ORIGINAL_INSTRUCTIONS["TextVQA"]] and written["adapters"]["group_1"] == "default"

    state = json.loads(json.dumps(m.state_dict()))  # what method_state.json holds
    back = method(tau=0.9)
    back.load_state_dict(state)
    assert back.select_adapter(samples) == routed
    assert back.routing.groups == m.routing.groups and back.routing.router.task_groups == m.routing.router.task_groups
    assert back.summary()["tasks"] == m.summary()["tasks"]
    routed_free = back.route_prompt(prompt("ImageNet"))
    assert (routed_free["group"], routed_free["adapter"], routed_free["similarity"]) == ("group_3", "group_3", 1.0)
    assert routed_free["instruction"] == ORIGINAL_INSTRUCTIONS["ImageNet"]
    assert back.routing.router.layouts == m.routing.router.layouts and ORIGINAL_INSTRUCTIONS["TextVQA"] in \
        back.routing.router.layouts["group_3"]  # ImageNet's prompts always end with the short-answer line


def test_routing_reads_no_task_label(model):
    m = method(tau=0.9)
    train_stream(m, model, COIN_TASKS)
    samples = [s for t in COIN_TASKS for s in task(t).test]
    routed = m.select_adapter(samples)
    assert routed == [adapter_of(m, s.task) for s in samples]
    scrambled = [Sample(task=COIN_TASKS[(COIN_TASKS.index(s.task) + 3) % 8], id=s.id, image=None, turns=s.turns)
                 for s in samples]  # other labels, no extracted instruction
    assert m.select_adapter(scrambled) == routed


def test_per_task_and_per_file_routing_through_the_method(model):
    m = method(tau=0.9, routing="per_task")
    train_stream(m, model, ["TextVQA", "ImageNet"])
    wrong = Sample(task="TextVQA", id="a", image=None, turns=[(prompt("ImageNet"), "a")],
                   instruction=ORIGINAL_INSTRUCTIONS["ImageNet"])
    assert m.select_adapter([wrong]) == ["default"]  # the oracle ignores the instruction
    m.cfg.routing.mode = "per_file"
    m.load_state_dict(m.state_dict())  # rebuilds the router with the new mode
    assert m.select_adapter(task("ImageNet").test) == ["group_2", "group_2"]


# -- end to end -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def e2e_run(tmp_path_factory, cache_dir):
    from mmcit.recipe import run

    out = tmp_path_factory.mktemp("lcia-run")
    cfg = load_config(None, [
        "name=lcia-e2e", f"output_dir={out}", f"data.cache_dir={cache_dir}", "data.tasks=[TextVQA,ImageNet,GQA]",
        "data.sample_factor=0.05", "data.test_limit=3", "train.max_steps=3", "train.batch_size=4", "model.pretrain.steps=5",
        "model.text_layers=1", "model.vision_layers=1", "eval.max_new_tokens=4", "threads=1",
        "method={type: lcia, routing: {tau: 0.9, embedder: tfidf}}",
    ])
    return out, run(cfg, progress=False, log=lambda msg: None)


def test_end_to_end_run_writes_the_codebook_and_the_groups(e2e_run):
    run_dir, results = e2e_run
    codebook = json.loads((run_dir / "codebook.json").read_text())
    assert codebook["groups"] == {"group_1": [ORIGINAL_INSTRUCTIONS["TextVQA"]],
                                  "group_2": [ORIGINAL_INSTRUCTIONS["ImageNet"]]}
    summary = results["method_summary"]
    assert {g: v["tasks"] for g, v in summary["groups"].items()} == {"group_1": ["TextVQA", "GQA"],
                                                                     "group_2": ["ImageNet"]}
    assert [r["decision"] for r in summary["tasks"]] == ["first", "expanded", "reused"]
    final = summary["routing_counts"]["GQA"]
    assert final["fallbacks"] == 0 and final["per_task"] == {"TextVQA": {"group_1": 3}, "ImageNet": {"group_2": 3},
                                                             "GQA": {"group_1": 3}}
    assert summary["ema"]["per_task"][0]["stage"] == "GQA" and summary["ema"]["per_task"][0]["updates"] == 3
    assert len(results["accuracy_matrix"]) == 3
    state = json.loads((run_dir / "checkpoints" / "03_GQA" / "method_state.json").read_text())
    assert state["adapters"] == ["default", "group_2"] and state["method"]["adapters"]["group_2"] == "group_2"


@pytest.mark.parametrize("variant,tau", [("original", 0.9), ("diverse", 0.3)])
def test_a_streams_samples_route_the_same_with_scrambled_task_labels(e2e_run, variant, tau):
    import random

    from mmcit.data.stream import load_data
    from mmcit.routing import InstructionRouter, RouterSettings

    run_dir, _ = e2e_run  # its synthetic benchmark is generated already: reading all eight tasks is cheap
    cfg = load_config(run_dir / "config.yaml", [f"data.tasks=[{', '.join(COIN_TASKS)}]", f"data.variant={variant}"])
    data = load_data(cfg.data, Path(cfg.data.cache_dir), log=lambda msg: None)
    router = InstructionRouter(RouterSettings(tau=tau))
    for t in data.tasks:  # grouped as LCIA's before_stage does
        best, _, _ = router.match(t.instructions)
        group = best or f"group_{len(router.groups) + 1}"
        router.assign(group, t.instructions, [t.name], [[s.prompt for s in t.train]])
    samples = [s for t in data.tasks for s in t.test + t.train]
    routed = router.route(samples)
    assert routed == [router.router.decide([s.instruction]).group for s in samples]  # as with the label's rule
    labels = [s.task for s in samples]
    random.Random(0).shuffle(labels)
    scrambled = [Sample(task=label, id=s.id, image=s.image, turns=s.turns) for s, label in zip(samples, labels)]
    router.router.codebook.add("group_1", [])  # a codebook change: no decision comes from the cache
    assert router.route(scrambled) == routed


def test_predict_rebuilds_the_run_and_routes_by_the_prompt(e2e_run, capsys):
    from safetensors.torch import load_file

    from data_recipes import coin
    from mmcit.data.stream import load_data
    from mmcit.cli import main
    from mmcit.evaluation.predict import load_predictor

    run_dir, _ = e2e_run
    predictor = load_predictor(run_dir, log=lambda msg: None)
    saved = load_file(str(predictor.checkpoint / "adapters.safetensors"))
    for name in ("default", "group_2"):
        assert all(torch.equal(saved[k], v) for k, v in predictor.model.adapter_state(name).items())
    cfg = load_config(run_dir / "config.yaml")
    data = load_data(cfg.data, Path(cfg.data.cache_dir), log=lambda msg: None)
    imagenet = next(t for t in data.tasks if t.name == "ImageNet").test[0]
    out = predictor.answer(imagenet.image, imagenet.prompt)  # no task: routed by the prompt alone
    assert (out["group"], out["adapter"], out["similarity"]) == ("group_2", "group_2", 1.0)
    assert isinstance(out["answer"], str) and out["instruction"] == coin.extract_instruction("ImageNet", imagenet.prompt)
    one_line = predictor.answer(imagenet.image, imagenet.prompt.replace("\n", " "))
    assert one_line["group"] == "group_2" and one_line["instruction"] == out["instruction"]
    free = predictor.answer(imagenet.image, "What is written here?\nAnswer the question using a single word or phrase.")
    assert free["group"] == "group_1" and free["adapter"] == "default"

    assert main(["predict", str(run_dir), "--image", str(imagenet.image), "--prompt", "Describe it.", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["group"] == "group_1" and printed["similarity"] == 0.0  # no match: the latest group (GQA's)
    assert main(["predict", str(run_dir), "--image", str(imagenet.image), "--prompt", imagenet.prompt,
                 "--task", "GQA", "--json"]) == 0  # --task is accepted, ignored, and said to be
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip().splitlines()[-1])["group"] == "group_2"
    assert "--task is deprecated and ignored" in captured.err
