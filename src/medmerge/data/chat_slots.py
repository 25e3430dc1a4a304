"""LLaMA-Factory's chat templates as data: slots per role, encoded the way its Template does.

A template is a few slot lists (strings holding `{{content}}`, and the tokenizer's BOS/EOS) for
the user, assistant and system turns, a prefix, a default system prompt and stop words. As in
LLaMA-Factory (data/template.py, 0.9.x), every message becomes the ids of its slots, each string
tokenized on its own; a conversation becomes (prompt, reply) id pairs, one per assistant turn:
turn 0's prompt is prefix + system + user, later prompts are the user turn alone, and a reply
carries its end marker and whatever the assistant slot puts after it (ChatML's "\\n" after
`<|im_end|>` is part of the reply and trained, as in LLaMA-Factory).

`replace_eos` templates use their first stop word as EOS (LLaMA-Factory replaces the
tokenizer's eos with it); `fuse_system` puts the system text inside the first user turn
(LLaMA-Factory's Llama2Template: mistral, gemma); `efficient_eos` templates end replies with
nothing and the EOS is added once at the end (gemma2). `reasoning` is LLaMA-Factory's
ReasoningTemplate (qwen3): thought words `<think>\\n` and `\\n</think>\\n\\n`; a reply that
holds neither `<think>` nor `</think>` gets the empty block `<think>\\n\\n</think>\\n\\n`, tokenized
on its own, trained before the reply with thinking on, appended to the prompt (not trained) with
it off, when thinking is off `<think>\\n(.*?)\\n</think>\\n\\n` is removed from replies first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from medmerge.data.readers import Conversation, Message, check_roles
from medmerge.errors import ConfigError

BOS = "<bos_token>"  # slot element: the tokenizer's BOS id, when it has one
EOS = "<eos_token>"  # slot element: the template's EOS id (see SlotTemplate.eos_token)
THOUGHT_WORDS = ("<think>\n", "\n</think>\n\n")
CONTENT = "{{content}}"

Slots = tuple[str, ...]
Pairs = list[tuple[list[int], list[int]]]


def tokenize(tokenizer: Any, text: str) -> list[int]:
    """Ids of `text` with no BOS/EOS added."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def remove_thought(content: str) -> str:
    """LLaMA-Factory's remove_thought: drop `<think>\\n...\\n</think>\\n\\n`, then leading \\n."""
    pattern = f"{re.escape(THOUGHT_WORDS[0])}(.*?){re.escape(THOUGHT_WORDS[1])}"
    return re.sub(pattern, "", content, flags=re.DOTALL).lstrip("\n")


def has_thought(content: str) -> bool:
    """Whether a reply holds a think marker (then no empty block is added)."""
    return THOUGHT_WORDS[0].strip() in content or THOUGHT_WORDS[1].strip() in content


def split_system(messages: tuple[Message, ...]) -> tuple[str, tuple[Message, ...]]:
    if messages and messages[0].role == "system":
        return messages[0].content, messages[1:]
    return "", messages


@dataclass(frozen=True)
class SlotTemplate:
    """One LLaMA-Factory template; `encode_pairs` is its encode_multiturn, `prompt_ids` its
    encode_oneturn on the conversation plus an empty assistant turn."""

    name: str
    user: Slots
    assistant: Slots
    system: Slots
    prefix: Slots = ()
    default_system: str = ""
    stop_strings: tuple[str, ...] = ()
    replace_eos: bool = False
    efficient_eos: bool = False
    fuse_system: bool = False
    reasoning: bool = False

    def eos_token(self, tokenizer: Any) -> str:
        """The EOS LLaMA-Factory uses with this template (its fix_special_tokens)."""
        if self.replace_eos:
            return self.stop_strings[0]
        return tokenizer.eos_token or "<|endoftext|>"

    def check_tokenizer(self, tokenizer: Any) -> None:
        """Stop words and the EOS must be tokens; LLaMA-Factory would add them (new rows)."""
        for word in (*self.stop_strings, self.eos_token(tokenizer)):
            token_id = tokenizer.convert_tokens_to_ids(word)
            if token_id is None or token_id == tokenizer.unk_token_id:
                raise ConfigError(
                    f"template {self.name!r} needs the token {word!r}, which the tokenizer "
                    f"({getattr(tokenizer, 'name_or_path', '') or 'given'}) does not have; pick "
                    "the template of the model's family (e.g. qwen3 for Qwen3)"
                )

    def stop_token_ids(self, tokenizer: Any) -> list[int]:
        """EOS and the stop words, as LLaMA-Factory's get_stop_token_ids."""
        ids = [tokenizer.convert_tokens_to_ids(self.eos_token(tokenizer))]
        for word in self.stop_strings:
            token_id = tokenizer.convert_tokens_to_ids(word)
            if token_id not in ids:
                ids.append(token_id)
        return ids

    def _elements(self, slots: Slots, content: str) -> list[str]:
        return [s if s in (BOS, EOS) else s.replace(CONTENT, content, 1) for s in slots]

    def _ids(self, tokenizer: Any, elements: list[str]) -> list[int]:
        ids: list[int] = []
        for element in elements:
            if element == BOS:
                ids += [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
            elif element == EOS:
                ids.append(tokenizer.convert_tokens_to_ids(self.eos_token(tokenizer)))
            elif element:
                ids += tokenize(tokenizer, element)
        return ids

    def _text(self, tokenizer: Any, elements: list[str]) -> str:
        bos = tokenizer.bos_token if tokenizer.bos_token_id is not None else ""
        eos = self.eos_token(tokenizer)
        return "".join(bos if e == BOS else eos if e == EOS else e for e in elements)

    def message_elements(self, system: str, turns: tuple[Message, ...]) -> list[list[str]]:
        """Slot elements per message (LLaMA-Factory's Template._encode before tokenizing)."""
        system = system or self.default_system
        out = []
        for index, message in enumerate(turns):
            elements = list(self.prefix) if index == 0 else []
            content = message.content
            if index == 0 and system:
                system_elements = self._elements(self.system, system)
                if self.fuse_system:
                    content = system_elements[0] + content
                else:
                    elements += system_elements
            slots = self.user if message.role == "user" else self.assistant
            out.append(elements + self._elements(slots, content))
        return out

    def _thought_ids(self, tokenizer: Any) -> list[int]:
        return tokenize(tokenizer, THOUGHT_WORDS[0] + THOUGHT_WORDS[1])

    def encode_pairs(
        self, tokenizer: Any, conversation: Conversation, enable_thinking: bool
    ) -> Pairs:
        """(prompt ids, reply ids) per assistant turn, untruncated."""
        check_roles(conversation.messages, conversation.source)
        self.check_tokenizer(tokenizer)
        system, turns = split_system(conversation.messages)
        if self.reasoning and not enable_thinking:
            turns = tuple(
                Message(m.role, remove_thought(m.content)) if m.role == "assistant" else m
                for m in turns
            )
        encoded = [self._ids(tokenizer, e) for e in self.message_elements(system, turns)]
        pairs = [(encoded[i], encoded[i + 1]) for i in range(0, len(encoded), 2)]
        if not self.reasoning:
            return pairs
        for index, (prompt, reply) in enumerate(pairs):
            if not has_thought(turns[2 * index + 1].content):
                if enable_thinking:
                    pairs[index] = (prompt, self._thought_ids(tokenizer) + reply)
                else:
                    pairs[index] = (prompt + self._thought_ids(tokenizer), reply)
        return pairs

    def encode(
        self, tokenizer: Any, conversation: Conversation, enable_thinking: bool
    ) -> tuple[list[int], list[int]]:
        """Token ids and labels (-100 on prompts) of the whole conversation, untruncated."""
        from medmerge.data.packing import supervised_example

        pairs = self.encode_pairs(tokenizer, conversation, enable_thinking)
        example = supervised_example(pairs, None, self.efficient_eos_id(tokenizer))
        return example["input_ids"], example["labels"]

    def efficient_eos_id(self, tokenizer: Any) -> int | None:
        """The EOS id added once after the last reply (efficient_eos templates), else None."""
        if not self.efficient_eos:
            return None
        return tokenizer.convert_tokens_to_ids(self.eos_token(tokenizer))

    def _prompt_elements(self, messages: tuple[Message, ...], enable_thinking: bool):
        check_roles(messages, "prompt", final="user")
        system, turns = split_system(messages)
        if self.reasoning:  # earlier replies lose their reasoning (preserve_thinking off)
            turns = tuple(
                Message(m.role, remove_thought(m.content)) if m.role == "assistant" else m
                for m in turns
            )
        elements = self.message_elements(system, (*turns, Message("assistant", "")))[:-1]
        flat = [element for message in elements for element in message]
        if self.reasoning and not enable_thinking:
            flat.append(THOUGHT_WORDS[0] + THOUGHT_WORDS[1])
        return elements, flat

    def prompt_ids(self, tokenizer: Any, messages: Any, enable_thinking: bool) -> list[int]:
        """The generation prompt's ids exactly as LLaMA-Factory's encode_oneturn gives them."""
        from medmerge.data.templates import as_messages

        self.check_tokenizer(tokenizer)
        elements, flat = self._prompt_elements(as_messages(messages), enable_thinking)
        ids = [i for message in elements for i in self._ids(tokenizer, message)]
        if len(flat) > sum(len(m) for m in elements):
            ids += self._thought_ids(tokenizer)
        return ids

    def render_prompt(self, tokenizer: Any, messages: Any, enable_thinking: bool) -> str:
        """The generation prompt as text (the decoded `prompt_ids`, BOS included)."""
        from medmerge.data.templates import as_messages

        _, flat = self._prompt_elements(as_messages(messages), enable_thinking)
        return self._text(tokenizer, flat)
