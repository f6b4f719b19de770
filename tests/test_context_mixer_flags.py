"""The captioner names no context mixer: what it does with one follows the flags the mechanism registers
(``reads_grid``, ``attention_weights``, ``stochastic``, ``expected_form``: attnbench.mechanisms.registry)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from attnbench.mechanisms import registry
from attnbench.mechanisms.additive_attention import doubly_stochastic_penalty
from attnbench.mechanisms.registry import mixer_info, register_mixer
from attnbench.models.show_attend_tell import ShowAttendTell
from attnbench.tasks.captioning import CaptioningTask

VOCAB = ["<pad>", "<start>", "<end>", "<unk>"] + "zero one two three four five six seven eight nine".split()
NEW = "test_dot_read"  # a context mixer that no code of the package knows


class DotRead(nn.Module):
    """Multiplicative attention over the grid (Luong et al. 2015, "general" score): e_i = a_i^T W h,
    alpha = softmax_i(e), z = sum_i alpha_i a_i; ``feats [G, L, D]``, ``h [G*K, N]`` -> ``z [G*K, D]``."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.w = nn.Linear(hidden_dim, dim, bias=False)
        self.projected = 0  # calls of project(): once per image batch, never per step

    def project(self, feats: Tensor, grid: tuple[int, int]) -> Tensor:
        self.projected += 1
        return feats

    def forward(self, feats, h, feats_proj=None, mode=None, sample=False, use_expected=None):
        g, n_loc, d = feats.shape
        keys = feats if feats_proj is None else feats_proj
        e = torch.einsum("gld,gkd->gkl", keys, self.w(h).view(g, -1, d))
        alpha = torch.softmax(e, dim=-1)
        z = torch.einsum("gkl,gld->gkd", alpha, feats).reshape(-1, d)
        return z, alpha.reshape(-1, n_loc), {"beta": h.new_ones(h.shape[0])}


@pytest.fixture
def new_context_mixer():
    """``NEW`` registered with soft attention's flags for the test only, then removed from the registry."""

    @register_mixer("context", NEW, attr="attention", attention_weights=True)
    def build_dot_read(dim: int, hidden_dim: int = 32, **_) -> DotRead:
        return DotRead(dim, hidden_dim)

    soft = mixer_info("context", "soft")
    assert [getattr(mixer_info("context", NEW), k) for k in registry.CONTEXT_FLAGS] == [
        getattr(soft, k) for k in registry.CONTEXT_FLAGS
    ]
    yield NEW
    del registry._MIXERS["context"][NEW], registry._INFO["context"][NEW]


def test_a_context_mixer_registered_elsewhere_trains_in_the_captioner(new_context_mixer):
    torch.manual_seed(0)
    net = ShowAttendTell(
        VOCAB, mixer=new_context_mixer, in_channels=1, cnn_channels=(8, 8, 16), embed_dim=16,
        hidden_dim=32, attn_dim=16, dropout=0.0,
    )  # fmt: skip
    assert isinstance(net.attention, DotRead)
    task = CaptioningTask(net, mean=[0.0], std=[1.0], alpha_c=0.7, alpha_c_hard=0.0).train()
    task.log = lambda *args, **kwargs: None  # no trainer attached
    images = torch.rand(3, 1, 8, 32)
    captions = torch.tensor([[1, 5, 6, 2], [1, 7, 8, 2], [1, 4, 2, 0]])
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)

    loss = task.training_step((images, {"captions": captions}), 0)
    assert net.attention.projected == 1  # reads_grid: projected once for the 3 decoding steps
    loss.backward()
    assert net.attention.w.weight.grad.abs().sum() > 0  # the new mixer's weights learn from the caption
    before = net.attention.w.weight.detach().clone()
    optimizer.step()
    assert not torch.equal(before, net.attention.w.weight)

    # as soft attention: the doubly stochastic term with alpha_c (eq. 14), no REINFORCE, no sampling
    out = net(images, captions)
    assert "log_probs" not in out and torch.isnan(task.baseline)
    terms = task.losses(out, captions)
    mask = captions[:, 1:] != 0
    penalty = doubly_stochastic_penalty(out["alphas"], mask).sum() / mask.sum()
    assert terms["doubly_stochastic"].item() == pytest.approx(0.7 * penalty.item(), rel=1e-6)
    assert set(terms) == {"ce", "doubly_stochastic", "loss", "loss_per_caption"}
    assert terms["loss"].item() < loss.item()  # one step lowered the objective on its batch

    net.eval()
    result = net.beam_search(images, beam_size=2, max_len=4)
    for alphas, n in zip(result["alphas"], result["lengths"].tolist(), strict=True):  # its weights per word
        assert n > 0 and torch.allclose(alphas[:n].sum(-1), torch.ones(n), atol=1e-5)


def test_shipped_context_mixers_declare_the_papers_training():
    """Xu et al. 2015: soft attention is deterministic and regularised (Sec. 4.2), hard attention samples a
    location and is evaluated with soft attention's expected context (Sec. 4.1); ``none`` reads no grid;
    focal modulation's alpha is a gate mass, not attention weights."""
    flags = {
        name: tuple(getattr(mixer_info("context", name), k) for k in registry.CONTEXT_FLAGS)
        for name in ("soft", "hard", "none", "focal_modulation")
    }
    assert registry.CONTEXT_FLAGS == ("reads_grid", "attention_weights", "stochastic", "expected_form")
    assert flags == {
        "soft": (True, True, False, None),
        "hard": (True, True, True, "soft"),
        "none": (False, False, False, None),
        "focal_modulation": (True, False, False, None),
    }


def test_context_flags_are_checked_when_a_mechanism_registers():
    with pytest.raises(RuntimeError, match="are for context mixers"):
        register_mixer("spatial", "test_sampler", stochastic=True)
    with pytest.raises(RuntimeError, match="names its expected_form"):
        register_mixer("context", "test_sampler", stochastic=True)
    with pytest.raises(TypeError):
        register_mixer("context", "test_sampler", stochastc=True)
    assert "test_sampler" not in registry.list_mixers("context")
