"""Tiny random checkpoints on disk, in the layouts real users have, for the backend tests:
a LLaVA folder in the transformers layout (with its processor), an open_clip ``local-dir:`` folder,
and a causal-LM folder whose tokenizer has a ChatML chat template."""
import json
from pathlib import Path

from mmcit.models.tiny_llava.build import TinyModelSpec, build_tiny_llava
from mmcit.models.tiny_llava.tokenizer import train_tokenizer

TEXTS = ["USER: ASSISTANT: What is the colour? Answer the question using a single word or phrase. red green "
         "blue yes no cat sun tree house star circle square triangle"] * 4
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def write_llava(folder: Path, *, patch_size: int = 8) -> Path:
    """A LlavaForConditionalGeneration checkpoint + LlavaProcessor (hidden 64: bitsandbytes' CPU
    4-bit path needs rows of at least one 64-value block)."""
    tok = train_tokenizer(TEXTS, vocab_size=300)
    spec = TinyModelSpec(image_size=32, patch_size=8, vision_hidden=32, vision_layers=2, text_hidden=64,
                         text_layers=2, text_heads=2, text_intermediate=128)
    model, processor = build_tiny_llava(spec, tok, seed=1)
    model.save_pretrained(folder)
    if patch_size != 8:  # a processor that disagrees with the tower, for the error test
        processor.patch_size = patch_size
    processor.save_pretrained(folder)
    return folder


def write_open_clip(folder: Path) -> Path:
    """An open_clip ``local-dir:`` folder: a 3-block ViT on 32 px images with 8 px patches (16 tokens)."""
    import open_clip
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"model_cfg": {"embed_dim": 32,
                         "vision_cfg": {"image_size": 32, "layers": 3, "width": 48, "head_width": 16, "patch_size": 8},
                         "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}},
           "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    model = open_clip.create_model(f"local-dir:{folder}", load_weights=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder


def write_causal_lm(folder: Path) -> Path:
    """A Llama causal LM with a byte-level BPE tokenizer whose chat template is ChatML."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = train_tokenizer(TEXTS, vocab_size=300)
    tok.add_tokens(["<|im_start|>", "<|im_end|>"], special_tokens=True)
    tok.eos_token = "<|im_end|>"
    tok.chat_template = CHATML
    lm = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id, tie_word_embeddings=False))
    lm.generation_config.pad_token_id = tok.pad_token_id
    lm.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
