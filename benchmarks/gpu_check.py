"""One-go GPU check at LLaVA-1.5-7B and Qwen2.5-VL-7B shapes (random weights), through mmcit's own code path.

    python benchmarks/gpu_check.py                 # on one H100/H200: both sections (sized for 5 minutes
                                                   # together; the Qwen2.5-VL one is not yet timed on a GPU)
    python benchmarks/gpu_check.py --only qwen2_5_vl   # one section
    python benchmarks/gpu_check.py --toy           # the same steps at toy sizes, on CPU

Section ``llava``: LlavaForConditionalGeneration with CLIP ViT-L/14-336 and Llama-7B shapes (vocab
32064, 576 image tokens) in bf16, wrapped in mmcit's MMModel (LoRA r=128 on q,k,v,o,gate,up,down,
the projector trainable). Section ``qwen2_5_vl``: Qwen2_5_VLForConditionalGeneration at
Qwen2.5-VL-7B-Instruct's shapes (32-block ViT with window attention, Qwen2.5-7B, vocab 152064) with
its processor, through the hf_vlm backend's parts (LoRA on the language model, the merger trainable,
samples encoded and batched by the processor: 672 px images, 576 image tokens). Each section then:

1. trains one task through ``train_stage`` with the adaptive EMA on, global batch 16 of 704-token
   samples, gradient checkpointing; then adds a second adapter (copied from the first) and trains
   it a few steps too;
2. times the same number of optimizer steps with a bare loop (forward, backward, clip, AdamW step,
   nothing of mmcit's; once running the frozen tower every step as plain transformers does, once on
   the tower's tokens computed once, as ``train_stage`` does where the tower cache is exact: LLaVA
   only) and with ``train_stage`` + ``lora_ft``
   (mmcit's hooks, no EMA), in interleaved runs: a step's time is the median interval between the
   ends of consecutive optimizer steps, the first left out; the hooks' overhead is against the
   bare loop that does what ``train_stage`` does (cached tokens for LLaVA, the tower every step for
   Qwen2.5-VL);
3. LLaVA only: times the training step's speed options on a CoIN-like mix of sample lengths
   (``benchmarks/bench_train_step.py``: the default step, ``train.packing``, ``train.loss`` answer and
   fused, packing + fused; tokens/s, interleaved);
4. times ``AdaptiveEMA.update()``: 20 back-to-back calls, and each call timed alone (synchronised
   before and after, so the host's preparation counts), fused and plain kernel, as a share of one
   training step and against the memory-traffic floor at this card's measured copy bandwidth;
5. saves both adapters as a checkpoint and reloads them into a fresh wrapper (tensors must match);
6. evaluation, 16 new tokens after a ~700-token prompt. LLaVA: side by side
   (``benchmarks/bench_eval.py``): mmcit's evaluation with the samples routed to two adapters
   (default, ``eval.merge_adapters``, merge + ``eval.image_cache``), a plain transformers + peft
   batched loop (batch 32), and the reference batch-1 loop, all from the image files, tower
   included; then (it compiles, so it may take long) ``eval.static_cache`` against the plain batched
   loop (``--no-static`` leaves it out). Qwen2.5-VL: a batch-1 loop against batches of 32.

Prints the figures; no assertion other than the reload check. Targets from the issue: evaluation at
least 1.0x the plain batched loop and 20x the batch-1 loop at batch 32; training at least 1.2x
today's tokens/s with a CoIN-like length mix; hooks at most 2% of training throughput; the EMA
update timed alone at most 0.25% of a step and within 1.5x of the memory-traffic floor.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmcit.training.config import TrainConfig  # noqa: E402
from mmcit.data.sample import Sample  # noqa: E402
from mmcit.methods import build_method  # noqa: E402
from mmcit.methods.adaptive_ema import AdaptiveEMAConfig  # noqa: E402
from mmcit.methods.base import MethodConfig, RunContext, Stage  # noqa: E402
from mmcit.models.wrapper import LoraSettings, MMModel  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_ema  # noqa: E402
import bench_eval  # noqa: E402
import bench_train_step  # noqa: E402

WORDS = ("red green blue cat dog house tree what where which colour shape left right answer question "
         "image picture object small large count how many is there a the of on in").split()


def sizes(toy: bool) -> dict:
    if toy:
        return dict(image=32, patch=8, v_hidden=32, v_layers=2, v_heads=2, v_inter=64, hidden=64, layers=2, heads=2,
                    inter=128, vocab=512, r=8, alpha=16, batch=4, eval_batch=4, text_tokens=24, steps=4, new_tokens=4,
                    eval_samples=8, one_samples=2, length_scale=0.2)
    return dict(image=336, patch=14, v_hidden=1024, v_layers=24, v_heads=16, v_inter=4096, hidden=4096, layers=32,
                heads=32, inter=11008, vocab=32064, r=128, alpha=256, batch=16, eval_batch=32, text_tokens=128,
                steps=6, new_tokens=16, eval_samples=64, one_samples=8, length_scale=1.0)


def qwen_sizes(toy: bool) -> dict:
    """The Qwen2.5-VL section's run sizes (model shapes: tests/family_checkpoints.py)."""
    if toy:
        return dict(image=56, r=8, alpha=16, batch=4, eval_batch=4, text_tokens=24, steps=4, new_tokens=4)
    return dict(image=672, r=128, alpha=256, batch=16, eval_batch=32, text_tokens=128, steps=5, new_tokens=16)


def build_qwen(s: dict, toy: bool, device: str, dtype: torch.dtype) -> MMModel:
    """Qwen2.5-VL (7B shapes, or tiny) wrapped as the hf_vlm backend wraps a loaded checkpoint."""
    from mmcit.data.processor_encoder import ProcessorTemplate
    from mmcit.models.families import FAMILIES
    from mmcit.models.hf_vlm import model_parts, stop_ids
    from tests.family_checkpoints import QWEN2_5_VL_7B, TINY, build_family

    base, processor = build_family("qwen2_5_vl", TINY if toy else QWEN2_5_VL_7B, device=device, dtype=dtype)
    # Images of s["image"] px: one token per 28 x 28 pixels, 576 at 672 px (LLaVA-1.5's count).
    processor.image_processor.size = {"shortest_edge": 28 * 28, "longest_edge": s["image"] ** 2}
    tok = processor.tokenizer
    eos = stop_ids(base, tok)
    torch.manual_seed(0)
    return MMModel.from_base(base, processor, LoraSettings(r=s["r"], alpha=s["alpha"], dropout=0.05),
                             template=ProcessorTemplate(processor, tok.convert_ids_to_tokens(eos)),
                             gradient_checkpointing=True, parts=model_parts(FAMILIES["qwen2_5_vl"], [], eos))


def build(s: dict, device: str, dtype: torch.dtype):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    from mmcit.models.tiny_llava.build import build_processor
    from mmcit.models.tiny_llava.tokenizer import train_tokenizer

    tok = train_tokenizer([" ".join(WORDS)] * 20 + ["USER: ASSISTANT:"], vocab_size=300)
    vision = CLIPVisionConfig(image_size=s["image"], patch_size=s["patch"], hidden_size=s["v_hidden"],
                              intermediate_size=s["v_inter"], num_hidden_layers=s["v_layers"],
                              num_attention_heads=s["v_heads"], projection_dim=768)
    text = LlamaConfig(vocab_size=s["vocab"], hidden_size=s["hidden"], intermediate_size=s["inter"],
                       num_hidden_layers=s["layers"], num_attention_heads=s["heads"], num_key_value_heads=s["heads"],
                       max_position_embeddings=4096, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                       eos_token_id=tok.eos_token_id)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<image>"),
                      image_seq_length=(s["image"] // s["patch"]) ** 2, vision_feature_layer=-2,
                      vision_feature_select_strategy="default", projector_hidden_act="gelu")
    cfg._attn_implementation = "sdpa"
    with torch.device(device):
        base = LlavaForConditionalGeneration(cfg).to(dtype)
    processor = build_processor(tok, s["image"], s["patch"])
    torch.manual_seed(0)
    model = MMModel.from_base(base, processor, LoraSettings(r=s["r"], alpha=s["alpha"], dropout=0.05),
                              gradient_checkpointing=True)
    return model


def samples(s: dict, folder: Path, n: int, tok) -> list[Sample]:
    from PIL import Image

    rng = random.Random(0)
    out = []
    for i in range(n):
        path = folder / f"{i}.png"
        Image.new("RGB", (s["image"], s["image"]), tuple(rng.randrange(256) for _ in range(3))).save(path)
        words: list[str] = []
        while len(tok(" ".join(words), add_special_tokens=False)["input_ids"]) < s["text_tokens"] - 8:
            words.append(rng.choice(WORDS))
        out.append(Sample(task="bench", id=str(i), image=path, turns=[(" ".join(words), rng.choice(WORDS))],
                          instruction="Answer the question using a single word or phrase."))
    return out


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bare_loop(model: MMModel, feats: list[dict], cfg: TrainConfig, steps: int, device: str,
              tokens: torch.Tensor | None = None) -> list[float]:
    """The same optimizer steps with nothing of mmcit's: the baseline for the hooks' overhead.

    With ``tokens`` (the frozen tower's output per sample, computed once) each step projects them as
    ``train_stage`` does, so the only difference left from mmcit's loop is its hooks; without, each
    step runs the tower through the model's own forward (plain transformers)."""
    from mmcit.training.optim import make_optimizer
    from mmcit.models.tower_cache import with_image_tokens

    opt = make_optimizer(model, cfg)
    params = [p for _, p in model.trainable_named_parameters()]
    base = model.peft.get_base_model()
    model.train()
    sync(device)
    stamps = [time.perf_counter()]
    for k in range(steps):
        start = (k * cfg.batch_size) % len(feats)
        batch = model.collate(feats[start:][: cfg.batch_size], "right")
        if tokens is not None:
            with model.autocast():
                batch = with_image_tokens(base, batch, tokens[start:][: cfg.batch_size])
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()  # what train_stage's progress bar reads each step too
        sync(device)
        stamps.append(time.perf_counter())
    return [b - a for a, b in zip(stamps, stamps[1:])]


def mmcit_loop(model: MMModel, data: list[Sample], cfg: TrainConfig, steps: int, method_type: str,
               device: str) -> list[float]:
    """``train_stage`` with a method; the seconds between the ends of consecutive optimizer steps
    (the method's own hook included), read by a synchronising hook after each step."""
    from mmcit.training.loop import train_stage

    method = build_method(AdaptiveEMAConfig() if method_type == "adaptive_ema" else MethodConfig(type=method_type))
    method.setup(model, RunContext(run_dir=Path(tempfile.mkdtemp()), task_names=["bench"]))
    stage = Stage(name="bench", train=[], evaluate=[], index=0)
    method.before_stage(stage, model)
    stamps: list[float] = []
    hook = method.after_optimizer_step

    def timed(m):
        hook(m)
        sync(device)
        stamps.append(time.perf_counter())

    method.after_optimizer_step = timed
    train_stage(model, method, data, replace(cfg, max_steps=steps), seed=0, progress=False)
    return [b - a for a, b in zip(stamps, stamps[1:])]


def per_step(times: list[float]) -> float:
    """Median seconds per step, leaving out the first interval (warm-up)."""
    return statistics.median(times[1:])


def measure(model: MMModel, s: dict, args: argparse.Namespace, device: str, cached: bool) -> None:
    """Steps 1-5 of the module docstring for one built model; ``cached``: the tower's output can be
    cached (what ``train_stage`` does then, and the bare loop it is compared with)."""
    folder = Path(tempfile.mkdtemp())
    data = samples(s, folder, max(2 * s["eval_batch"], s["batch"] * 2), model.tokenizer)
    encoder = model.encoder()
    feats = [encoder.encode_train(x) for x in data]
    tokens = sum(len(f["input_ids"]) for f in feats) / len(feats)
    image_id = getattr(model.peft.get_base_model().config, "image_token_id", None)
    print(f"samples of {tokens:.0f} tokens (image {feats[0]['input_ids'].count(image_id)})")
    cfg = TrainConfig(batch_size=s["batch"], lr=2e-4, projector_lr=2e-5, warmup_ratio=0.03)

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    image_tokens = None
    if cached:
        from mmcit.models.tower_cache import tower_tokens

        with model.autocast():
            image_tokens = tower_tokens(model.peft.get_base_model(), torch.stack([f["pixel_values"] for f in feats]), 1)
    n = s["steps"]
    bare_name = "bare loop, cached tower tokens" if cached else "bare loop, tower each step"
    # Rounds of the bare loop and mmcit's, interleaved, so that drift shows as a spread.
    plan = ([("bare loop, tower each step", lambda: bare_loop(model, feats, cfg, n, device))] if cached else [])
    plan += [(bare_name, lambda: bare_loop(model, feats, cfg, n, device, image_tokens)),
             ("mmcit lora_ft", lambda: mmcit_loop(model, data, cfg, n, "lora_ft", device)),
             ("mmcit adaptive_ema", lambda: mmcit_loop(model, data, cfg, n, "adaptive_ema", device)),
             (bare_name, lambda: bare_loop(model, feats, cfg, n, device, image_tokens)),
             ("mmcit lora_ft", lambda: mmcit_loop(model, data, cfg, n, "lora_ft", device))]
    runs: dict[str, list[float]] = {}
    for name, fn in plan:
        runs.setdefault(name, []).append(per_step(fn()))
    for name, values in runs.items():
        print(f"  {name:32s} " + ", ".join(f"{v:.3f}" for v in values) + " s/step (median of each run)")
    bare = statistics.mean(runs[bare_name])
    hooks = statistics.mean(runs["mmcit lora_ft"])
    with_ema = statistics.mean(runs["mmcit adaptive_ema"])
    extra = ""
    if cached:
        plain = statistics.mean(runs["bare loop, tower each step"])
        extra = f" ({100 * (hooks / plain - 1):+.1f}% against the bare loop that runs the tower each step)"
    print(f"train step (batch {s['batch']}): mmcit lora_ft {hooks:.3f}s, hooks {100 * (hooks / bare - 1):+.1f}% "
          f"against the {bare_name}{extra}; adaptive_ema {with_ema:.3f}s ({100 * (with_ema / hooks - 1):+.1f}% "
          f"over lora_ft)")
    print(f"training throughput: {s['batch'] * tokens / hooks:.0f} tokens/s (mmcit loop)")

    if cached:  # LLaVA: the training speed options of docs/performance.md
        train_options(model, s, device)
    ema_figures(model, feats, s, device, hooks, args.ema_kernel)
    check_reload(model, data, cfg, s, device)
    if cached:
        eval_figures(model, s, args, device)
    else:
        evaluate(model, data, s, device)
    if device == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


def check_reload(model: MMModel, data: list[Sample], cfg: TrainConfig, s: dict, device: str) -> None:
    """A second adapter, copied from the first, trained a few steps; then save and reload both."""
    model.add_adapter("group_2", copy_from="default")
    mmcit_loop(model, data, cfg, s["steps"], "adaptive_ema", device)
    from mmcit.training.checkpoint import read_state, restore_adapters, save_checkpoint

    run_dir = Path(tempfile.mkdtemp())
    method = build_method(MethodConfig(type="lora_ft"))
    folder_ck = save_checkpoint(run_dir, 0, "bench", model, method)
    before = {a: model.adapter_state(a) for a in model.adapters}
    with torch.no_grad():
        for _, p in model.trainable_named_parameters():
            p.zero_()
    restore_adapters(model, folder_ck, read_state(folder_ck))
    same = all(torch.equal(before[a][k], v) for a in model.adapters for k, v in model.adapter_state(a).items())
    print(f"checkpoint of adapters {model.adapters}: reloaded {'identical' if same else 'DIFFERENT'}")
    if not same:
        raise SystemExit("adapter reload mismatch")


def evaluate(model: MMModel, data: list[Sample], s: dict, device: str) -> None:
    """Batched generation: ``new_tokens`` after each prompt, a batch-1 loop against batch ``eval_batch``."""
    model.eval()
    encoder = model.encoder()
    prompts = [encoder.encode_prompt(x) for x in data[: s["eval_batch"]]]
    pad = model.tokenizer.pad_token_id

    def generate(rows: list[dict]) -> None:
        batch = model.to_device(model.collate(rows, "left"))
        with torch.no_grad(), model.autocast():
            model.peft.generate(**batch, max_new_tokens=s["new_tokens"], min_new_tokens=s["new_tokens"],
                                do_sample=False, pad_token_id=pad)

    generate(prompts[:1])
    sync(device)
    n1 = min(8, len(prompts))
    t0 = time.perf_counter()
    for row in prompts[:n1]:
        generate([row])
    sync(device)
    one = n1 / (time.perf_counter() - t0)
    generate(prompts)
    sync(device)
    t0 = time.perf_counter()
    generate(prompts)
    sync(device)
    many = len(prompts) / (time.perf_counter() - t0)
    print(f"evaluation ({s['new_tokens']} new tokens): batch 1 {one:.2f} samples/s, batch {len(prompts)} "
          f"{many:.2f} samples/s ({many / one:.1f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--toy", action="store_true", help="toy sizes (CPU) to test the script itself")
    ap.add_argument("--no-static", action="store_true", help="leave out the static-cache evaluation (it compiles)")
    ap.add_argument("--only", choices=["llava", "qwen2_5_vl"], default=None, help="run one section (default: both)")
    ap.add_argument("--ema-kernel", default="auto", choices=["auto", "torch", "triton"],
                    help="AdaptiveEMA's kernel in the adaptive_ema training loop (default: auto)")
    args = ap.parse_args()
    if args.ema_kernel != "auto":
        from mmcit.methods.adaptive_ema import AdaptiveEMAMethod

        kwargs = AdaptiveEMAMethod.ema_kwargs
        AdaptiveEMAMethod.ema_kwargs = lambda self: {**kwargs(self), "kernel": args.ema_kernel}
    device = "cuda" if torch.cuda.is_available() and not args.toy else "cpu"
    dtype = torch.bfloat16  # on CPU too, so that --toy goes through the same mixed-precision paths
    t_start = time.perf_counter()
    for section in [args.only] if args.only else ["llava", "qwen2_5_vl"]:
        t0 = time.perf_counter()
        if section == "llava":
            s = sizes(args.toy)
            model = build(s, device, dtype)
        else:
            s = qwen_sizes(args.toy)
            model = build_qwen(s, args.toy, device, dtype)
        trainable, total = model.num_parameters()
        print(f"== {section}: device {torch.cuda.get_device_name(0) if device == 'cuda' else 'cpu'}; "
              f"{total / 1e6:.1f}M parameters, {trainable / 1e6:.1f}M trainable; built in {time.perf_counter() - t0:.0f}s")
        measure(model, s, args, device, cached=section == "llava")
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
        print(f"{section} took {time.perf_counter() - t0:.0f}s")
    print(f"total {time.perf_counter() - t_start:.0f}s")


def eval_figures(model: MMModel, s: dict, args: argparse.Namespace, device: str) -> None:
    """Evaluation side by side (bench_eval): mmcit's variants, the plain batched loop, batch 1."""
    model.eval()
    eval_samples = bench_eval.make_samples(Path(tempfile.mkdtemp()), s["eval_samples"], s["image"], s["text_tokens"])
    rates = bench_eval.compare(model, eval_samples, s["eval_batch"], s["new_tokens"], 1, s["one_samples"],
                               bench_eval.VARIANTS, sync=lambda: sync(device))
    print(f"evaluation ({s['new_tokens']} new tokens, {len(eval_samples)} samples routed to two adapters for mmcit, "
          f"images read and encoded by every loop, tower included):")
    bench_eval.report(rates, s["eval_batch"])
    if not args.no_static:
        t0 = time.perf_counter()
        rates = bench_eval.compare(model, eval_samples, s["eval_batch"], s["new_tokens"], 1, s["one_samples"],
                                   {"mmcit static_cache": {"static_cache": True},
                                    "mmcit merge + static + image_cache": {"merge_adapters": True,
                                                                           "static_cache": True, "image_cache": True}},
                                   sync=lambda: sync(device))
        print(f"evaluation with a static KV cache (compiled decoding on a GPU; {time.perf_counter() - t0:.0f}s "
              f"with compilation):")
        bench_eval.report(rates, s["eval_batch"])


def train_options(model: MMModel, s: dict, device: str) -> None:
    """Tokens/s of the training step's speed options on a CoIN-like length mix (bench_train_step)."""
    from mmcit.training.loop import StageInputs

    mix = bench_train_step.coin_like_samples(Path(tempfile.mkdtemp()), 2 * s["batch"], s["image"], s["length_scale"])
    inputs = StageInputs(model, mix, TrainConfig(max_length=4096))
    feats = [inputs[i] for i in range(len(mix))]
    rates = bench_train_step.step_rates(model, feats, inputs.via_tokens, s["batch"], 3, 1,
                                        bench_train_step.VARIANTS, sync=lambda: sync(device), warmup=1)
    lengths = sorted(len(f["input_ids"]) for f in feats)
    print(f"training step options, CoIN-like lengths {lengths[0]}-{lengths[-1]} tokens (median "
          f"{lengths[len(lengths) // 2]}), padding {100 * bench_train_step.padding_share(feats, s['batch']):.0f}% of "
          f"a padded batch:")
    bench_train_step.report(rates)
    model.peft.zero_grad(set_to_none=True)


def ema_figures(model: MMModel, feats: list[dict], s: dict, device: str, step_s: float, kernel: str) -> None:
    """AdaptiveEMA.update(): back to back, and each call timed alone, against a step and the floor."""
    from mmcit.ema import AdaptiveEMA

    loss = model(**model.collate(feats[: s["batch"]], "right")).loss
    loss.backward()  # gradients present, as right after optimizer.step()
    named = model.trainable_named_parameters()
    floor_ms = bench_ema.traffic_floor_bytes(named) / (bench_ema.copy_bandwidth_gbs(device) * 1e9) * 1e3
    done = set()
    for k in (kernel, "torch"):
        ema = AdaptiveEMA(named, kernel=k)
        if ema.kernel in done:  # "auto" on a CPU is the plain path again
            continue
        done.add(ema.kernel)
        for _ in range(3):  # the first call only copies; the fused kernels compile on their first blend
            ema.update()
        sync(device)
        reps = 20
        t0 = time.perf_counter()
        for _ in range(reps):
            ema.update()
        sync(device)
        back_to_back = (time.perf_counter() - t0) / reps
        alone = []
        for _ in range(reps):
            sync(device)
            t0 = time.perf_counter()
            ema.update()
            sync(device)
            alone.append(time.perf_counter() - t0)
        one = statistics.median(alone)
        print(f"AdaptiveEMA.update() [{ema.kernel}]: back to back {1e3 * back_to_back:.2f} ms = "
              f"{100 * back_to_back / step_s:.2f}% of a step; timed alone {1e3 * one:.2f} ms = "
              f"{100 * one / step_s:.3f}% of a step, {1e3 * one / floor_ms:.2f}x the memory-traffic floor "
              f"({floor_ms:.2f} ms at this device's copy bandwidth)")
        del ema
    model.peft.zero_grad(set_to_none=True)


if __name__ == "__main__":
    main()
