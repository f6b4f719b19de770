"""Additive (Bahdanau-style) attention over a feature grid, as used by Show, Attend and Tell.

Xu et al. 2015, "Show, Attend and Tell: Neural Image Caption Generation with Visual Attention", Sec. 3.1.2
and Sec. 4.  For annotation vectors ``a`` (``[B, L, D]``: L locations of a CNN grid) and the previous
decoder state ``h`` (``[B, N]``):

    e_ti    = v^T tanh(W_a a_i + W_h h_{t-1})              (eq. 4, the MLP f_att)
    alpha_t = softmax_i(e_ti)                              (eq. 5)
    soft:   z_t = beta_t * sum_i alpha_ti a_i              (eq. 13, the expected context, Sec. 4.2)
    hard:   s_t ~ Multinoulli(alpha_t), z_t = beta_t * a_{s_t}   (eq. 8-9, Sec. 4.1)
    beta_t  = sigmoid(f_beta(h_{t-1}))                     (Sec. 4.2.1, the gating scalar)

``none`` is the no-attention baseline: the context is the mean feature (uniform weights).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnbench.mechanisms.registry import register_mixer

MODES = ("soft", "hard", "none")
CPU_CHUNK_ELEMENTS = 1 << 19  # 2 MiB of float32 per chunk of the attention MLP's hidden layer (CPU inference)


class AdditiveAttention(nn.Module):
    """The attention model f_att and the context function phi of Xu et al. 2015.

    Args:
        feat_dim: D, size of an annotation vector.
        hidden_dim: N, size of the decoder state conditioning the attention.
        attn_dim: size of the hidden layer of the attention MLP.
        gate: multiply the context by beta = sigmoid(W_beta h) (Sec. 4.2.1).
    """

    def __init__(self, feat_dim: int, hidden_dim: int, attn_dim: int, gate: bool = True):
        super().__init__()
        self.feat_proj = nn.Linear(feat_dim, attn_dim)  # W_a (applied once per image)
        self.hidden_proj = nn.Linear(hidden_dim, attn_dim, bias=False)  # W_h
        self.score = nn.Linear(attn_dim, 1)  # v
        self.gate = nn.Linear(hidden_dim, 1) if gate else None  # f_beta

    def project(self, feats: Tensor, grid: tuple[int, int] | None = None) -> Tensor:
        """W_a a: ``[B, L, D] -> [B, L, A]``; computed once per image and reused at every step (``grid`` is
        not needed: attention has no spatial structure)."""
        return self.feat_proj(feats)

    def weights(self, feats_proj: Tensor, h: Tensor) -> Tensor:
        """alpha_t (eq. 4-5): ``feats_proj [G, L, A]``, ``h [G*K, N]`` -> ``[G*K, L]``, sums to 1 over L.

        ``K = h.shape[0] // G`` rows of ``h`` share one image (the beams of beam search; K = 1 in training):
        row ``r`` attends over image ``r // K``, whose projected features are broadcast, never copied.
        """
        g, n_loc, a_dim = feats_proj.shape
        k = beams_per_image(feats_proj, h)
        hp = self.hidden_proj(h).view(g, k, 1, a_dim)
        if torch.is_grad_enabled() or feats_proj.device.type != "cpu":
            e = self.score(torch.tanh(feats_proj[:, None] + hp)).squeeze(-1)  # [G, K, L]
        else:
            e = self._cpu_inference_scores(feats_proj, hp)
        return torch.softmax(e.reshape(g * k, n_loc), dim=-1)

    def _cpu_inference_scores(self, feats_proj: Tensor, hp: Tensor) -> Tensor:
        """e = v^T tanh(u) + b for ``u = feats_proj[:, None] + hp`` (``[G, K, L, A]``) on CPU without grad.

        The [G, K, L, A] pre-activation dominates the attention's cost in beam search: it is built image
        chunk by image chunk in one reused cache-sized buffer (a fresh multi-MiB tensor costs a page fault per
        4 KiB), and tanh(u) = 2 sigmoid(2u) - 1 is used because torch's CPU tanh is ~3-5x slower than its
        sigmoid: v^T tanh(u) + b = (2v)^T sigmoid(2u) + (b - sum v), equal up to float rounding.
        """
        g, k, n_loc, a_dim = feats_proj.shape[0], hp.shape[1], feats_proj.shape[1], feats_proj.shape[2]
        v, b = self.score.weight[0], self.score.bias[0]
        v2, b2 = 2.0 * v, b - v.sum()
        hp2 = 2.0 * hp
        per_chunk = max(1, CPU_CHUNK_ELEMENTS // (k * n_loc * a_dim))
        buf = feats_proj.new_empty(min(g, per_chunk), k, n_loc, a_dim)
        e = feats_proj.new_empty(g, k, n_loc)
        for start in range(0, g, per_chunk):
            stop = min(g, start + per_chunk)
            u2 = buf[: stop - start]
            torch.add(hp2[start:stop], feats_proj[start:stop, None], alpha=2.0, out=u2)  # 2u
            torch.matmul(torch.sigmoid_(u2), v2, out=e[start:stop]).add_(b2)
        return e

    def forward(
        self,
        feats: Tensor,
        h: Tensor,
        feats_proj: Tensor | None = None,
        mode: str = "soft",
        sample: bool = True,
        use_expected: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """One attention step.

        Args:
            feats: annotation vectors a, ``[G, L, D]``.
            h: previous decoder state h_{t-1}, ``[B, N]`` with ``B = G*K``: K rows per image share its
                features (beam search; K = 1 otherwise).
            feats_proj: ``self.project(feats)`` if already computed.
            mode: ``soft`` | ``hard`` | ``none``.
            sample: hard mode only. True: draw s_t ~ alpha_t (training); False: take argmax_i alpha_ti.
            use_expected: hard mode only, bool ``[B]``: images that use the expected context instead of a
                sample (the paper's 0.5 chance per image, Sec. 4.1).

        Returns:
            z: context ``[B, D]`` (gated when ``gate``); alpha: ``[B, L]``; info: ``beta [B]`` and, in hard
            mode, ``location [B]`` (the sampled index), ``log_prob [B]`` (log alpha at that index, zero for
            images using the expected context) and ``entropy [B]`` (H[alpha_t]).
        """
        if mode not in MODES:
            raise ValueError(f"attention mode {mode!r} is not one of {MODES}")
        info: dict[str, Tensor] = {}
        g, n_loc, d = feats.shape
        k = beams_per_image(feats, h)
        if mode == "none":
            alpha = feats.new_full((g * k, n_loc), 1.0 / n_loc)
            z = feats.mean(dim=1).repeat_interleave(k, dim=0)
        else:
            if feats_proj is None:
                feats_proj = self.project(feats)
            alpha = self.weights(feats_proj, h)
            expected = torch.einsum("gkl,gld->gkd", alpha.view(g, k, n_loc), feats).reshape(g * k, d)
            if mode == "soft":
                z = expected
            else:
                if sample:
                    loc = torch.multinomial(alpha.detach(), 1).squeeze(1)
                else:
                    loc = alpha.argmax(dim=-1)
                picked = feats[torch.arange(g * k, device=feats.device) // k, loc]
                log_prob = torch.log(alpha.gather(1, loc[:, None]).squeeze(1).clamp_min(1e-12))
                if use_expected is not None:
                    z = torch.where(use_expected[:, None], expected, picked)
                    log_prob = log_prob.masked_fill(use_expected, 0.0)
                else:
                    z = picked
                info["location"] = loc
                info["log_prob"] = log_prob
                info["entropy"] = -(alpha * torch.log(alpha.clamp_min(1e-12))).sum(-1)
        if self.gate is not None:
            beta = torch.sigmoid(self.gate(h)).squeeze(-1)
            z = z * beta[:, None]
        else:
            beta = h.new_ones(h.shape[0])
        info["beta"] = beta
        return z, alpha, info


def beams_per_image(feats: Tensor, h: Tensor) -> int:
    """K, the number of decoder rows ``h [G*K, N]`` per image of ``feats [G, ...]``."""
    if h.shape[0] % feats.shape[0]:
        raise ValueError(
            f"decoder state has {h.shape[0]} rows, not a multiple of the {feats.shape[0]} images of the "
            "features"
        )
    return h.shape[0] // feats.shape[0]


def doubly_stochastic_penalty(alphas: Tensor, mask: Tensor | None = None) -> Tensor:
    """Sum_i (1 - Sum_t alpha_ti)^2 per caption (Xu et al. 2015, eq. 14, target 1).

    Args:
        alphas: ``[B, T, L]`` attention weights of each decoding step.
        mask: ``[B, T]`` 1 for real steps, 0 for padding (those steps do not count).

    Returns:
        ``[B]``; multiply by lambda and average over the batch for the loss.
    """
    if mask is not None:
        alphas = alphas * mask[..., None].to(alphas.dtype)
    return ((1.0 - alphas.sum(dim=1)) ** 2).sum(dim=-1)


def _additive_builder(mode: str):
    def build(dim: int, hidden_dim: int = 512, attn_dim: int = 512, gate: bool = True, **_):
        return AdditiveAttention(dim, hidden_dim, attn_dim, gate=gate)

    build.__name__ = build.__qualname__ = f"build_{mode}"
    build.__doc__ = f"Show, Attend and Tell's additive attention read in mode {mode!r} (Xu et al. 2015)."
    return build


# What the captioner needs to know of each mode (see the registry's docstring): soft attention's alpha are
# the weights of its expected context (eq. 13), hard attention samples a location from them in training
# (eq. 8-9) and reads soft attention's expected context when evaluated with hard_eval=expected; ``none`` never
# reads the grid through W_a and its uniform alpha attend to nothing.
XU = "Xu et al.: Show, Attend and Tell, ICML 2015"
ALPHA = "α_t = softmax_i(vᵀ tanh(W_a a_i + W_h h_{t-1}))"
MODE_INFO = {
    "soft": {
        "attention_weights": True,
        "paper": f"{XU}, Sec. 4.2 (eq. 4-5, 13)",
        "equation": f"{ALPHA},  z_t = β_t Σ_i α_{{t,i}} a_i",
    },
    "hard": {
        "attention_weights": True,
        "stochastic": True,
        "expected_form": "soft",
        "paper": f"{XU}, Sec. 4.1 (eq. 8-12)",
        "equation": f"{ALPHA},  s_t ~ Multinoulli(α_t),  z_t = β_t a_(s_t)  "
        "(REINFORCE, moving-average baseline)",
    },
    "none": {
        "reads_grid": False,
        "paper": f"{XU}: the no-attention baseline",
        "equation": "z_t = β_t mean_i a_i (uniform weights: the same image summary at every step)",
    },
}

for _mode in MODES:  # one module for the three modes; the decoder passes the mode to each read
    register_mixer("context", _mode, attr="attention", **MODE_INFO[_mode])(_additive_builder(_mode))
