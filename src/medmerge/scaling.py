"""Memory each stage needs, from the model's shape: the formulas behind docs/scaling.md.

All figures are bytes unless named otherwise; `GiB` divides by 2**30. The numbers in the
doc are printed by `python -m medmerge.scaling`, and a test checks the doc against it.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 2**30


@dataclass(frozen=True)
class Shape:
    """A decoder-only transformer as its config.json describes it."""

    name: str
    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied_embeddings: bool = False

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer in one decoder block."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        h, i = self.hidden, self.intermediate
        return {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    def parameters(self) -> int:
        block = (
            sum(a * b for a, b in self.linear_shapes().values())
            + 2 * self.hidden
            + 2 * self.head_dim
        )
        embeddings = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return self.layers * block + embeddings + self.hidden

    def lora_parameters(self, rank: int) -> int:
        """LoRA on every linear layer of every block (`all-linear`): r * (in + out) each."""
        return self.layers * sum(rank * (a + b) for a, b in self.linear_shapes().values())

    def largest_linear(self) -> int:
        return max(a * b for a, b in self.linear_shapes().values())


# Public configs of the three sizes the docs cover (Qwen2.5-7B, Qwen3-14B, Qwen3-32B).
QWEN_7B = Shape("7B (Qwen2.5-7B)", 3584, 28, 18944, 28, 4, 128, 152064)
QWEN3_14B = Shape("14B (Qwen3-14B)", 5120, 40, 17408, 40, 8, 128, 151936)
QWEN3_32B = Shape("32B (Qwen3-32B)", 5120, 64, 25600, 64, 8, 128, 151936)
SIZES = (QWEN_7B, QWEN3_14B, QWEN3_32B)


@dataclass(frozen=True)
class TrainSetup:
    gpus: int = 8
    micro_batch: int = 1
    seq_len: int = 2048
    rank: int = 16
    zero_stage: int = (
        3  # 0 = DDP, 2 = ZeRO-2 (optimizer+grads sharded), 3 = ZeRO-3/FSDP (weights too)
    )


def lora_training_bytes(shape: Shape, setup: TrainSetup) -> dict[str, float]:
    """Per-GPU memory of LoRA training with a bf16 frozen base and gradient checkpointing.

    weights: 2 bytes/param, divided by the GPUs under ZeRO-3/FSDP.
    LoRA states: fp32 params 4 + grads 4 + Adam moments 8 = 16 bytes per LoRA param;
      ZeRO-2 and -3 shard grads and moments (12 of the 16) across the GPUs.
    activations: checkpointing keeps each block's bf16 input, 2*b*s*h per block, plus one
      block recomputed in full, b*s*(34*h + 5*heads*s) bytes (Korthikanti et al. 2022, bf16).
    logits: the fp32 logits and their gradient for the loss, 2 * 4 * b * s * vocab.
    """
    p, lora = shape.parameters(), shape.lora_parameters(setup.rank)
    b, s, h = setup.micro_batch, setup.seq_len, shape.hidden
    weights = 2 * p / (setup.gpus if setup.zero_stage >= 3 else 1)
    sharded = 12 * lora / (setup.gpus if setup.zero_stage >= 2 else 1)
    lora_states = 4 * lora + sharded
    activations = 2 * b * s * h * shape.layers + b * s * (34 * h + 5 * shape.heads * s)
    logits = 8 * b * s * shape.vocab
    total = weights + lora_states + activations + logits
    return {
        "weights": weights,
        "lora_states": lora_states,
        "activations": activations,
        "logits": logits,
        "total": total,
    }


def merge_peak_bytes(shape: Shape, adapters: int = 2, rank: int = 16) -> float:
    """Streaming merge: the largest touched tensor held as bf16 input, fp32 result and one
    fp32 work copy (10 bytes per element), plus every adapter's factors in fp32."""
    return 10 * shape.largest_linear() + 4 * adapters * shape.lora_parameters(rank)


def inference_bytes(shape: Shape, batch: int = 16, seq_len: int = 2048) -> float:
    """Evaluation: bf16 weights plus a bf16 KV cache of batch x seq_len tokens."""
    kv = 2 * 2 * shape.layers * shape.kv_heads * shape.head_dim * batch * seq_len
    return 2 * shape.parameters() + kv


def table() -> str:
    """The Markdown table of docs/scaling.md (GiB per GPU, 8 GPUs, seq 2048, r 16)."""
    rows = [
        "| model | params | LoRA params (r 16) | DDP train / GPU | ZeRO-2 train / GPU | ZeRO-3 train / GPU | merge peak | eval (bs 16, 2k) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for shape in SIZES:
        per_stage = [
            lora_training_bytes(shape, TrainSetup(zero_stage=z))["total"] / GIB for z in (0, 2, 3)
        ]
        rows.append(
            f"| {shape.name} | {shape.parameters() / 1e9:.2f} B | {shape.lora_parameters(16) / 1e6:.1f} M | "
            + " | ".join(f"{v:.1f}" for v in per_stage)
            + f" | {merge_peak_bytes(shape) / GIB:.2f} | {inference_bytes(shape) / GIB:.1f} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
