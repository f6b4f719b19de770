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
    for mech in ("focal_modulation", "window_attention", "global_attention", "pooling", "dwconv", "random"):
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
    for mech in ("full", "local_1d", "local_2d", "focal_modulation"):
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
    assert g[("backbone", "focal_modulation", 28)] == pytest.approx(4.0, rel=0.05)
    assert g[("backbone", "window_attention", 28)] == pytest.approx(4.0, rel=0.05)
    assert g[("backbone", "pooling", 28)] == pytest.approx(4.0, rel=0.01)
    assert g[("backbone", "dwconv", 28)] == pytest.approx(4.0, rel=0.01)
    assert g[("backbone", "global_attention", 28)] > 8.0  # the N² term dominates
    assert g[("backbone", "random", 28)] == pytest.approx(16.0, rel=0.01)  # an N x N matrix product
    assert g[("image_transformer", "full", 16)] > 8.0
    assert g[("image_transformer", "local_1d", 16)] == pytest.approx(4.0, rel=0.1)
    assert g[("image_transformer", "local_2d", 16)] == pytest.approx(4.0, rel=0.3)
    assert g[("image_transformer", "focal_modulation", 16)] == pytest.approx(4.0, rel=0.05)
    assert all(r["fwd_bwd_ms"] > 0 and r["peak_mib"] >= 0 for r in rows)


def test_loader_mode_reports_per_worker_and_per_node_rates_against_the_step(tmp_path, capsys):
    import re

    from attnbench.bench import main

    root = tmp_path / "jpegs"
    assert main(["--make-jpegs", str(root), "--n", "4", "--classes", "2"]) == 0
    assert "4 train + 2 val JPEGs" in capsys.readouterr().out
    overrides = [
        "data=imagenet", f"data.root={root}", "data.num_classes=2", "data.image_size=32", "data.batch_size=2",
        "data.num_workers=1", "data.decoder=torchvision", "data.auto_augment=rand-m9-mstd0.5-inc1",
    ]  # fmt: skip
    argv = ["--loader", *overrides, "--batches", "1", "--step-batches", "1", "--local-ranks", "8"]
    assert main([*argv, "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    fields = {
        "measured": r"loader img/s, measured with 1 worker: ([\d.]+)",
        "per_worker": r"loader img/s per worker \(measured / 1\): ([\d.]+)",
        "per_node": r"loader img/s per node, estimate \(per worker x 1 worker\(s\) x 8 local rank\(s\) = 8 "
        r"cores decoding\): ([\d.]+)",
        "step": r"training step img/s per rank \(focalnet_micro, cpu, batch 2, 1 steps\): ([\d.]+)",
        "step_node": r"training step img/s per node \(x 8 local ranks\): ([\d.]+)",
        "ratio": r"ratio loader/step per rank: ([\d.]+); per node \(estimate\): ([\d.]+)",
    }
    values = {}
    for key, pattern in fields.items():
        match = re.search(pattern, out)
        assert match, f"{key} missing from:\n{out}"
        values[key] = float(match.group(1))
    assert all(v > 0 for v in values.values()), values
    assert values["per_node"] == pytest.approx(8 * values["per_worker"], rel=0.01, abs=1)


def test_every_spatial_mixer_has_a_cost_and_pooling_counts_its_window():
    from attnbench.mechanisms import create_mixer, list_mixers

    x = torch.randn(1, 16, 8, 8)
    for name in list_mixers("spatial"):
        mod = create_mixer("spatial", name, 16, num_heads=2, window_size=4, input_size=(8, 8))
        flops = forward_flops(mod, x)
        assert flops == 0 if name == "identity" else flops > 0, name
    pool = create_mixer("spatial", "pooling", 16)
    assert forward_flops(pool, x) == 16 * 8 * 8 * 9  # one addition per window element and output
    rand = create_mixer("spatial", "random", 16, input_size=(8, 8))
    assert forward_flops(rand, x) == 2 * 16 * 64 * 64  # [C, N] @ [N, N]
