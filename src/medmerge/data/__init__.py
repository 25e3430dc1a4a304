"""Data stage: readers for the published formats, chat templates, label masks and packing."""

from medmerge.data.packing import (
    build_pt_examples,
    build_sft_examples,
    collate,
    infer_seqlen,
    pack,
    supervised_example,
)
from medmerge.data.readers import Conversation, Message, read_pt_texts, read_sft
from medmerge.data.templates import IGNORE_INDEX, TEMPLATES, ChatTemplate, get_template

__all__ = [
    "IGNORE_INDEX",
    "TEMPLATES",
    "ChatTemplate",
    "Conversation",
    "Message",
    "build_pt_examples",
    "build_sft_examples",
    "collate",
    "get_template",
    "infer_seqlen",
    "pack",
    "read_pt_texts",
    "read_sft",
    "supervised_example",
]
