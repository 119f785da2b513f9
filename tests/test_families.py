"""The hf_vlm backend on tiny random checkpoints of each family, written to disk once per module
(tests/family_checkpoints.py).

Default run: Qwen2.5-VL's full matrix (a 2-task lcia stream interrupted inside task 2 and resumed
to the uninterrupted result, ``mmcit predict`` on it, the bf16 + gradient-checkpointing path, QLoRA)
and, for every family, a lighter matrix through the same code: load through the backend, LoRA on
the language model only, a training stage on image, text-only and multi-turn samples with no
gradient in the vision tower, batches equal to the processor's own, left-padded generation routed
per instance over two adapters, adapters saved and reloaded identical. The full matrix for every other
family (its stream in bf16 with gradient checkpointing, interrupted and resumed, then predict) is
marked slow.
"""
import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import mmcit.recipe
from mmcit.cli import main
from mmcit.config import ConfigError, load_config
from mmcit.data.processor_encoder import RULES
from mmcit.data.sample import Sample
from mmcit.data.stream import load_data
from mmcit.ema.groups import PROJECTOR_MARKERS, layer_group
from mmcit.evaluation.generate import generate_answers
from mmcit.methods.base import MethodConfig, build_method
from mmcit.models.factory import build_model
from mmcit.models.families import FAMILIES
from mmcit.models.tower_cache import cacheable
from mmcit.recipe import run
from mmcit.training.checkpoint import read_state, restore_adapters, save_checkpoint, step_checkpoints
from mmcit.training.config import TrainConfig
from mmcit.training.loop import train_stage
from tests.family_checkpoints import write_family

STREAM = ["data.tasks=[TextVQA, ImageNet]", "data.sample_factor=0.05", "data.test_limit=2", "train.max_steps=3",
          "train.batch_size=4", "eval.max_new_tokens=2", "threads=1"]
FULL = "qwen2_5_vl"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {name: write_family(name, root / name) for name in FAMILIES}


@pytest.fixture(scope="module")
def stream(cache_dir):
    """The stream's data, read once for the module's direct model builds."""
    cfg = load_config(None, [*STREAM, f"data.cache_dir={cache_dir}"])
    return load_data(cfg.data, cache_dir, quiet)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    out = []
    for k, size in enumerate([(48, 48), (80, 40)]):
        path = root / f"{k}.png"
        Image.new("RGB", size, (200, 30 + 100 * k, 30)).save(path)
        out.append(path)
    return out


def family_args(ckpt, name, *extra):
    return ["model.type=hf_vlm", f"model.path={ckpt[name]}", "model.dtype=float32",
            "model.gradient_checkpointing=false", "model.lora_r=4", *extra]


def cfg_for(tmp_path, cache_dir, args, *extra):
    return load_config(None, [*STREAM, f"output_dir={tmp_path / 'run'}", f"data.cache_dir={cache_dir}", *args, *extra])


def quiet(_):
    pass


def built(tmp_path, cache_dir, stream, ckpt, name, *extra):
    cfg = cfg_for(tmp_path, cache_dir, family_args(ckpt, name, *extra))
    return build_model(cfg, stream, cache_dir, quiet, progress=False)


def mixed_samples(images) -> list[Sample]:
    """An image sample, a multi-turn one on another image size, a text-only one."""
    return [Sample(task="t", id="a", image=images[0], turns=[("What is the colour?", "red")]),
            Sample(task="t", id="b", image=images[1], turns=[("What is the colour?", "green"), ("Shape?", "circle")]),
            Sample(task="t", id="c", image=None, turns=[("Two plus two?", "four")])]


def tower_names(model) -> list[str]:
    """Parameter names inside the vision tower but outside the projector."""
    vision, projector = model.parts.vision, model.parts.projector
    return [n for n, _ in model.peft.named_parameters() if f".{vision}." in f".{n}" and f".{projector}." not in n]


# -- every family ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_trains_batches_generates_and_reloads(tmp_path, cache_dir, stream, ckpt, images, name):
    family = FAMILIES[name]
    model = built(tmp_path, cache_dir, stream, ckpt, name)
    assert set(family.batch.values()) <= set(RULES) and family.projector_key in PROJECTOR_MARKERS
    lora = [n for n, _ in model.trainable_named_parameters() if "lora_" in n]
    projector = model.projector_parameter_names()
    assert lora and all(f".{family.language_model}." in n for n in lora)
    assert projector and all(f".{family.projector}.modules_to_save.default." in n for n in projector)
    assert {n for n, _ in model.trainable_named_parameters()} == set(lora) | projector
    assert len({layer_group(n) for n in projector}) == 1  # the projector is one EMA group at "layer" granularity
    assert cacheable(model.peft.get_base_model()) == family.tower_cache
    tower = tower_names(model)
    assert tower and not [n for n in tower if "lora_" in n]

    # Labels on the answers only (each with its end-of-turn marker), never on image tokens.
    samples = mixed_samples(images)
    enc = model.encoder()
    feats = [enc.encode_train(s) for s in samples]
    answers = model.tokenizer.decode([t for t in feats[1]["labels"] if t != -100])
    assert "green" in answers and "circle" in answers and "colour" not in answers
    image_id = model.peft.get_base_model().config.image_token_id
    assert all(t != image_id for f in feats for t in f["labels"]) and image_id in feats[0]["input_ids"]

    # The collated prompts equal the processor's own batch: same ids, same logits.
    prompts = [enc.encode_prompt(s) for s in samples]
    ours = model.collate(prompts, "left")
    contexts = [model.template.pieces(s.turns[:1], "", "", image=s.image is not None)[0][0] for s in samples]
    theirs = model.processor(text=contexts, images=[[Image.open(s.image).convert("RGB")] if s.image else []
                                                    for s in samples],
                             return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    assert torch.equal(ours["input_ids"], theirs["input_ids"])
    assert set(ours) == set(theirs) - ({"batch_num_images"} - set(ours))
    model.eval()
    with torch.no_grad():
        a, b = model(**ours).logits, model(**dict(theirs)).logits
    torch.testing.assert_close(a[ours["attention_mask"].bool()], b[ours["attention_mask"].bool()])

    # A training stage: finite loss, gradients on the adapter, none in the tower.
    method = build_method(MethodConfig(type="lora_ft"))
    stats = train_stage(model, method, samples, TrainConfig(batch_size=3, max_steps=1, lr=1e-3), seed=0,
                        progress=False)
    assert stats.first_loss == stats.first_loss and stats.steps == 1
    params = dict(model.peft.named_parameters())
    assert all(params[n].grad is None and not params[n].requires_grad for n in tower)

    # Two adapters, answers routed per instance and batched by adapter, left-padded.
    model.add_adapter("second", copy_from="default")
    out = generate_answers(model, samples, ["default", "second", "default"], batch_size=2, max_new_tokens=2,
                           progress=False)
    assert len(out) == 3 and all(isinstance(t, str) for t in out)
    folder = save_checkpoint(tmp_path / "ck", 0, "t", model, method)
    fresh = built(tmp_path, cache_dir, stream, ckpt, name)
    restore_adapters(fresh, folder, read_state(folder))
    for adapter in model.adapters:
        saved, loaded = model.adapter_state(adapter), fresh.adapter_state(adapter)
        assert saved.keys() == loaded.keys() and all(torch.equal(saved[k], loaded[k]) for k in saved)


# -- Qwen2.5-VL: the full matrix --------------------------------------------------------------------------
class _Interrupt(BaseException):
    """Stands in for a kill (BaseException: nothing in the runner may swallow it)."""


def stream_resumed_and_predicted(tmp_path, cache_dir, args, images, monkeypatch, capsys) -> dict:
    """A 2-task lcia run stopped after task 2's step checkpoint at step 2 and resumed must end with
    the uninterrupted run's accuracies and adapters; ``mmcit predict`` then answers from it."""
    args = [*args, "method={type: lcia}", "train.checkpoint_every=2"]
    ref = run(cfg_for(tmp_path / "ref", cache_dir, args), progress=False, log=quiet)
    assert [len(r) for r in ref["accuracy_matrix"]] == [1, 2]
    real = mmcit.recipe.save_step_checkpoint

    def save_then_stop(run_dir, index, stage, model, method, state, extra=None):
        folder = real(run_dir, index, stage, model, method, state, extra)
        if index == 1 and state.step == 2:
            raise _Interrupt
        return folder

    cfg = cfg_for(tmp_path, cache_dir, args)
    monkeypatch.setattr(mmcit.recipe, "save_step_checkpoint", save_then_stop)
    with pytest.raises(_Interrupt):
        run(cfg, progress=False, log=quiet)
    monkeypatch.undo()
    run_dir = tmp_path / "run"
    assert [(i, s) for i, s, _ in step_checkpoints(run_dir)] == [(1, 2)]
    logs: list[str] = []
    res = run(cfg, progress=False, log=logs.append, resume=True)
    assert any("resuming ImageNet at step 2/3" in m for m in logs)
    assert res["accuracy_matrix"] == ref["accuracy_matrix"]
    a = load_file(tmp_path / "ref" / "run" / "checkpoints" / "02_ImageNet" / "adapters.safetensors")
    b = load_file(run_dir / "checkpoints" / "02_ImageNet" / "adapters.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    assert main(["predict", str(run_dir), "--image", str(images[1]), "--prompt",
                 "What is written?\nAnswer the question using a single word or phrase.", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert isinstance(answer["answer"], str) and answer["adapter"] in {
        g["adapter"] for g in res["method_summary"]["groups"].values()}
    return a


def test_qwen_stream_resumes_inside_a_task_and_predicts(tmp_path, cache_dir, ckpt, images, monkeypatch, capsys):
    adapters = stream_resumed_and_predicted(tmp_path, cache_dir, family_args(ckpt, FULL), images, monkeypatch, capsys)
    assert any(".visual.merger.modules_to_save." in k for k in adapters)


def test_qwen_bf16_with_gradient_checkpointing_trains_float32_adapters(tmp_path, cache_dir, stream, ckpt, images):
    model = built(tmp_path, cache_dir, stream, ckpt, FULL, "model.dtype=bfloat16", "model.gradient_checkpointing=true")
    assert model.autocast_dtype == torch.bfloat16
    assert {p.dtype for _, p in model.trainable_named_parameters()} == {torch.float32}
    base = model.peft.get_base_model()
    assert base.is_gradient_checkpointing and base.model.visual.blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    samples = mixed_samples(images)
    before = {n: p.detach().clone() for n, p in model.trainable_named_parameters()}
    stats = train_stage(model, build_method(MethodConfig(type="lora_ft")), samples,
                        TrainConfig(batch_size=3, max_steps=2, lr=1e-2), seed=0, progress=False)
    assert 0 < stats.first_loss < 100 and stats.last_loss == stats.last_loss
    moved = [n for n, p in model.trainable_named_parameters() if not torch.equal(p, before[n])]
    assert any("lora_B" in n for n in moved) and any(".merger." in n for n in moved)
    out = generate_answers(model, samples, [None] * 3, batch_size=3, max_new_tokens=2, progress=False)
    assert len(out) == 3


def test_qwen_qlora_quantizes_the_language_model_only(tmp_path, cache_dir, stream, ckpt, images):
    from bitsandbytes.nn import Linear4bit

    model = built(tmp_path, cache_dir, stream, ckpt, FULL, "model.quantization=4bit")
    quantized = [n for n, m in model.peft.named_modules() if isinstance(m, Linear4bit)]
    assert quantized and all(".language_model." in n for n in quantized)
    batch = model.collate([model.encoder().encode_train(s) for s in mixed_samples(images)], "right")
    loss = model(**batch).loss
    loss.backward()
    grads = [p.grad for n, p in model.trainable_named_parameters() if "lora_A" in n]
    assert torch.isfinite(loss) and grads and all(g is not None for g in grads)


def test_vision_lora_and_processor_options(tmp_path, cache_dir, stream, ckpt, images):
    model = built(tmp_path, cache_dir, stream, ckpt, FULL, "model.vision_lora=[qkv]",
                  "model.processor_kwargs={min_pixels: 784, max_pixels: 784}")
    lora = [n for n, _ in model.trainable_named_parameters() if "lora_A" in n]
    assert any(".visual.blocks.0.attn.qkv." in n for n in lora) and not any(".merger." in n for n in lora)
    assert not cacheable(model.peft.get_base_model())
    feats = model.encoder().encode_prompt(mixed_samples(images)[0])
    image_id = model.peft.get_base_model().config.image_token_id
    assert feats["input_ids"].count(image_id) == 1  # max_pixels 28 x 28: one merged token per image


def test_unsupported_family_is_one_line_before_any_weights_load(tmp_path, ckpt):
    folder = tmp_path / "blip"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "blip-2"}))
    with pytest.raises(ConfigError, match=r"holds a 'blip-2' model; hf_vlm supports gemma3, idefics3, internvl, "
                                          r"llava, llava_onevision, qwen2_5_vl, qwen2_vl, smolvlm$"):
        load_config(None, ["model.type=hf_vlm", f"model.path={folder}"])
    with pytest.raises(ConfigError, match="model.path is required for hf_vlm"):
        load_config(None, ["model.type=hf_vlm"])
    with pytest.raises(ConfigError, match="processor's own template"):
        load_config(None, family_args(ckpt, FULL, "model.chat_template=vicuna_v1"))


# -- the full matrix for the other families (slow) ---------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(FAMILIES) - {FULL}))
def test_bf16_stream_resumes_and_predicts_per_family(tmp_path, cache_dir, ckpt, images, name, monkeypatch, capsys):
    """Each other family's 2-task lcia stream in bf16 with gradient checkpointing, interrupted inside
    task 2 and resumed to the uninterrupted result, then ``mmcit predict``."""
    args = family_args(ckpt, name, "model.dtype=bfloat16", "model.gradient_checkpointing=true")
    adapters = stream_resumed_and_predicted(tmp_path, cache_dir, args, images, monkeypatch, capsys)
    assert {t.dtype for t in adapters.values()} == {torch.float32}
    assert any(f".{FAMILIES[name].projector}.modules_to_save." in k for k in adapters)
