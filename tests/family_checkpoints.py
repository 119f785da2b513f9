"""Tiny random checkpoints of today's vision-language families, built from each family's own config
classes and written to disk the way a real download looks (config.json, safetensors weights,
tokenizer, image/video processor and chat template), for the ``hf_vlm`` backend's tests.

Widths and depths are tiny (LM hidden 64, 2 layers) and images small (28-64 px); the tokenizer is
a byte-level BPE trained here, with each family's special tokens and the attributes its processor
reads. The chat templates follow the layout of each family's published template (roles, image
placeholder, end-of-turn marker), shortened. ``build_family`` builds the same model and processor
in memory at any sizes (the GPU check uses it at 7B shapes).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

WORDS = ("USER ASSISTANT What is the colour ? Answer the question using a single word or phrase . red green "
         "blue yellow yes no cat sun tree house star circle square triangle left right top bottom how many "
         "which object shape word written image picture").split()

QWEN_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for c in message['content'] %}{% if c['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
ONEVISION_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for c in message['content'] | selectattr('type', 'equalto', 'image') %}<image>\n{% endfor %}"
    "{% for c in message['content'] | selectattr('type', 'equalto', 'text') %}{{ c['text'] }}{% endfor %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
IDEFICS3_TEMPLATE = (
    "<|begin_of_text|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}:{% else %}: {% endif %}"
    "{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% elif c['type'] == 'image' %}"
    "<image>{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}")
INTERNVL_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}{% else %}{% for c in message['content'] %}{% if c['type'] == 'image' %}"
    "<IMG_CONTEXT>\n{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
GEMMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'assistant' %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}<start_of_turn>{{ role }}\n"
    "{% if message['content'] is string %}{{ message['content'] | trim }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<start_of_image>"
    "{% elif c['type'] == 'text' %}{{ c['text'] | trim }}{% endif %}{% endfor %}{% endif %}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
LLAVA_TEMPLATE = (
    "{% for message in messages %}{{ message['role'].upper() + ': ' }}"
    "{% for c in message['content'] | selectattr('type', 'equalto', 'image') %}<image>\n{% endfor %}"
    "{% for c in message['content'] | selectattr('type', 'equalto', 'text') %}{{ c['text'] + ' ' }}{% endfor %}"
    "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}")

#: The families these helpers build (model_type names).
FAMILIES = ("qwen2_vl", "qwen2_5_vl", "llava_onevision", "idefics3", "smolvlm", "internvl", "gemma3", "llava")


@dataclass
class Sizes:
    """Model sizes: the language model's and the vision tower's widths and depths, the vocabulary."""

    hidden: int = 64
    layers: int = 2
    heads: int = 2
    kv_heads: int = 2
    inter: int = 128
    v_hidden: int = 32
    v_layers: int = 2
    v_heads: int = 2
    v_inter: int = 64
    vocab: int = 300  # BPE merges; the model's vocabulary is this plus the special tokens
    model_vocab: int | None = None  # the embedding's rows when larger than the tokenizer (real shapes)
    window: int = 56  # Qwen2.5-VL's vision attention window, in pixels
    full_attention_every: int = 0  # Qwen2.5-VL: every n-th vision block attends fully (0: only the last)


TINY = Sizes()
#: Qwen2.5-VL-7B-Instruct's shapes (Qwen2.5-7B language model, 32-block ViT with a merger).
QWEN2_5_VL_7B = Sizes(hidden=3584, layers=28, heads=28, kv_heads=4, inter=18944, v_hidden=1280, v_layers=32,
                      v_heads=16, v_inter=3420, model_vocab=152064, window=112, full_attention_every=8)


def _tokenizer(specials: list[str], named: dict[str, str], *, bos: str | None, eos: str, pad: str, vocab: int,
               template: str):
    """A byte-level BPE trained on WORDS with ``specials`` and the named multimodal tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)  # offsets (Idefics3 needs char_to_token)
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=list(dict.fromkeys(specials)),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([" ".join(WORDS)] * 8, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad,
                                   extra_special_tokens=named)
    fast.chat_template = template
    return fast


def _qwen(family: str, s: Sizes):
    from transformers import AutoConfig, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    named = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
             "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>"}
    tok = _tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>", *named.values()], named, bos=None,
                     eos="<|im_end|>", pad="<|endoftext|>", vocab=s.vocab, template=QWEN_TEMPLATE)
    ids = {k: tok.convert_tokens_to_ids(v) for k, v in named.items()}
    head = s.hidden // s.heads
    text = dict(vocab_size=s.model_vocab or len(tok), hidden_size=s.hidden, intermediate_size=s.inter, num_hidden_layers=s.layers,
                num_attention_heads=s.heads, num_key_value_heads=s.kv_heads, max_position_embeddings=4096,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                 "mrope_section": [head // 8, 3 * head // 16, head // 2 - head // 8 - 3 * head // 16]},
                bos_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    if family == "qwen2_vl":
        vision = dict(depth=s.v_layers, embed_dim=s.v_hidden, hidden_size=s.hidden, num_heads=s.v_heads, mlp_ratio=2)
    else:
        every = s.full_attention_every
        full = list(range(every - 1, s.v_layers, every)) if every else [s.v_layers - 1]
        vision = dict(depth=s.v_layers, hidden_size=s.v_hidden, intermediate_size=s.v_inter, num_heads=s.v_heads,
                      out_hidden_size=s.hidden, window_size=s.window, fullatt_block_indexes=full)
    config = AutoConfig.for_model(family, text_config=text, vision_config=vision,
                                  image_token_id=ids["image_token"], video_token_id=ids["video_token"],
                                  vision_start_token_id=ids["vision_start_token"],
                                  vision_end_token_id=ids["vision_end_token"], tie_word_embeddings=False)
    size = {"shortest_edge": 28 * 28, "longest_edge": 56 * 56}
    parts = dict(image_processor=Qwen2VLImageProcessor(size=size),
                 video_processor=Qwen2VLVideoProcessor(size=size))
    return config, tok, parts


def _text(s: Sizes, tok, **extra) -> dict:
    """A Llama/Qwen2-style text config of the given sizes for this tokenizer."""
    return dict(vocab_size=s.model_vocab or len(tok), hidden_size=s.hidden, intermediate_size=s.inter, num_hidden_layers=s.layers,
                num_attention_heads=s.heads, num_key_value_heads=s.kv_heads, max_position_embeddings=4096,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **extra)


def _siglip(s: Sizes, image: int, patch: int) -> dict:
    """A SigLIP tower without the pooling head, as the real checkpoints are."""
    return dict(model_type="siglip_vision_model", hidden_size=s.v_hidden, intermediate_size=s.v_inter,
                num_hidden_layers=s.v_layers, num_attention_heads=s.v_heads, image_size=image, patch_size=patch,
                vision_use_head=False)


def _onevision(s: Sizes):
    from transformers import (AutoConfig, LlavaOnevisionImageProcessor, LlavaOnevisionVideoProcessor)

    named = {"image_token": "<image>", "video_token": "<video>"}
    tok = _tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>", *named.values()], named, bos=None,
                     eos="<|im_end|>", pad="<|endoftext|>", vocab=s.vocab, template=ONEVISION_TEMPLATE)
    pinpoints = [[32, 32], [32, 64], [64, 32], [64, 64]]
    config = AutoConfig.for_model(
        "llava_onevision", text_config={"model_type": "qwen2", **_text(s, tok)}, vision_config=_siglip(s, 32, 8),
        image_token_index=tok.convert_tokens_to_ids("<image>"), video_token_index=tok.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=pinpoints, vision_feature_select_strategy="full", vision_feature_layer=-1,
        tie_word_embeddings=False)
    image = LlavaOnevisionImageProcessor(size={"height": 32, "width": 32}, image_grid_pinpoints=pinpoints)
    video = LlavaOnevisionVideoProcessor(size={"height": 32, "width": 32})
    return config, tok, dict(image_processor=image, video_processor=video, num_image_tokens=16,
                             vision_feature_select_strategy="full")


def _idefics3(s: Sizes, family: str = "idefics3"):
    from transformers import AutoConfig, Idefics3ImageProcessor, SmolVLMImageProcessor, SmolVLMVideoProcessor

    grid = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    tok = _tokenizer(["<|begin_of_text|>", "<|end_of_text|>", "<end_of_utterance>", "<image>",
                      "<fake_token_around_image>", "<global-img>", *grid], {"image_token": "<image>"},
                     bos="<|begin_of_text|>", eos="<end_of_utterance>", pad="<|end_of_text|>", vocab=s.vocab,
                     template=IDEFICS3_TEMPLATE)
    config = AutoConfig.for_model(
        family, text_config={"model_type": "llama", **_text(s, tok)},
        vision_config=dict(hidden_size=s.v_hidden, intermediate_size=s.v_inter, num_hidden_layers=s.v_layers,
                           num_attention_heads=s.v_heads, image_size=32, patch_size=8),
        image_token_id=tok.convert_tokens_to_ids("<image>"), scale_factor=2, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False)
    if family == "smolvlm":  # same layout; its own processors (the processor needs num2words)
        image = SmolVLMImageProcessor(size={"longest_edge": 64}, max_image_size={"longest_edge": 32})
        video = SmolVLMVideoProcessor(size={"longest_edge": 64}, max_image_size={"longest_edge": 32})
        return config, tok, dict(image_processor=image, video_processor=video, image_seq_len=4)
    image = Idefics3ImageProcessor(size={"longest_edge": 64}, max_image_size={"longest_edge": 32})
    return config, tok, dict(image_processor=image, image_seq_len=4)


def _internvl(s: Sizes):
    from transformers import AutoConfig, GotOcr2ImageProcessor, InternVLVideoProcessor

    named = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
             "video_token": "<video>"}
    tok = _tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>", *named.values()], named, bos=None,
                     eos="<|im_end|>", pad="<|endoftext|>", vocab=s.vocab, template=INTERNVL_TEMPLATE)
    config = AutoConfig.for_model(
        "internvl", text_config={"model_type": "qwen2", **_text(s, tok)},
        vision_config=dict(hidden_size=s.v_hidden, intermediate_size=s.v_inter, num_hidden_layers=s.v_layers,
                           num_attention_heads=s.v_heads, image_size=[32, 32], patch_size=[8, 8]),
        image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"), image_seq_length=4, downsample_ratio=0.5,
        tie_word_embeddings=False)
    image = GotOcr2ImageProcessor(size={"height": 32, "width": 32}, crop_to_patches=True, min_patches=1,
                                  max_patches=4)
    video = InternVLVideoProcessor(size={"height": 32, "width": 32})
    return config, tok, dict(image_processor=image, video_processor=video, image_seq_length=4)


def _gemma3(s: Sizes):
    from transformers import AutoConfig, Gemma3ImageProcessor

    named = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}
    tok = _tokenizer(["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>", *named.values()], named,
                     bos="<bos>", eos="<eos>", pad="<pad>", vocab=s.vocab, template=GEMMA3_TEMPLATE)
    head = s.hidden // s.heads
    text = _text(s, tok, head_dim=head, query_pre_attn_scalar=head, sliding_window=64,
                 layer_types=["sliding_attention", "full_attention"] * (s.layers // 2) + ["full_attention"] * (s.layers % 2))
    config = AutoConfig.for_model(
        "gemma3", text_config={"model_type": "gemma3_text", **text}, vision_config=_siglip(s, 32, 8),
        mm_tokens_per_image=4, boi_token_index=tok.convert_tokens_to_ids("<start_of_image>"),
        eoi_token_index=tok.convert_tokens_to_ids("<end_of_image>"),
        image_token_index=tok.convert_tokens_to_ids("<image_soft_token>"), tie_word_embeddings=True)
    config.generation_eos = [tok.eos_token_id, tok.convert_tokens_to_ids("<end_of_turn>")]
    image = Gemma3ImageProcessor(size={"height": 32, "width": 32})
    return config, tok, dict(image_processor=image, image_seq_length=4)


def _llava(s: Sizes):
    from transformers import AutoConfig, CLIPImageProcessor

    tok = _tokenizer(["<unk>", "<s>", "</s>", "<pad>", "<image>"], {"image_token": "<image>"}, bos="<s>", eos="</s>",
                     pad="<pad>", vocab=s.vocab, template=LLAVA_TEMPLATE)
    config = AutoConfig.for_model(
        "llava", text_config={"model_type": "llama", **_text(s, tok)},
        vision_config=dict(model_type="clip_vision_model", hidden_size=s.v_hidden, intermediate_size=s.v_inter,
                           num_hidden_layers=s.v_layers, num_attention_heads=s.v_heads, image_size=32, patch_size=8,
                           projection_dim=32),
        image_token_index=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-2,
        vision_feature_select_strategy="default", image_seq_length=16, tie_word_embeddings=False)
    image = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return config, tok, dict(image_processor=image, patch_size=8, vision_feature_select_strategy="default",
                             num_additional_image_tokens=1)


def build_family(family: str, sizes: Sizes = TINY, seed: int = 0, device: str = "cpu", dtype=None):
    """``(model, processor)`` of ``family`` at ``sizes``, random weights, built on ``device`` in
    ``dtype`` (default float32)."""
    import torch
    from transformers import AutoModelForImageTextToText

    if family in ("qwen2_vl", "qwen2_5_vl"):
        config, tok, parts = _qwen(family, sizes)
    else:
        config, tok, parts = {"llava_onevision": _onevision, "idefics3": _idefics3,
                              "smolvlm": lambda sz: _idefics3(sz, "smolvlm"), "internvl": _internvl,
                              "gemma3": _gemma3, "llava": _llava}[family](sizes)
    eos = getattr(config, "generation_eos", None)
    if eos is not None:
        del config.generation_eos
    import transformers
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    processor_cls = getattr(transformers, PROCESSOR_MAPPING_NAMES[family])
    processor = processor_cls(tokenizer=tok, chat_template=tok.chat_template, **parts)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype or torch.float32)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = eos or tok.eos_token_id
    return model, processor


def write_family(family: str, folder: Path, sizes: Sizes = TINY, seed: int = 0) -> Path:
    """``build_family``'s model and processor saved in ``folder`` (as a download would be laid out)."""
    model, processor = build_family(family, sizes, seed)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
