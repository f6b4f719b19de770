"""The cost benchmark measures what it claims: attention FLOPs grow quadratically, the others linearly."""

import pytest
import torch

from attnbench.bench import growth, measure
from attnbench.metrics.flops import forward_flops


def test_attention_flops_are_counted_on_cpu():
    q = torch.randn(2, 3, 10, 8)

    class SDPA(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.scaled_dot_product_attention(x, x, x)

    assert forward_flops(SDPA(), q) == 2 * 2 * 3 * 10 * 10 * (8 + 8)


@pytest.mark.slow
def test_measured_flops_scale_as_each_mechanism_should():
    rows = []
    for mech in ("focal_modulation", "window_attention", "global_attention"):
        for size in (14, 28):
            rows.append(
                measure(
                    {
                        "family": "backbone",
                        "mechanism": mech,
                        "size": size,
                        "dim": 32,
                        "heads": 2,
                        "batch": 1,
                        "repeats": 1,
                        "device": "cpu",
                    }
                )
            )
    for mech in ("full", "local_1d", "local_2d"):
        for size in (8, 16):
            rows.append(
                measure(
                    {
                        "family": "image_transformer",
                        "mechanism": mech,
                        "size": size,
                        "dim": 32,
                        "heads": 2,
                        "batch": 1,
                        "repeats": 1,
                        "device": "cpu",
                    }
                )
            )
    g = growth(rows, "gflops")  # 4x tokens
    assert g[("focal_modulation", 28)] == pytest.approx(4.0, rel=0.05)
    assert g[("window_attention", 28)] == pytest.approx(4.0, rel=0.05)
    assert g[("global_attention", 28)] > 8.0  # the N² term dominates
    assert g[("full", 16)] > 8.0
    assert g[("local_1d", 16)] == pytest.approx(4.0, rel=0.1)
    assert g[("local_2d", 16)] == pytest.approx(4.0, rel=0.3)
    assert all(r["fwd_bwd_ms"] > 0 and r["peak_mib"] >= 0 for r in rows)
