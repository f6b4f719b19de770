"""SAGAN self-attention: a non-local block over all positions of a feature map.

Zhang, Goodfellow, Metaxas, Odena, "Self-Attention Generative Adversarial Networks", ICML 2019, Sec. 3.
For ``x: [B, C, H, W]`` with ``N = H*W`` positions:

    f(x) = W_f x   (C/8 channels)     g(x) = W_g x   (C/8)     h(x) = W_h x   (values)
    s_ij = f(x_i)^T g(x_j),  beta_{j,i} = softmax_i(s_ij)   (Eq. 1: how much output position j attends to
                                                             position i; each row j sums to 1 over i)
    o_j = W_v sum_i beta_{j,i} h(x_i)             (Eq. 2: back to C channels)

In today's terms g is the query projection (it reads the output position j) and f the key projection (it
reads the attended positions i); the module names them so: ``self.query`` is the paper's W_g and ``self.key``
its W_f (the official code's ``matmul(g, f^T)``).
    y = gamma * o + x,  gamma initialised to 0    (Eq. 3: the block is the identity at initialisation)

Two variants:

- ``pooled=True`` (the official TensorFlow release and BigGAN): values have C/2 channels and keys and
  values are 2x2 max-pooled, so there are N/4 key positions; the attention map is ``[B, N, N/4]``.
- ``pooled=False`` (the paper's Eq. 1-3 as written): values have C/8 channels, no pooling, map ``[B, N, N]``.

No 1/sqrt(d) scaling (the paper has none). Spectral normalisation of the four 1x1 convolutions is applied
by the model that owns the block (it normalises every conv/linear it contains).

As the spatial mixer ``self_attention`` of a backbone whose blocks add their own residual (FocalNet), the
module is built with ``residual=False`` and returns ``o = W_v(attend(x))`` (Eq. 2) without Eq. 3's gate.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from attnbench.errors import ConfigError
from attnbench.mechanisms.registry import register_mixer


class SelfAttention2d(nn.Module):
    """``y = gamma * W_v(attend(x)) + x`` for ``x: [B, C, H, W]``; returns ``[B, C, H, W]``.

    Args:
        channels: C (divisible by ``qk_ratio`` and by the value ratio).
        pooled: 2x2 max-pool keys and values with C/2 value channels (official/BigGAN); else the paper's
            un-pooled form with C/8 value channels. Pooling needs even H and W.
        qk_ratio: C / (query-key channels); 8 in the paper.
        residual: return Eq. 3's ``gamma * o + x`` (SAGAN's block); ``False``: the mixer output ``o`` alone
            (no gamma parameter), for a family that adds the residual itself.

    Set ``store_attention = True`` to keep the last map in ``last_attention`` (``[B, N_q, N_k]``, each row
    sums to 1, queries in row-major (h, w) order; keys on the pooled grid when ``pooled``), or call
    ``forward(x, return_attention=True)``. Nothing is stored by default.
    """

    def __init__(self, channels: int, pooled: bool = True, qk_ratio: int = 8, residual: bool = True):
        super().__init__()
        v_ratio = 2 if pooled else qk_ratio
        if channels % qk_ratio or channels % v_ratio:
            raise ValueError(f"channels={channels} must be divisible by {qk_ratio} and {v_ratio}")
        self.channels, self.pooled = channels, pooled
        self.query = nn.Conv2d(channels, channels // qk_ratio, 1, bias=False)  # g, W_g (output position j)
        self.key = nn.Conv2d(channels, channels // qk_ratio, 1, bias=False)  # f, W_f (attended position i)
        self.value = nn.Conv2d(channels, channels // v_ratio, 1, bias=False)  # h, W_h
        self.out = nn.Conv2d(channels // v_ratio, channels, 1, bias=False)  # W_v
        self.gated_residual = residual  # the family asks: does the module add SAGAN's gated residual itself?
        if residual:
            self.gamma = nn.Parameter(torch.zeros(()))
        self.store_attention = False
        self.last_attention: torch.Tensor | None = None

    def attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x: [B, C, H, W]`` → (``o: [B, C, H, W]`` before gamma, ``beta: [B, N_q, N_k]``)."""
        b, _, h, w = x.shape
        q = self.query(x).flatten(2)  # [B, C/8, N]
        k, v = self.key(x), self.value(x)
        if self.pooled:
            if h % 2 or w % 2:
                raise ValueError(f"pooled self-attention needs even H and W, got {h}x{w}")
            k, v = F.max_pool2d(k, 2), F.max_pool2d(v, 2)
        k, v = k.flatten(2), v.flatten(2)  # [B, C/8, N_k], [B, C_v, N_k]
        beta = torch.softmax(torch.bmm(q.transpose(1, 2), k), dim=-1)  # [B, N, N_k], Eq. 1
        o = torch.bmm(v, beta.transpose(1, 2)).view(b, -1, h, w)  # [B, C_v, H, W]
        return self.out(o), beta  # Eq. 2

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        o, beta = self.attention(x)
        y = self.gamma * o + x if self.gated_residual else o  # Eq. 3
        if self.store_attention:
            self.last_attention = beta.detach()
        return (y, beta) if return_attention else y

    # what received_map shows and the unit of its colour bar (figures ask the mechanism, not its name)
    map_legend = ("attention received per token", "attention received (1 = uniform)")

    def received_map(self, beta: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Attention each key position receives, summed over the queries (``beta [B, N, N_k]`` of an
        ``h × w`` map, Eq. 1) in units of the uniform share ``N / N_k``: ``[B, h, w]``, averaging to 1. With
        pooled keys (the official variant) each 2 × 2 pooled key's value fills its four positions."""
        kh, kw = (h // 2, w // 2) if self.pooled else (h, w)
        received = beta.sum(dim=1) * (beta.shape[-1] / beta.shape[1])  # [B, N_k]
        grid = received.view(-1, kh, kw)
        if self.pooled:
            grid = grid.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
        return grid

    def extra_repr(self) -> str:
        return f"channels={self.channels}, pooled={self.pooled}"


@register_mixer(
    "spatial",
    "self_attention",
    attr="attn",
    position_blind=True,
    paper="Zhang, Goodfellow, Metaxas, Odena: Self-Attention GANs, ICML 2019, Sec. 3 (eq. 1-2)",
    equation="o_j = W_v Σ_i softmax_i(f(x_i)ᵀ g(x_j)) h(x_i)  (f, g: C/8 channels; no 1/√d)",
)
def build_self_attention(
    dim: int, attn_variant: str = "paper", gated_residual: bool = False, **_
) -> SelfAttention2d:
    """SAGAN's non-local block; ``attn_variant`` = ``official`` (pooled keys/values) | ``paper`` (un-pooled,
    the default outside SAGAN: it works on maps of any size); with ``gated_residual`` Eq. 3's
    ``gamma * o + x`` (SAGAN), else ``o`` (a block that adds its own residual)."""
    if dim % 8:
        raise ConfigError(
            f"the self-attention block gets {dim} channels; it needs a multiple of 8 (query/key "
            "channels are C/8): widen the network (model.ch, g_channels/d_channels) or move attn_res_g/_d"
        )
    return SelfAttention2d(dim, pooled=attn_variant == "official", residual=gated_residual)
