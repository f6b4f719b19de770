"""(Shifted) window multi-head self-attention, the token mixer of the Swin Transformer.

Liu et al.: "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows", ICCV 2021
(arXiv:2103.14030), Sec. 3.2. Tokens attend only inside non-overlapping ``w x w`` windows:
``Attention(Q, K, V) = SoftMax(Q K^T / sqrt(d) + B) V`` (Eq. 4), where ``B`` is read from a learned table of
``(2w - 1)^2`` relative offsets per head. Every other block cyclically shifts the map by ``w // 2`` before
partitioning, and a region mask stops tokens that were not neighbours before the shift from attending to each
other (Sec. 3.2, "efficient batch computation for shifted configuration"). When the map is no larger than
the window along an axis, the window shrinks to the map and that axis is not shifted (the Swin rule). A map
that the window does not tile is zero-padded at the bottom and right after the shift, attended as timm's
``SwinTransformerBlock`` does (the padded positions are keys like any other, the region mask is that of the
padded map), and the output is cropped back to the map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attnbench.errors import ConfigError
from attnbench.mechanisms.registry import attention_heads, register_mixer


def window_partition(x: torch.Tensor, wh: int, ww: int) -> torch.Tensor:
    """[B, H, W, C] -> [B, nW, wh*ww, C], windows in row-major order."""
    b, h, w, c = x.shape
    x = x.view(b, h // wh, wh, w // ww, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // wh) * (w // ww), wh * ww, c)


def window_reverse(windows: torch.Tensor, wh: int, ww: int, h: int, w: int) -> torch.Tensor:
    """[B, nW, wh*ww, C] -> [B, H, W, C]; inverse of :func:`window_partition`."""
    b, c = windows.shape[0], windows.shape[-1]
    x = windows.view(b, h // wh, w // ww, wh, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


def relative_position_index(wh: int, ww: int, window_size: int) -> torch.Tensor:
    """LongTensor[wh*ww, wh*ww]: row of the ``(2*window_size - 1)^2`` bias table for each (query, key) pair.

    The offset ``(dy, dx)`` of key relative to query maps to ``(dy + w - 1) * (2w - 1) + (dx + w - 1)``, so a
    smaller window (``wh, ww <= window_size``) reads a consistent sub-block of the same table.
    """
    coords = torch.stack(torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")).flatten(
        1
    )  # [2, N]
    rel = coords[:, :, None] - coords[:, None, :]  # [2, N, N]
    return (rel[0] + window_size - 1) * (2 * window_size - 1) + (rel[1] + window_size - 1)


def shifted_window_mask(h: int, w: int, wh: int, ww: int, sh: int, sw: int, device=None) -> torch.Tensor:
    """BoolTensor[nW, N, N], True where query and key lie in the same region of the shifted map.

    After rolling the map by ``(-sh, -sw)``, the last windows along each shifted axis hold pieces from
    opposite edges of the image; each piece is a region, and attention across regions is forbidden.
    """
    labels = torch.zeros(1, h, w, 1, device=device)
    rows = (slice(0, h - wh), slice(h - wh, h - sh), slice(h - sh, h)) if sh else (slice(0, h),)
    cols = (slice(0, w - ww), slice(w - ww, w - sw), slice(w - sw, w)) if sw else (slice(0, w),)
    region = 0
    for r in rows:
        for c in cols:
            labels[:, r, c, :] = region
            region += 1
    labels = window_partition(labels, wh, ww)[0, :, :, 0]  # [nW, N]
    return labels[:, :, None] == labels[:, None, :]


class WindowAttention(nn.Module):
    """Window (or shifted-window) MHSA with relative position bias: x [B, C, H, W] -> [B, C, H, W].

    Args:
        dim: channels ``C`` (split into ``num_heads`` heads).
        num_heads: attention heads.
        window_size: window side ``w``; a map it does not tile is padded (module docstring).
        shift: shift the windows by ``w // 2`` (the odd blocks of a Swin stage).
        qkv_bias: bias in the query/key/value projection.
        attn_drop, proj_drop: dropout on attention weights / after the output projection.

    Visualisation: set ``explicit_attn = True`` and hook ``self.attn_map`` (identity) to receive the
    probabilities [B, nW, heads, N, N] (N = tokens per window); otherwise attention runs through
    ``F.scaled_dot_product_attention`` and no probabilities exist.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int = 7,
        shift: bool = False,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
        self.dim, self.num_heads, self.window_size, self.shift = dim, num_heads, window_size, shift
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        index = relative_position_index(window_size, window_size, window_size)
        self.register_buffer("relative_position_index", index, persistent=False)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.attn_map = nn.Identity()  # hook point for the attention probabilities
        self.explicit_attn = False

    def window_geometry(self, h: int, w: int) -> tuple[int, int, int, int]:
        """(wh, ww, sh, sw): effective window and shift for an ``h x w`` map (Swin's small-map rule)."""
        wh, ww = min(self.window_size, h), min(self.window_size, w)
        sh = wh // 2 if self.shift and h > self.window_size else 0
        sw = ww // 2 if self.shift and w > self.window_size else 0
        return wh, ww, sh, sw

    def attention_bias(self, h: int, w: int) -> torch.Tensor:
        """Float additive mask [nW, heads, N, N]: relative position bias, -inf across shifted regions."""
        wh, ww, sh, sw = self.window_geometry(h, w)
        if (wh, ww) == (self.window_size, self.window_size):
            index = self.relative_position_index
        else:
            index = relative_position_index(wh, ww, self.window_size).to(
                self.relative_position_bias_table.device
            )
        bias = self.relative_position_bias_table[index.reshape(-1)].view(wh * ww, wh * ww, -1)
        bias = bias.permute(2, 0, 1).unsqueeze(0)  # [1, heads, N, N]
        if sh or sw:
            allowed = shifted_window_mask(h, w, wh, ww, sh, sw, device=bias.device)  # [nW, N, N]
            bias = bias.masked_fill(~allowed[:, None], float("-inf"))
        return bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        wh, ww, sh, sw = self.window_geometry(h, w)
        x = x.permute(0, 2, 3, 1)  # [B, H, W, C]
        if sh or sw:
            x = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2))
        hp, wp = h + (-h % wh), w + (-w % ww)  # padded to whole windows (after the shift, as timm)
        if (hp, wp) != (h, w):
            x = F.pad(x, (0, 0, 0, wp - w, 0, hp - h))
        windows = window_partition(x, wh, ww)  # [B, nW, N, C]
        nw, n = windows.shape[1], windows.shape[2]
        qkv = self.qkv(windows).view(b, nw, n, 3, self.num_heads, self.head_dim).permute(3, 0, 1, 4, 2, 5)
        q, k, v = qkv.unbind(0)  # each [B, nW, heads, N, d]
        bias = self.attention_bias(hp, wp).to(q.dtype)  # [nW or 1, heads, N, N]
        drop = self.attn_drop if self.training else 0.0
        # Training on CPU: a bias that needs its gradient sends SDPA to its unfused math path, which adds
        # -inf row checks and copies (0.8x the explicit product below, fwd+bwd); elsewhere SDPA's kernels win.
        explicit = self.explicit_attn or (
            q.device.type == "cpu"
            and torch.is_grad_enabled()
            and self.relative_position_bias_table.requires_grad
        )
        if explicit:
            attn = (q * self.head_dim**-0.5) @ k.transpose(-2, -1) + bias
            attn = self.attn_map(attn.softmax(dim=-1))
            out = F.dropout(attn, drop, self.training) @ v
        else:
            # 4-d [B·nW, heads, N, d] inputs reach the fused kernels (5-d ones fall back to the slow math
            # path, 2-4x slower on CPU); a per-window mask (shifted windows) is expanded over the batch to
            # match
            q4, k4, v4 = (t.reshape(b * nw, self.num_heads, n, self.head_dim) for t in (q, k, v))
            if bias.shape[0] > 1:
                bias = bias.unsqueeze(0).expand(b, -1, -1, -1, -1).reshape(b * nw, self.num_heads, n, n)
            out = F.scaled_dot_product_attention(q4, k4, v4, attn_mask=bias, dropout_p=drop)
            out = out.view(b, nw, self.num_heads, n, self.head_dim)
        out = self.proj(out.transpose(2, 3).reshape(b, nw, n, c))  # [B, nW, N, C]
        out = window_reverse(out, wh, ww, hp, wp)[:, :h, :w]
        if sh or sw:
            out = torch.roll(out, shifts=(sh, sw), dims=(1, 2))
        return self.proj_drop(out).permute(0, 3, 1, 2)

    def query_map(
        self, probs: torch.Tensor, h: int, w: int, query: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Head-averaged attention of one query (default: the map centre) over the ``h x w`` map: [B, H, W].

        ``probs`` are the probabilities [B, nW, heads, N, N]; positions outside the query's (shifted) window
        get zero, which is what the mechanism does.
        """
        wh, ww, sh, sw = self.window_geometry(h, w)
        i, j = query if query is not None else (h // 2, w // 2)
        ri, rj = (i - sh) % h, (j - sw) % w  # position after the cyclic shift
        hp, wp = h + (-h % wh), w + (-w % ww)  # the padded map (see forward)
        window = (ri // wh) * (wp // ww) + rj // ww
        row = probs[:, window, :, (ri % wh) * ww + rj % ww].mean(dim=1).view(-1, wh, ww)
        out = probs.new_zeros(probs.shape[0], hp, wp)
        top, left = (ri // wh) * wh, (rj // ww) * ww
        out[:, top : top + wh, left : left + ww] = row
        return torch.roll(out[:, :h, :w], shifts=(sh, sw), dims=(1, 2))

    # what received_map shows and the unit of its colour bar (figures ask the mechanism, not its name)
    map_legend = ("attention received per token", "attention received (1 = uniform)")

    def received_map(self, probs: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Attention each position receives, head-averaged and averaged over the queries of its window, in
        units of the uniform share (1 = every query of the window attends to it as to any other): [B, H, W].

        A map over the whole ``h x w`` grid (where ``query_map`` lights one window only), so a stage's map
        shows which positions the mixer draws on. Each window's map averages to 1.
        """
        wh, ww, sh, sw = self.window_geometry(h, w)
        hp, wp = h + (-h % wh), w + (-w % ww)  # the padded map (see forward)
        b, n_windows = probs.shape[0], probs.shape[1]
        received = probs.mean(dim=2).mean(dim=2) * (wh * ww)  # [B, nW, N]
        grid = received.view(b, hp // wh, wp // ww, wh, ww).permute(0, 1, 3, 2, 4).reshape(b, hp, wp)
        assert n_windows == (hp // wh) * (wp // ww)
        return torch.roll(grid[:, :h, :w], shifts=(sh, sw), dims=(1, 2))

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_heads={self.num_heads}, window_size={self.window_size}, shift={self.shift}"
        )


@register_mixer(
    "spatial",
    "window_attention",
    attr="attn",
    paper="Liu et al.: Swin Transformer, ICCV 2021, Sec. 3.2 (eq. 4)",
    equation="y = softmax(Q Kᵀ/√d + B) V inside each w×w window; windows shifted by w/2 every other block",
)
def build_window_attention(
    dim: int,
    num_heads: int | None = None,
    head_dim: int | None = 32,
    window_size: int = 7,
    block_index: int = 0,
    qkv_bias: bool = True,
    attn_drop: float = 0.0,
    proj_drop: float = 0.0,
    **_,
) -> WindowAttention:
    """Swin's mixer: windows of ``window_size``, shifted in the odd blocks of a stage (``block_index``)."""
    if window_size < 1:
        raise ConfigError(f"window_size={window_size}: expected a positive window side")
    heads = attention_heads(dim, num_heads, head_dim)
    return WindowAttention(
        dim, heads, window_size=window_size, shift=block_index % 2 == 1, qkv_bias=qkv_bias,
        attn_drop=attn_drop, proj_drop=proj_drop,
    )  # fmt: skip
