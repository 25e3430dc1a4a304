"""Exact token ids, rendered strings and label masks of every chat template."""

from __future__ import annotations

import copy as copy_module

import pytest

from medmerge.data import Conversation, Message, get_template
from medmerge.errors import ConfigError, DataError

M = -100
ENDOFTEXT, IM_START, IM_END, THINK_OPEN, THINK_CLOSE = 1019, 1020, 1021, 1022, 1023
NL = 198
# Ids of text pieces under the fixture tokenizer (pinned in test_text_piece_ids).
USER = [299, 263, NL]
ASSISTANT = [893, 478, 392, NL]
SYSTEM = [82, 668, 346, NL]
Q1 = [54, 71, 278, 367, 292, 68, 398, 30]  # What is fever?
A1 = [
    32,
    337,
    64,
    288,
    272,
    291,
    343,
    88,
    284,
    346,
    352,
    278,
    382,
    13,
]  # A raised body temperature.
Q2 = [32, 77, 67, 368, 623, 82, 30]  # And chills?
A2 = [37, 68, 398, 367, 256, 536, 13]  # Fever is a sign.
SYS = [33, 68, 814, 673, 69, 13]  # Be brief.
THINK = [THINK_OPEN, NL, NL, THINK_CLOSE, NL, NL]

PROMPT1 = [IM_START, *USER, *Q1, IM_END, NL, IM_START, *ASSISTANT]
PROMPT2 = [NL, IM_START, *USER, *Q2, IM_END, NL, IM_START, *ASSISTANT]
SYSTEM_TURN = [IM_START, *SYSTEM, *SYS, IM_END, NL]

ONE_TURN_TEXT = (
    "<|im_start|>user\nWhat is fever?<|im_end|>\n<|im_start|>assistant\n"
    "A raised body temperature.<|im_end|>\n"
)


def chat(*pairs: tuple[str, str]) -> Conversation:
    return Conversation(tuple(Message(role, text) for role, text in pairs), "test:1")


ONE = chat(("user", "What is fever?"), ("assistant", "A raised body temperature."))
TWO = chat(
    ("user", "What is fever?"),
    ("assistant", "A raised body temperature."),
    ("user", "And chills?"),
    ("assistant", "Fever is a sign."),
)
WITH_SYSTEM = chat(
    ("system", "Be brief."),
    ("user", "What is fever?"),
    ("assistant", "A raised body temperature."),
)
REASONED = chat(
    ("user", "What is fever?"),
    ("assistant", "<think>\nAnd chills?\n</think>\n\nA raised body temperature."),
)


def masked(ids: list[int]) -> list[int]:
    return [M] * len(ids)


def test_special_token_ids_are_the_last_five(tokenizer) -> None:
    names = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
    assert len(tokenizer) == 1024
    assert tokenizer.convert_tokens_to_ids(names) == [1019, 1020, 1021, 1022, 1023]
    assert tokenizer("<|im_start|><|im_end|>", add_special_tokens=False).input_ids == [1020, 1021]


def test_text_piece_ids(tokenizer) -> None:
    pieces = {
        "user\n": USER,
        "assistant\n": ASSISTANT,
        "system\n": SYSTEM,
        "What is fever?": Q1,
        "A raised body temperature.": A1,
        "And chills?": Q2,
        "Fever is a sign.": A2,
        "Be brief.": SYS,
        "<think>\n\n</think>\n\n": THINK,
    }
    for text, ids in pieces.items():
        assert tokenizer(text, add_special_tokens=False).input_ids == ids, text


@pytest.mark.parametrize("name", ["qwen3_nothink", "chatml"])
@pytest.mark.parametrize("thinking", [True, False])
def test_plain_chatml_one_turn(tokenizer, name: str, thinking: bool) -> None:
    ids, labels = get_template(name).encode(tokenizer, ONE, thinking)
    assert tokenizer.decode(ids) == ONE_TURN_TEXT
    assert ids == tokenizer(ONE_TURN_TEXT, add_special_tokens=False).input_ids
    assert ids == [*PROMPT1, *A1, IM_END, NL]
    assert labels == [*masked(PROMPT1), *A1, IM_END, NL]
    assert [i for i, t in enumerate(ids) if t == IM_START] == [0, 14]
    assert [i for i, t in enumerate(ids) if t == IM_END] == [12, 33]


def test_plain_chatml_two_turns_trains_both_replies(tokenizer) -> None:
    ids, labels = get_template("qwen3_nothink").encode(tokenizer, TWO, False)
    assert ids == [*PROMPT1, *A1, IM_END, *PROMPT2, *A2, IM_END, NL]
    assert labels == [*masked(PROMPT1), *A1, IM_END, NL, *masked(PROMPT2[1:]), *A2, IM_END, NL]
    assert ids == tokenizer(tokenizer.decode(ids), add_special_tokens=False).input_ids


def test_system_turn_comes_first_and_is_masked(tokenizer) -> None:
    ids, labels = get_template("qwen3_nothink").encode(tokenizer, WITH_SYSTEM, True)
    assert tokenizer.decode(ids) == "<|im_start|>system\nBe brief.<|im_end|>\n" + ONE_TURN_TEXT
    assert ids == [*SYSTEM_TURN, *PROMPT1, *A1, IM_END, NL]
    assert labels == [*masked(SYSTEM_TURN + PROMPT1), *A1, IM_END, NL]


def test_qwen3_thinking_trains_the_empty_think_block(tokenizer) -> None:
    ids, labels = get_template("qwen3").encode(tokenizer, ONE, True)
    assert tokenizer.decode(ids) == (
        "<|im_start|>user\nWhat is fever?<|im_end|>\n<|im_start|>assistant\n"
        "<think>\n\n</think>\n\nA raised body temperature.<|im_end|>\n"
    )
    assert ids == [*PROMPT1, *THINK, *A1, IM_END, NL]
    assert labels == [*masked(PROMPT1), *THINK, *A1, IM_END, NL]
    assert ids.index(THINK_OPEN) == 19
    assert ids == tokenizer(tokenizer.decode(ids), add_special_tokens=False).input_ids


def test_qwen3_no_thinking_masks_the_empty_think_block(tokenizer) -> None:
    ids, labels = get_template("qwen3").encode(tokenizer, ONE, False)
    assert ids == [*PROMPT1, *THINK, *A1, IM_END, NL]
    assert labels == [*masked(PROMPT1 + THINK), *A1, IM_END, NL]


def test_qwen3_keeps_existing_reasoning_when_thinking(tokenizer) -> None:
    ids, labels = get_template("qwen3").encode(tokenizer, REASONED, True)
    reasoning = [THINK_OPEN, NL, *Q2, NL, THINK_CLOSE, NL, NL]
    assert ids == [*PROMPT1, *reasoning, *A1, IM_END, NL]
    assert labels == [*masked(PROMPT1), *reasoning, *A1, IM_END, NL]


def test_qwen3_drops_reasoning_when_not_thinking(tokenizer) -> None:
    assert get_template("qwen3").encode(tokenizer, REASONED, False) == get_template("qwen3").encode(
        tokenizer, ONE, False
    )


@pytest.mark.parametrize("thinking", [True, False])
def test_qwen3_two_turns_with_system(tokenizer, thinking: bool) -> None:
    conversation = Conversation((Message("system", "Be brief."), *TWO.messages), "t:1")
    ids, labels = get_template("qwen3").encode(tokenizer, conversation, thinking)
    assert ids == [*SYSTEM_TURN, *PROMPT1, *THINK, *A1, IM_END, *PROMPT2, *THINK, *A2, IM_END, NL]
    if thinking:
        expected = [*masked(SYSTEM_TURN + PROMPT1), *THINK, *A1, IM_END, NL]
        expected += [*masked(PROMPT2[1:]), *THINK, *A2, IM_END, NL]
    else:
        expected = [*masked(SYSTEM_TURN + PROMPT1 + THINK), *A1, IM_END, NL]
        expected += [*masked(PROMPT2[1:] + THINK), *A2, IM_END, NL]
    assert labels == expected
    assert [i for i, t in enumerate(ids) if t == THINK_OPEN] == [32, 72]


@pytest.mark.parametrize("thinking", [True, False])
def test_tokenizer_template_matches_qwen3_on_one_turn_but_the_last_newline(
    tokenizer, thinking: bool
) -> None:
    """The tokenizer's own template trains up to its eos token; the "\n" after it is not."""
    ids, labels = get_template("qwen3").encode(tokenizer, ONE, thinking)
    assert get_template("tokenizer").encode(tokenizer, ONE, thinking) == (ids, [*labels[:-1], M])


PLAIN_CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@pytest.fixture
def chatml_tokenizer(tokenizer):
    """The fixture tokenizer with a plain ChatML Jinja template (no think blocks)."""
    copy = copy_module.deepcopy(tokenizer)
    copy.chat_template = PLAIN_CHATML
    return copy


def test_tokenizer_template_trains_only_the_last_reply(chatml_tokenizer) -> None:
    ids, labels = get_template("tokenizer").encode(chatml_tokenizer, TWO, True)
    history = [*PROMPT1, *A1, IM_END, *PROMPT2]
    assert ids == [*history, *A2, IM_END, NL]
    assert labels == [*masked(history), *A2, IM_END, M]


def test_tokenizer_template_refuses_a_template_that_is_not_prefix_stable(chatml_tokenizer) -> None:
    chatml_tokenizer.chat_template = PLAIN_CHATML.replace(
        "'<|im_start|>assistant", "'<|im_start|>bot"
    )
    with pytest.raises(DataError, match=r"^test:1: the tokenizer's chat template renders"):
        get_template("tokenizer").encode(chatml_tokenizer, ONE, True)


def test_render_prompt(tokenizer) -> None:
    question = [{"role": "user", "content": "What is fever?"}]
    header = "<|im_start|>user\nWhat is fever?<|im_end|>\n<|im_start|>assistant\n"
    qwen3 = get_template("qwen3")
    assert qwen3.render_prompt(tokenizer, question, True) == header
    assert qwen3.render_prompt(tokenizer, question, False) == header + "<think>\n\n</think>\n\n"
    assert get_template("qwen3_nothink").render_prompt(tokenizer, question, False) == header
    assert get_template("tokenizer").render_prompt(tokenizer, question, False) == (
        header + "<think>\n\n</think>\n\n"
    )
    history = [*WITH_SYSTEM.messages, Message("user", "And chills?")]
    assert get_template("chatml").render_prompt(tokenizer, history, True) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        + ONE_TURN_TEXT
        + "<|im_start|>user\nAnd chills?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_stop_words(tokenizer) -> None:
    assert get_template("qwen3").stop_strings == ("<|im_end|>",)
    assert get_template("qwen3").stop_token_ids(tokenizer) == [IM_END]
    assert get_template("chatml").stop_token_ids(tokenizer) == [IM_END, IM_START]
    assert get_template("default").stop_token_ids(tokenizer) == [IM_END]


def test_unknown_template_suggests_a_name() -> None:
    with pytest.raises(ConfigError) as info:
        get_template("qwen3_think")
    assert str(info.value).startswith(
        "unknown chat template 'qwen3_think' (did you mean 'qwen3_nothink'?); choose one of: "
        "chatml, default, empty, gemma,"
    )


def test_bad_role_order_is_a_data_error(tokenizer) -> None:
    bad = chat(("assistant", "Hi"), ("user", "Hello"))
    with pytest.raises(DataError, match=r"^test:1: roles out of order: turn 1 is 'assistant'"):
        get_template("qwen3").encode(tokenizer, bad, True)
    with pytest.raises(DataError, match="must end with a user turn"):
        get_template("qwen3").render_prompt(tokenizer, ONE.messages, True)
