"""Encoding samples through a checkpoint's own processor (the ``hf_vlm`` backend's families).

Every image goes through the processor, so the number of image tokens in a sample is always the
processor's (fixed, tiled or dynamic), and the processor's extra tensors (``image_grid_thw``,
``image_sizes``, ``pixel_attention_mask``, ``token_type_ids``, ...) travel with the sample. A
conversation is rendered with the processor's chat template, the image as the first content part
of the first user turn (a sample without an image renders text only), and split into (context,
answer) pieces; the first context goes through the processor with the image, every other piece
through its tokenizer, each on its own, and labels cover the answers only.

``collate_processor`` pads the token rows and joins the extra tensors by the family's batch rules
(``mmcit.models.families``): the result equals what the processor gives for the whole batch at
once (up to padding tiles a model skips), which a test checks per family.
"""
from __future__ import annotations

import torch

from mmcit.data.collate import IGNORE_INDEX, load_image, mean_color
from mmcit.data.sample import Sample
from mmcit.data.templates import Template

#: How a processor output joins into a batch; see ``mmcit.models.families``.
RULES = ("image", "cat", "pad_cat", "tokens")


class ProcessorTemplate(Template):
    """The processor's Jinja chat template, split into (context, target) pieces by rendering prefixes.

    Turn k's context is what rendering the messages up to its question with the generation prompt
    adds to the turns before it; its target is what the answer adds after that. A target that holds
    none of ``stops`` (the end-of-turn strings generation stops at) gets ``eos`` appended.
    """

    def __init__(self, processor, stops: list[str]):
        self.processor = processor
        self.stops = [s for s in stops if s]

    def _render(self, messages: list[dict], generation_prompt: bool) -> str:
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)

    def pieces(self, turns: list[tuple[str, str]], bos: str, eos: str, image: bool = True) -> list[tuple[str, str]]:
        """The (context, target) pieces of ``turns``, the image (if any) in the first context."""
        messages: list[dict] = []
        done = ""
        out = []
        for k, (human, answer) in enumerate(turns):
            content = ([{"type": "image"}] if image and k == 0 else []) + [{"type": "text", "text": human}]
            messages.append({"role": "user", "content": content})
            context = self._render(messages, True)
            messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
            full = self._render(messages, False)
            if not context.startswith(done) or not full.startswith(context):
                raise ValueError("the processor's chat template does not render a conversation as an extension "
                                 "of its beginning, so answers cannot be told from prompts")
            target = full[len(context):]
            if eos and not any(s in target for s in self.stops + [eos]):
                target += eos  # the model must learn to stop where the answer ends
            out.append((context[len(done):], target))
            done = full
        return out


class ProcessorEncoder:
    """Encodes samples through the processor for training (with labels) or generation (prompt only).

    ``layout`` maps each extra processor output to its batch rule (``RULES``); an output the layout
    does not name is an error, so nothing the model needs is dropped silently.
    """

    def __init__(self, processor, template: ProcessorTemplate, layout: dict[str, str], max_length: int = 2048,
                 pad_to_square: bool = False):
        self.processor = processor
        self.tok = processor.tokenizer
        self.template = template
        self.layout = dict(layout)
        self.max_length = max_length
        self.pad_color = mean_color(processor) if pad_to_square else None

    def _process(self, text: str, image) -> tuple[list[int], dict[str, torch.Tensor]]:
        """The processor's ids for one text (and image), and its other outputs in per-sample form."""
        enc = self.processor(text=[text], images=[[image]] if image is not None else None, return_tensors="pt",
                             add_special_tokens=False)
        extras = {}
        for key, value in enc.items():
            if key in ("input_ids", "attention_mask"):
                continue
            rule = self.layout.get(key)
            if rule is None:
                raise ValueError(f"the processor returned {key!r}, which this family's batch layout does not "
                                 f"name ({', '.join(self.layout)})")
            extras[key] = value[0] if rule in ("image", "tokens") else value
        return enc["input_ids"][0].tolist(), extras

    def _ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def encode_train(self, sample: Sample) -> dict:
        """input_ids, labels (-100 except on the answers) and the processor's image tensors."""
        image = load_image(sample, self.pad_color) if sample.image is not None else None
        pieces = self.template.pieces(sample.turns, self.tok.bos_token or "", self.tok.eos_token or "",
                                      image=image is not None)
        ids: list[int] = []
        labels: list[int] = []
        extras: dict[str, torch.Tensor] = {}
        for k, (context, target) in enumerate(pieces):
            # Each piece on its own, as a prompt is tokenised at generation time: the answer's
            # tokens are then exactly what the model must produce after that prompt.
            ctx_ids, found = self._process(context, image) if k == 0 else (self._ids(context), {})
            extras.update(found)
            tgt_ids = self._ids(target)
            ids += ctx_ids + tgt_ids
            labels += [IGNORE_INDEX] * len(ctx_ids) + tgt_ids
        if len(ids) > self.max_length:
            raise ValueError(f"sample {sample.task}/{sample.id} has {len(ids)} tokens, over max_length={self.max_length}")
        for key, value in extras.items():
            if self.layout[key] == "tokens":  # per-token values of the first prompt: zeros after it
                extras[key] = torch.cat([value, value.new_zeros(len(ids) - len(value))])
        return {"input_ids": ids, "labels": labels, **extras}

    def encode_prompt(self, sample: Sample) -> dict:
        """The first turn's context only, ready for generation."""
        image = load_image(sample, self.pad_color) if sample.image is not None else None
        context, _ = self.template.pieces(sample.turns[:1], self.tok.bos_token or "", self.tok.eos_token or "",
                                          image=image is not None)[0]
        ids, extras = self._process(context, image)
        return {"input_ids": ids, **extras}


def _pad_rows(rows: list[list[int]], value: int, longest: int, side: str) -> list[list[int]]:
    return [[value] * (longest - len(r)) + r if side == "left" else r + [value] * (longest - len(r)) for r in rows]


def collate_processor(features: list[dict], pad_id: int, padding_side: str, layout: dict[str, str]) -> dict:
    """Pad and join encoded features into a batch: token rows padded on ``padding_side`` (labels
    with -100), the processor's tensors joined by ``layout``'s rules (see ``RULES``)."""
    longest = max(len(f["input_ids"]) for f in features)
    batch = {
        "input_ids": torch.tensor(_pad_rows([f["input_ids"] for f in features], pad_id, longest, padding_side)),
        "attention_mask": torch.tensor(_pad_rows([[1] * len(f["input_ids"]) for f in features], 0, longest,
                                                 padding_side)),
    }
    if "labels" in features[0]:
        batch["labels"] = torch.tensor(_pad_rows([f["labels"] for f in features], IGNORE_INDEX, longest,
                                                 padding_side))
    for key, rule in layout.items():
        present = [f[key] for f in features if key in f]
        if not present:
            continue
        if rule == "tokens":
            zero = present[0].new_zeros(0)
            rows = [f.get(key, zero.new_zeros(len(f["input_ids"]))) for f in features]
            pad = [zero.new_zeros(longest - len(r)) for r in rows]
            batch[key] = torch.stack([torch.cat([p, r] if padding_side == "left" else [r, p])
                                      for r, p in zip(rows, pad)])
        elif rule == "image":
            batch[key] = torch.stack(present)
        elif rule == "cat":
            batch[key] = torch.cat(present)
        else:  # pad_cat: zero tiles up to the longest sample's count
            most = max(t.shape[1] for t in present)
            batch[key] = torch.cat([torch.cat([t, t.new_zeros(t.shape[0], most - t.shape[1], *t.shape[2:])], dim=1)
                                    for t in present])
    return batch
