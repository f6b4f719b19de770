"""Checkpoints written before the mixer catalogue (issue 19) still load strictly and give the same outputs.

The fixture (tests/fixtures/mixer_checkpoints.safetensors) was written by tests/fixtures/mixer_checkpoints.py
with the code at the branch start: one tiny model per family x mixer, its state dict and its outputs on fixed
inputs.
"""

from __future__ import annotations

import pytest
import torch
from fixtures.mixer_checkpoints import CASES, FILE, build, outputs
from safetensors.torch import load_file


@pytest.fixture(scope="module")
def saved() -> dict[str, torch.Tensor]:
    return load_file(str(FILE))


@pytest.mark.parametrize("case", list(CASES))
def test_old_checkpoint_loads_strictly_with_equal_outputs(case, saved):
    prefix = f"{case}::"
    state = {k[len(prefix) :]: v for k, v in saved.items() if k.startswith(prefix) and "::out::" not in k}
    expected = {k[len(prefix) + 5 :]: v for k, v in saved.items() if k.startswith(prefix + "out::")}
    assert state and expected
    model = build(case, seed=123)  # other initial weights: every number must come from the checkpoint
    model.load_state_dict(state, strict=True)
    got = outputs(case, model)
    assert set(got) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-4, atol=1e-5, msg=f"{case}: {key} changed")
