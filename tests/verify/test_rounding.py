"""Verify rounds x = W + delta from its fp32 copy; the merge rounds the fp64 x directly. Both
give the same bits only because torch converts fp64 to bf16 and fp16 through fp32 (double
rounding). This pins that: a torch that rounded fp64 directly would make verify report
1-ulp differences on values just past a tie."""

from __future__ import annotations

import pytest
import torch


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fp64_rounds_to_half_precision_through_fp32(dtype):
    generator = torch.Generator().manual_seed(0)
    if dtype == torch.bfloat16:  # bf16 patterns, then the fp32 value halfway to the next one
        bits = torch.randint(0x0080, 0x7F00, (20000,), generator=generator, dtype=torch.int32)
        ties = ((bits << 16) | 0x8000).view(torch.float32).double()
    else:
        bits = torch.randint(0x0400, 0x7B00, (20000,), generator=generator, dtype=torch.int16)
        ties = (bits.view(dtype).double() + (bits + 1).view(dtype).double()) / 2
    x = torch.cat([ties * (1 + 2.0**-40), -ties * (1 - 2.0**-40), torch.randn(20000).double()])
    direct = x.to(dtype)
    assert torch.equal(direct.view(torch.int16), x.float().to(dtype).view(torch.int16))
    # the cases are real: each of the first 20000 lies just above a tie, so rounding it once
    # would round it up; through fp32 some of them (an even value below) round down
    rounded_down = (direct[:20000].double() < x[:20000]).sum()
    assert rounded_down > 0
