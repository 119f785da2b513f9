"""The language-model loss of a training micro-batch, three ways (``train.loss``).

* ``model`` (default): the model's own forward with ``labels``: logits at every position, then the
  mean cross-entropy over the label tokens (the answer tokens: the context is labelled -100).
* ``answer``: the backbone's last hidden states, then the output layer only at the positions that
  predict a label token, and the same mean cross-entropy. The logits of context and padding
  positions (most of a LLaVA sample: 576 image tokens) are never computed.
* ``fused``: like ``answer``, through a fused linear + cross-entropy that never holds the logits of
  more than a chunk of positions: Liger-Kernel's Triton kernel on a GPU when ``liger-kernel`` is
  installed, else :class:`ChunkedLinearCrossEntropy` (plain PyTorch, any device).

The three give the same loss and gradients to float tolerance (tests/test_perf_train.py); only
``model`` is bit-identical to earlier versions of mmcit.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F

from mmcit.data.collate import IGNORE_INDEX
from mmcit.errors import ConfigError
from mmcit.training.config import LOSSES
#: Largest number of logits (positions x vocabulary) one chunk of the fused loss holds at a time.
CHUNK_LOGITS = 1 << 24


def compute_loss(model, inputs: dict, how: str = "model") -> Any:
    """The micro-batch's outputs with ``.loss`` (mean cross-entropy over its label tokens).

    ``model`` is an :class:`mmcit.models.wrapper.MMModel`; ``inputs`` a batch from ``collate`` or
    ``pack`` (or input embeddings from ``with_image_tokens``), with ``labels``. A packed batch (position
    ids, no attention mask) runs without a KV cache, so that the model derives the attention
    boundaries of the packed sequences from the position ids.
    """
    if "position_ids" in inputs and "attention_mask" not in inputs:
        inputs = {**inputs, "use_cache": False}
    if how == "model":
        return model(**inputs)
    if how not in LOSSES:
        raise ConfigError(f"train.loss must be one of {', '.join(LOSSES)}, got {how!r}")
    inputs = dict(inputs)
    labels = inputs.pop("labels")
    base = model.peft.get_base_model()
    with model.autocast():
        hidden = final_hidden(base, model.to_device(inputs))
        head = output_layer(base)
        targets = labels.to(hidden.device)[:, 1:]
        keep = targets != IGNORE_INDEX
        h = hidden[:, :-1][keep]  # only the positions that predict an answer token
        t = targets[keep]
        if how == "answer":
            loss = F.cross_entropy(head(h).float(), t)
        else:
            loss = fused_linear_cross_entropy(h, head.weight, head.bias, t)
    return SimpleNamespace(loss=loss, logits=None)


def final_hidden(base, inputs: dict) -> torch.Tensor:
    """The language model's last hidden states (after its final norm), before the output layer.

    Transformers' LLaVA-style models (``LlavaForConditionalGeneration``, FastVLM) run their backbone
    as ``base.model``; the composed backend embeds the image itself and runs its language model's
    backbone.
    """
    if hasattr(base, "embed") and hasattr(base, "language_model"):  # mmcit.models.composed.ComposedVLM
        inputs = dict(inputs)
        embeds = base.embed(inputs.pop("input_ids"), inputs.pop("pixel_values", None))
        return base.language_model.model(inputs_embeds=embeds, **inputs)[0]
    backbone = getattr(base, "model", None)
    if backbone is None or not hasattr(base, "lm_head"):
        raise ConfigError(f"train.loss=answer/fused: {type(base).__name__} has no backbone + output layer "
                          "that mmcit knows; use train.loss=model")
    return backbone(**inputs)[0]


def output_layer(base) -> torch.nn.Linear:
    """The model's output layer (``lm_head``), checked to be a plain linear map to the logits."""
    owner = base.language_model if hasattr(base, "embed") and hasattr(base, "language_model") else base
    head = owner.get_output_embeddings()
    text_cfg = getattr(getattr(owner, "config", None), "text_config", None) or getattr(owner, "config", None)
    if not isinstance(head, torch.nn.Linear) or getattr(text_cfg, "final_logit_softcapping", None) \
            or getattr(text_cfg, "logit_scale", None):
        raise ConfigError("train.loss=answer/fused needs logits = lm_head(hidden) exactly (no logit scaling "
                          "or soft-capping); use train.loss=model for this model")
    return head


def fused_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                               targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``hidden @ weight.T + bias`` against ``targets`` (every target valid),
    without holding all the logits: Liger-Kernel's kernel on a GPU where installed, else chunks."""
    if hidden.numel() == 0:
        return hidden.sum() * 0.0  # no answer token here: a zero that still joins the graph
    if hidden.is_cuda:
        try:
            from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss
        except ImportError:
            pass
        else:
            h = hidden.to(weight.dtype)
            return LigerFusedLinearCrossEntropyLoss(reduction="mean")(weight, h, targets, bias)
    chunk = max(1, CHUNK_LOGITS // weight.shape[0])
    return ChunkedLinearCrossEntropy.apply(hidden, weight, bias, targets, chunk)


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of a linear layer's output, a chunk of rows at a time.

    The forward computes, chunk by chunk, the logits (in the autocast dtype when autocast is on,
    as the model's own output layer would), the loss and at once the gradients with respect to the
    hidden states (and the weight and bias where they train); the backward only scales them. At
    most ``chunk`` rows of logits exist at any time.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk):  # noqa: D401 (autograd's signature)
        """Loss of all rows; gradients kept for the backward."""
        n = hidden.shape[0]
        need_w, need_b = ctx.needs_input_grad[1], bias is not None and ctx.needs_input_grad[2]
        acc = torch.promote_types(hidden.dtype, torch.float32)  # float32 at least, as the model's own loss
        grad_h = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=acc, device=bias.device) if need_b else None
        total = torch.zeros((), dtype=acc, device=hidden.device)
        for s in range(0, n, chunk):
            h, t = hidden[s:s + chunk], targets[s:s + chunk]
            logits = F.linear(h, weight, bias).to(acc)
            lse = torch.logsumexp(logits, dim=-1)
            total += (lse - logits.gather(1, t[:, None])[:, 0]).sum()
            # d(mean loss)/d(logits) = (softmax - one_hot) / n
            grad = torch.exp(logits - lse[:, None])
            grad[torch.arange(len(t), device=grad.device), t] -= 1.0
            grad /= n
            if grad_h is not None:
                grad_h[s:s + chunk] = (grad.to(weight.dtype) @ weight).to(hidden.dtype)
            if grad_w is not None:
                grad_w += grad.t() @ h.to(acc)
            if grad_b is not None:
                grad_b += grad.sum(0)
        ctx.save_for_backward(*(g for g in (grad_h, grad_w, grad_b) if g is not None))
        ctx.have = (grad_h is not None, grad_w is not None, grad_b is not None)
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        return total / n

    @staticmethod
    def backward(ctx, grad_out):
        """The kept gradients times the incoming one."""
        saved = iter(ctx.saved_tensors)
        gh, gw, gb = (next(saved) if have else None for have in ctx.have)
        return (None if gh is None else gh * grad_out.to(gh.dtype),
                None if gw is None else (gw * grad_out).to(ctx.dtypes[0]),
                None if gb is None else (gb * grad_out).to(ctx.dtypes[1]),
                None, None)
