"""Chat templates: how a conversation becomes the text a model is trained on and prompted with.

Every template splits a conversation into (context, target) pieces: the targets are what the model
learns to say (the answers, with the end-of-turn marker), the contexts are masked out of the loss.
The first context carries the ``<image>`` tag, which the processor expands to the vision tower's
token count; a text-only sample (``image=False``) has no tag.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from mmcit.errors import ConfigError
from mmcit.registry import Registry

# LLaVA-1.5's conversation (its "vicuna_v1" template): the system line, then
# "USER: <image>\n{question} ASSISTANT: {answer}</s>" turn after turn.
VICUNA_SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the human's questions.")


class Template:
    """Splits a conversation into (context, target) pieces; see the module docstring."""

    def pieces(self, turns: list[tuple[str, str]], bos: str, eos: str, image: bool = True) -> list[tuple[str, str]]:
        """The (context, target) pieces of ``turns``; contexts are masked out of the loss. ``image``:
        whether the first context carries the image tag (False for a text-only sample)."""
        raise NotImplementedError


@dataclass
class ChatTemplate(Template):
    """The vicuna_v1 layout; ``system`` empty gives the plain variant the tiny model uses."""

    system: str = ""
    user: str = "USER:"
    assistant: str = "ASSISTANT:"

    def pieces(self, turns: list[tuple[str, str]], bos: str, eos: str, image: bool = True) -> list[tuple[str, str]]:
        """The (context, target) pieces of ``turns``; contexts are masked out of the loss."""
        out = []
        for k, (human, answer) in enumerate(turns):
            head = (bos + (self.system + " " if self.system else "") if k == 0 else "") + f"{self.user} "
            head += "<image>\n" if k == 0 and image else ""
            out.append((f"{head}{human} {self.assistant}", f" {answer}{eos}"))
        return out


class RenderedTemplate(Template):
    """A Jinja chat template (the tokenizer's or the processor's), split by rendering prefixes.

    Turn k's context is what rendering the messages up to its question with the generation prompt
    adds to the rendering of the turns before it; its target is what the answer adds after that.
    A template that does not render each conversation as an extension of its prefix cannot be
    split this way and is refused with an error. A target without the tokenizer's eos gets it
    appended, so that generation stops after the answer.
    """

    def __init__(self, owner, image_as_content: bool, name: str):
        if not getattr(owner, "chat_template", None):
            raise ConfigError(f"model.chat_template: {name}: the {name} has no chat template; "
                              "choose vicuna_v1 or vicuna_plain")
        self.owner = owner
        self.image_as_content = image_as_content  # processor templates take [{"type": "image"}, ...]
        self.name = name

    def _message(self, role: str, text: str, first: bool) -> dict:
        if self.image_as_content:
            content = ([{"type": "image"}] if first else []) + [{"type": "text", "text": text}]
            return {"role": role, "content": content}
        return {"role": role, "content": ("<image>\n" + text) if first else text}

    def _render(self, messages: list[dict], generation_prompt: bool) -> str:
        return self.owner.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)

    def pieces(self, turns: list[tuple[str, str]], bos: str, eos: str, image: bool = True) -> list[tuple[str, str]]:
        """The (context, target) pieces of ``turns``; contexts are masked out of the loss."""
        messages: list[dict] = []
        done = ""
        out = []
        for k, (human, answer) in enumerate(turns):
            messages.append(self._message("user", human, k == 0 and image))
            context = self._render(messages, True)
            messages.append({"role": "assistant", "content": answer if not self.image_as_content
                             else [{"type": "text", "text": answer}]})
            full = self._render(messages, False)
            if not context.startswith(done) or not full.startswith(context):
                raise ValueError(f"the {self.name}'s chat template does not render a conversation as an "
                                 "extension of its beginning; set model.chat_template to vicuna_v1")
            target = full[len(context):]
            if eos and eos not in target:  # the model must learn to stop where the answer ends
                target += eos
            out.append((context[len(done):], target))
            done = full
        return out


#: Chat template name -> a builder ``(tokenizer, processor) -> Template`` (``model.chat_template``).
TEMPLATES: Registry[Callable[[Any, Any], Template]] = Registry("templates")


@TEMPLATES.register(name="vicuna_v1")
def _vicuna_v1(tokenizer: Any, processor: Any) -> Template:
    """LLaVA-1.5's conversation: its system line, then USER: ... ASSISTANT: ... turns."""
    return ChatTemplate(system=VICUNA_SYSTEM)


@TEMPLATES.register(name="vicuna_plain")
def _vicuna_plain(tokenizer: Any, processor: Any) -> Template:
    """The vicuna_v1 layout without a system line (the tiny model's)."""
    return ChatTemplate()


@TEMPLATES.register(name="tokenizer")
def _tokenizer_template(tokenizer: Any, processor: Any) -> Template:
    """The language model tokenizer's own Jinja chat template."""
    return RenderedTemplate(tokenizer, image_as_content=False, name="tokenizer")


@TEMPLATES.register(name="processor")
def _processor_template(tokenizer: Any, processor: Any) -> Template:
    """The checkpoint processor's Jinja chat template (images as content parts)."""
    return RenderedTemplate(processor, image_as_content=True, name="processor")


def build_template(name: str, tokenizer: Any = None, processor: Any = None) -> Template:
    """The chat template ``name`` (see ``TEMPLATES``) for this tokenizer and processor."""
    return TEMPLATES.get(name, "model.chat_template")(tokenizer, processor)
