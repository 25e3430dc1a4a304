"""Chat templates by their LLaMA-Factory names: token ids, label masks and generation prompts.

The registered templates are LLaMA-Factory 0.9.x's (data/template.py), as slot data in
`SlotTemplate` (chat_slots.py), encoded token- and label-exact as its supervised processor does:
every assistant turn is trained, including what the assistant slot puts after the end marker
(ChatML's "\\n" after `<|im_end|>`; `mask_turn_end_newline` in the train config masks it).
`tokenizer` renders the tokenizer's own Jinja chat template instead and trains the last reply.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from medmerge.data.chat_slots import (
    THOUGHT_WORDS,
    Pairs,
    tokenize,
)
from medmerge.data.lf_templates import SLOT_TEMPLATES
from medmerge.data.readers import Conversation, Message, check_roles
from medmerge.errors import ConfigError, DataError, ModelError, unknown_choice

IGNORE_INDEX = -100
EMPTY_THINK = THOUGHT_WORDS[0] + THOUGHT_WORDS[1]
# Bounds on one render of a tokenizer's own (untrusted) Jinja chat template.
RENDER_SECONDS = 10.0
RENDER_CHARS = 16 * 2**20  # plus 4 characters per character of the messages
_GENERATOR = inspect.CO_GENERATOR

Encoded = tuple[list[int], list[int]]


class ChatTemplate(Protocol):
    """What the training loop and the evaluation need from a template."""

    name: str
    stop_strings: tuple[str, ...]

    def encode(self, tokenizer: Any, conversation: Conversation, enable_thinking: bool) -> Encoded:
        """Token ids and labels (-100 on prompt tokens) of a whole conversation."""
        ...

    def encode_pairs(
        self, tokenizer: Any, conversation: Conversation, enable_thinking: bool
    ) -> Pairs:
        """(prompt ids, reply ids) per trained turn, for truncation as LLaMA-Factory does it."""
        ...

    def efficient_eos_id(self, tokenizer: Any) -> int | None:
        """The EOS id added once at the end of an example (efficient_eos templates)."""
        ...

    def prompt_ids(self, tokenizer: Any, messages: Any, enable_thinking: bool) -> list[int]:
        """The generation prompt's ids (LLaMA-Factory's encode_oneturn)."""
        ...

    def render_prompt(self, tokenizer: Any, messages: Any, enable_thinking: bool) -> str:
        """The generation prompt for messages ending with a user turn."""
        ...

    def stop_token_ids(self, tokenizer: Any) -> list[int]:
        """Token ids that end a generated reply."""
        ...


def join_segments(tokenizer: Any, segments: list[tuple[str, bool]]) -> Encoded:
    """Tokenize (text, trained) segments separately and concatenate ids and labels."""
    input_ids: list[int] = []
    labels: list[int] = []
    for text, trained in segments:
        ids = tokenize(tokenizer, text)
        input_ids += ids
        labels += ids if trained else [IGNORE_INDEX] * len(ids)
    return input_ids, labels


def as_messages(messages: Any) -> tuple[Message, ...]:
    if isinstance(messages, Conversation):
        return messages.messages
    return tuple(
        m if isinstance(m, Message) else Message(m["role"], m["content"]) for m in messages
    )


class _RenderLimit(Exception):
    """A chat template render went past RENDER_SECONDS or produced over its size bound."""


def template_file(tokenizer: Any) -> str:
    """The file a tokenizer's chat template was read from, for messages."""
    folder = Path(getattr(tokenizer, "name_or_path", "") or ".")
    for name in ("chat_template.jinja", "chat_template.json", "tokenizer_config.json"):
        if (folder / name).is_file():
            return str(folder / name)
    return f"{folder} (chat template)"


@contextlib.contextmanager
def _render_bound(max_chars: int) -> Iterator[None]:
    """Stop a Jinja render past RENDER_SECONDS or `max_chars` of output.

    The sandbox keeps a template from reaching Python but not from looping 10^15 times or
    repeating a string into gigabytes. A trace function on the template's own frames (Jinja
    compiles templates to Python code named '<template>') checks the clock on each line and
    counts the text each render generator yields; other frames run untraced.
    """
    deadline = time.monotonic() + RENDER_SECONDS
    produced = 0

    def on_line(frame, event, arg):
        nonlocal produced
        if event == "return" and isinstance(arg, str) and frame.f_code.co_flags & _GENERATOR:
            produced += len(arg)
            if produced > max_chars:
                raise _RenderLimit(f"produced over {max_chars:,} characters")
        if time.monotonic() > deadline:
            raise _RenderLimit(f"ran over {RENDER_SECONDS:g} s")
        return on_line

    def on_call(frame, event, arg):
        return on_line if frame.f_code.co_filename == "<template>" else None

    previous = sys.gettrace()
    sys.settrace(on_call)
    try:
        yield
    finally:
        sys.settrace(previous)


def render_chat_template(tokenizer: Any, messages: list[dict], source: str, **options) -> str:
    """tokenizer.apply_chat_template(messages) as text, within the render bounds; a template
    that escapes the sandbox, exceeds a bound or raises is one line naming its file."""
    import jinja2

    limit = RENDER_CHARS + 4 * sum(len(m["content"]) for m in messages)
    try:
        with _render_bound(limit):
            return tokenizer.apply_chat_template(messages, tokenize=False, **options)
    except (_RenderLimit, jinja2.exceptions.TemplateError) as exc:
        raise _template_problem(exc, template_file(tokenizer), source) from None
    except (ArithmeticError, LookupError, TypeError, ValueError, RecursionError) as exc:
        # Raised by the template's own expressions ({{ 1 + 'a' }}): the template is broken.
        raise _template_problem(exc, template_file(tokenizer), source) from None


def _template_problem(exc: Exception, file: str, source: str) -> DataError | ModelError:
    import jinja2

    fix = "pick --template qwen3"
    if isinstance(exc, _RenderLimit):
        return ModelError(
            f"{file}: the chat template {exc} rendering {source}; it loops or repeats "
            f"without end: fix it or {fix}"
        )
    if isinstance(exc, jinja2.exceptions.SecurityError):
        return ModelError(
            f"{file}: the chat template tried an unsafe operation ({exc}) and Jinja's sandbox "
            f"stopped it; do not use this template: {fix}"
        )
    if isinstance(exc, jinja2.exceptions.TemplateSyntaxError):
        return ModelError(
            f"{file}: the chat template is not valid Jinja (template line {exc.lineno}: "
            f"{exc.message}); fix it or {fix}"
        )
    if (
        type(exc) is jinja2.exceptions.TemplateError
    ):  # the template's raise_exception(): about the chat
        return DataError(
            f"{source}: the chat template of {file} refused the conversation ({exc}); "
            f"fix the record or {fix}"
        )
    first = (str(exc).splitlines() or [""])[0]
    return ModelError(
        f"{file}: the chat template failed rendering {source} ({type(exc).__name__}: "
        f"{first}); fix it or {fix}"
    )


@dataclass(frozen=True)
class TokenizerTemplate:
    """The tokenizer's own Jinja chat template; only the last assistant turn is trained.

    The prompt is the render of all but the last message with a generation prompt; the
    response is the rest of the full render, trained up to and including the eos token.
    """

    name: str = "tokenizer"

    @property
    def stop_strings(self) -> tuple[str, ...]:
        return ()

    def _render(
        self,
        tokenizer: Any,
        turns: tuple[Message, ...],
        thinking: bool,
        gen: bool,
        source: str = "prompt",
    ) -> str:
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError(
                "template 'tokenizer' needs a tokenizer with a chat template; pick qwen3"
            )
        dicts = [{"role": m.role, "content": m.content} for m in turns]
        return render_chat_template(
            tokenizer, dicts, source, add_generation_prompt=gen, enable_thinking=thinking
        )

    def encode(self, tokenizer: Any, conversation: Conversation, enable_thinking: bool) -> Encoded:
        ids, labels = [], []
        for prompt, reply in self.encode_pairs(tokenizer, conversation, enable_thinking):
            ids += prompt + reply
            labels += [IGNORE_INDEX] * len(prompt) + reply
        return ids, labels

    def encode_pairs(
        self, tokenizer: Any, conversation: Conversation, enable_thinking: bool
    ) -> Pairs:
        """Prompt = render up to the last user turn; reply = the rest of the full render up to
        and including the eos token; what follows it is a last, untrained pair."""
        turns = conversation.messages
        check_roles(turns, conversation.source)
        source = conversation.source
        prompt = self._render(tokenizer, turns[:-1], enable_thinking, gen=True, source=source)
        full = self._render(tokenizer, turns, enable_thinking, gen=False, source=source)
        if not full.startswith(prompt):
            raise DataError(
                f"{conversation.source}: the tokenizer's chat template renders the prompt "
                "differently inside the full chat; use template qwen3 or chatml"
            )
        response = full[len(prompt) :]
        eos = tokenizer.eos_token or ""
        cut = response.rfind(eos) + len(eos) if eos and eos in response else len(response)
        pairs = [(tokenize(tokenizer, prompt), tokenize(tokenizer, response[:cut]))]
        return pairs + ([(tokenize(tokenizer, response[cut:]), [])] if response[cut:] else [])

    def render_prompt(self, tokenizer: Any, messages: Any, enable_thinking: bool) -> str:
        turns = as_messages(messages)
        check_roles(turns, "prompt", final="user")
        return self._render(tokenizer, turns, enable_thinking, gen=True)

    def prompt_ids(self, tokenizer: Any, messages: Any, enable_thinking: bool) -> list[int]:
        return tokenize(tokenizer, self.render_prompt(tokenizer, messages, enable_thinking))

    def efficient_eos_id(self, tokenizer: Any) -> int | None:
        return None

    def stop_token_ids(self, tokenizer: Any) -> list[int]:
        return [tokenizer.eos_token_id]


TEMPLATES: dict[str, ChatTemplate] = {t.name: t for t in SLOT_TEMPLATES}
TEMPLATES["tokenizer"] = TokenizerTemplate()


def get_template(name: str) -> ChatTemplate:
    """The registered template called `name`; unknown names are a ConfigError."""
    if name not in TEMPLATES:
        raise ConfigError(unknown_choice("chat template", name, TEMPLATES))
    return TEMPLATES[name]
