"""Global multi-head self-attention (ViT-style): every token attends to every token of the map.

Vaswani et al.: "Attention Is All You Need", NeurIPS 2017, Sec. 3.2.2 (multi-head attention,
``softmax(Q K^T / sqrt(d)) V``); Dosovitskiy et al.: "An Image is Worth 16x16 Words", ICLR 2021, Eq. 2-3
(MSA inside a pre-LN block). Position information is not part of the mechanism: the backbone may add a learned
absolute position embedding to the tokens before the first block.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attnbench.mechanisms.registry import attention_heads, register_mixer


class GlobalAttention(nn.Module):
    """Multi-head self-attention over all positions: x [B, C, H, W] -> [B, C, H, W].

    ``forward_tokens`` does the same on a token sequence [B, N, C] -> [B, N, C].

    Args:
        dim: channels ``C`` (split into ``num_heads`` heads of ``C / num_heads``).
        num_heads: attention heads.
        qkv_bias: bias in the query/key/value projection.
        attn_drop, proj_drop: dropout on attention weights / after the output projection.

    Visualisation: set ``explicit_attn = True`` and hook ``self.attn_map`` (identity) to receive the
    probabilities [B, heads, N, N]; otherwise ``F.scaled_dot_product_attention`` runs and none are formed.
    """

    def __init__(
        self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.attn_map = nn.Identity()  # hook point for the attention probabilities
        self.explicit_attn = False

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        drop = self.attn_drop if self.training else 0.0
        if self.explicit_attn:
            attn = self.attn_map(((q * self.head_dim**-0.5) @ k.transpose(-2, -1)).softmax(dim=-1))
            out = F.dropout(attn, drop, self.training) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)  # [B, heads, N, d]
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        out = self.forward_tokens(x.flatten(2).transpose(1, 2))
        return out.transpose(1, 2).reshape(b, c, h, w)

    @staticmethod
    def query_map(probs: torch.Tensor, h: int, w: int, query: tuple[int, int] | None = None) -> torch.Tensor:
        """Head-averaged attention of one query (default: the map centre) over the map: [B, H, W].

        ``probs`` are the probabilities [B, heads, N, N] of an ``h x w`` map (N = h*w).
        """
        i, j = query if query is not None else (h // 2, w // 2)
        return probs[:, :, i * w + j].mean(dim=1).view(-1, h, w)

    # what received_map shows and the unit of its colour bar (figures ask the mechanism, not its name)
    map_legend = ("attention received per token", "attention received (1 = uniform)")

    @staticmethod
    def received_map(probs: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Attention each position receives, head- and query-averaged, in units of the uniform share
        (1 = attended like any other position): [B, H, W], averaging to 1."""
        return (probs.mean(dim=1).mean(dim=1) * (h * w)).view(-1, h, w)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}"


@register_mixer(
    "spatial",
    "global_attention",
    attr="attn",
    position_blind=True,
    paper="Vaswani et al., NeurIPS 2017, Sec. 3.2.2; Dosovitskiy et al.: ViT, ICLR 2021, eq. 2-3",
    equation="y = softmax(Q Kᵀ/√d) V over all N positions (no position term)",
)
def build_global_attention(
    dim: int,
    num_heads: int | None = None,
    head_dim: int | None = 32,
    qkv_bias: bool = True,
    attn_drop: float = 0.0,
    proj_drop: float = 0.0,
    **_,
) -> GlobalAttention:
    """ViT-style MHSA over the whole map (blind to positions: a backbone adds a position embedding)."""
    heads = attention_heads(dim, num_heads, head_dim)
    return GlobalAttention(dim, heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
