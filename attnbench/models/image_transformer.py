"""Image Transformer (Parmar et al., ICML 2018): an autoregressive decoder over sub-pixels.

Every sub-pixel (c, h, w) is one position of an ``H × (W·C)`` grid (channels interleaved along each
row, Sec. 3.1). Its input is the √d-scaled embedding (one table per channel) of the sub-pixel generated
just before it, plus a 2D position encoding (half the width encodes the row, half the column-and-channel,
Sec. 3.1) and an optional class embedding (Sec. 4). Decoder blocks (self-attention + position-wise FFN,
Sec. 3.2) use full, local 1D or local 2D causal attention (:mod:`attnbench.mechanisms.local_attention`), or
causal focal modulation in raster order (``mixer="focal_modulation"``,
:mod:`attnbench.mechanisms.causal_focal_modulation`) as the modulation counterpart.
The output is a ``levels``-way categorical per sub-pixel, or a discretized mixture of logistics
(Salimans et al. 2017; Sec. 3.3) returned as normalised log-probabilities over the same ``levels`` bins.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from attnbench.errors import ConfigError
from attnbench.mechanisms.causal_focal_modulation import CausalFocalModulation
from attnbench.mechanisms.local_attention import ATTENTION_KINDS, GridSelfAttention
from attnbench.models.registry import register_model

MIXERS = (*ATTENTION_KINDS, "focal_modulation")


def sinusoid_2d(rows: int, cols: int, dim: int) -> torch.Tensor:
    """[rows·cols, dim]: sin/cos of the row in the first dim/2 features, of the column in the rest."""
    half = dim // 2

    def enc(n: int, d: int) -> torch.Tensor:
        pos = torch.arange(n, dtype=torch.float32)[:, None]
        freq = torch.exp(-math.log(10000.0) * torch.arange(0, d, 2, dtype=torch.float32) / max(d, 1))
        out = torch.zeros(n, d)
        out[:, 0::2] = torch.sin(pos * freq)
        out[:, 1::2] = torch.cos(pos * freq)[:, : d // 2]
        return out

    r, c = enc(rows, half), enc(cols, dim - half)
    out = torch.cat([r[:, None].expand(rows, cols, half), c[None].expand(rows, cols, dim - half)], -1)
    return out.reshape(rows * cols, dim)


def dmol_log_probs(params: torch.Tensor, levels: int) -> torch.Tensor:
    """Discretized mixture of logistics over ``levels`` bins of [-1, 1].

    Args:
        params: [..., 3K] mixture logits, means and log-scales.
    Returns:
        [..., levels] log-probabilities (they sum to exactly 1 in probability: the bins tile the real line).
    """
    logit_pi, mu, log_s = params.unflatten(-1, (3, -1)).unbind(-2)  # each [..., K]
    log_s = log_s.clamp(min=-7.0)
    centers = torch.linspace(-1.0, 1.0, levels, device=params.device, dtype=params.dtype)
    half = 1.0 / (levels - 1)
    x = centers.view(*([1] * (params.dim() - 1)), levels, 1)  # [..., levels, 1]
    inv_s = torch.exp(-log_s).unsqueeze(-2)
    a = (x + half - mu.unsqueeze(-2)) * inv_s  # upper edge
    b = (x - half - mu.unsqueeze(-2)) * inv_s  # lower edge
    # log(σ(a) − σ(b)) = log σ(a) + log σ(−b) + log(1 − e^{−(a−b)}); the edge bins keep one tail
    first = torch.zeros(levels, 1, dtype=torch.bool, device=params.device)
    last = first.clone()
    first[0], last[-1] = True, True
    term_a = torch.where(last, 0.0, F.logsigmoid(a))
    term_b = torch.where(first, 0.0, F.logsigmoid(-b))
    term_d = torch.where(first | last, 0.0, torch.log((-torch.expm1(-(a - b))).clamp(min=1e-30)))
    log_p = term_a + term_b + term_d  # [..., levels, K]
    return torch.logsumexp(log_p + F.log_softmax(logit_pi, -1).unsqueeze(-2), dim=-1)


class DecoderBlock(nn.Module):
    """Self-attention + FFN with residuals; LayerNorm before (``pre``) or after (``post``) each sublayer."""

    def __init__(
        self,
        dim: int,
        heads: int,
        ffn_dim: int,
        dropout: float,
        attn_dropout: float,
        norm: str,
        focal: dict | None = None,
        **attn_kw,
    ):
        super().__init__()
        self.pre = norm == "pre"
        # the token mixer (named ``attn`` for every variant: checkpoints keep their keys)
        if attn_kw["kind"] == "focal_modulation":
            self.attn = CausalFocalModulation(dim, **(focal or {}))
        else:
            self.attn = GridSelfAttention(dim, heads, attn_dropout=attn_dropout, **attn_kw)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim)
        )
        self.drop = nn.Dropout(dropout)

    def _sub(self, x, fn, norm):
        if self.pre:
            return x + self.drop(fn(norm(x)))
        return norm(x + self.drop(fn(x)))

    def forward(self, x: torch.Tensor, grid) -> torch.Tensor:
        x = self._sub(x, lambda t: self.attn(t, grid), self.norm1)
        return self._sub(x, self.ffn, self.norm2)

    def step(self, x: torch.Tensor, index: int, cache: dict) -> torch.Tensor:
        x = self._sub(x, lambda t: self.attn.step(t, index, cache), self.norm1)
        return self._sub(x, self.ffn, self.norm2)


class ImageTransformer(nn.Module):
    """Autoregressive Image Transformer over integer images.

    ``num_classes`` and ``class_conditional`` (default: ``num_classes > 0``) add a learned class embedding to
    every position; ``forward`` and ``sample`` then take labels.

    ``forward(x LongTensor[B, C, H, W] in [0, levels), y LongTensor[B] | None) -> [B, levels, C, H, W]``
    logits (log-probabilities for ``output="dmol"``); the logits of a sub-pixel depend only on the sub-pixels
    before it in :meth:`generation_order`.
    """

    def __init__(
        self,
        image_size=8,
        channels: int = 1,
        levels: int = 256,
        dim: int = 128,
        depth: int = 4,
        heads: int = 4,
        ffn_dim: int | None = None,
        mixer: str = "local_2d",
        block_length: int = 64,
        query_shape=(4, 4),
        memory_flange=(4, 4),
        focal_levels: int = 2,
        focal_window: int = 3,
        dropout: float = 0.1,
        attn_dropout: float = 0.0,
        norm: str = "pre",
        pos_encoding: str = "sinusoidal",
        num_classes: int = 0,
        class_conditional: bool | None = None,
        output: str = "categorical",
        num_mixtures: int = 10,
    ):
        super().__init__()
        h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(int(s) for s in image_size)
        checks = [
            (mixer in MIXERS, f"mixer={mixer!r}: expected one of {', '.join(MIXERS)}"),
            (norm in ("pre", "post"), f"norm={norm!r}: expected 'pre' or 'post'"),
            (
                pos_encoding in ("sinusoidal", "learned"),
                f"pos_encoding={pos_encoding!r}: expected 'sinusoidal' or 'learned'",
            ),
            (output in ("categorical", "dmol"), f"output={output!r}: expected 'categorical' or 'dmol'"),
            (levels >= 2, f"levels={levels}: expected >= 2"),
            (dim % heads == 0 and dim % 2 == 0, f"dim={dim} must be even and divisible by heads={heads}"),
            (
                min(h, w, channels, depth) >= 1,
                f"image_size={image_size}, channels={channels}, depth={depth} must be positive",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)
        if class_conditional is None:
            class_conditional = num_classes > 0
        if class_conditional and num_classes < 1:
            raise ConfigError(f"class_conditional=true needs num_classes >= 1, got num_classes={num_classes}")
        num_classes = num_classes if class_conditional else 0
        self.class_conditional = bool(class_conditional)
        self.mixer = mixer
        self.image_shape = (channels, h, w)
        self.grid = (h, w * channels)
        self.levels, self.dim, self.num_classes, self.output = levels, dim, num_classes, output
        self.embed = nn.Embedding(channels * levels, dim)  # one `levels`-row table per channel
        nn.init.normal_(self.embed.weight, std=dim**-0.5)
        self.start = nn.Parameter(torch.zeros(dim))  # input of the first generated sub-pixel
        if pos_encoding == "sinusoidal":
            self.register_buffer("pos", sinusoid_2d(*self.grid, dim), persistent=False)
        else:
            self.row_embed = nn.Parameter(torch.randn(self.grid[0], 1, dim) * 0.02)
            self.col_embed = nn.Parameter(torch.randn(1, self.grid[1], dim) * 0.02)
        self.class_embed = nn.Embedding(num_classes, dim) if num_classes > 0 else None
        self.drop = nn.Dropout(dropout)
        attn_kw = dict(
            kind=mixer,
            block_length=block_length,
            query_shape=tuple(query_shape),
            memory_flange=tuple(memory_flange),
        )
        try:
            self.blocks = nn.ModuleList(
                DecoderBlock(
                    dim,
                    heads,
                    ffn_dim or 4 * dim,
                    dropout,
                    attn_dropout,
                    norm,
                    focal={"focal_levels": focal_levels, "focal_window": focal_window},
                    **attn_kw,
                )
                for _ in range(depth)
            )
        except ValueError as e:
            raise ConfigError(str(e)) from e
        self.norm = nn.LayerNorm(dim) if norm == "pre" else nn.Identity()
        self.head = nn.Linear(dim, levels if output == "categorical" else 3 * num_mixtures)
        n = h * w * channels
        order = self.blocks[0].attn.generation_order(*self.grid)
        prev = torch.empty(n, dtype=torch.long)
        prev[order[1:]] = order[:-1]
        prev[order[0]] = n  # the start vector
        self.register_buffer("order", order, persistent=False)
        self.register_buffer("prev", prev, persistent=False)
        self.register_buffer("channel_of", torch.arange(n) % channels, persistent=False)

    # ---- layout helpers ----------------------------------------------------------------------------------
    def _to_raster(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, N] in raster order of the H × (W·C) grid."""
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)

    def _from_raster(self, t: torch.Tensor) -> torch.Tensor:
        """[B, N, K] -> [B, K, C, H, W]."""
        c, h, w = self.image_shape
        return t.view(t.shape[0], h, w, c, -1).permute(0, 4, 3, 1, 2)

    def _position(self) -> torch.Tensor:
        if hasattr(self, "pos"):
            return self.pos
        return (self.row_embed + self.col_embed).reshape(-1, self.dim)

    def _check(self, x: torch.Tensor, y):
        if x.dtype != torch.long or tuple(x.shape[1:]) != self.image_shape:
            shape = ", ".join(map(str, self.image_shape))
            raise ValueError(f"expected LongTensor[B, {shape}], got {x.dtype} {tuple(x.shape)}")
        if self.class_embed is not None and y is None:
            raise ValueError("this model is class-conditional: pass labels y")

    def _values_embedding(self, raster: torch.Tensor) -> torch.Tensor:
        return self.embed(self.channel_of * self.levels + raster) * math.sqrt(self.dim)

    def _out(self, h: torch.Tensor) -> torch.Tensor:
        out = self.head(self.norm(h))
        return out if self.output == "categorical" else dmol_log_probs(out, self.levels)

    # ---- public API --------------------------------------------------------------------------------------
    def generation_order(self) -> torch.Tensor:
        """LongTensor[C·H·W, 3]: the (c, h, w) of each sub-pixel in the order they are generated."""
        c, h, w = self.image_shape
        o = self.order.cpu()
        return torch.stack([o % c, o // (w * c), (o // c) % w], dim=1)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        self._check(x, y)
        b = x.shape[0]
        emb = self._values_embedding(self._to_raster(x))  # [B, N, D]
        emb = torch.cat([emb, self.start.expand(b, 1, -1)], dim=1)
        h = emb[:, self.prev] + self._position()  # shifted right in generation order
        if self.class_embed is not None:
            h = h + self.class_embed(y)[:, None]
        h = self.drop(h)
        for blk in self.blocks:
            h = blk(h, self.grid)
        return self._from_raster(self._out(h))

    @torch.no_grad()
    def sample(
        self,
        n: int,
        temperature: float = 1.0,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Draw ``n`` images, LongTensor[n, C, H, W], one sub-pixel at a time in :meth:`generation_order`.

        With ``use_cache`` (default) each step runs only the new position through the decoder, reading the
        cached keys/values of earlier positions; ``use_cache=False`` recomputes the whole image per step
        (the reference: same images for the same ``generator`` state). ``temperature`` divides the logits
        (0 = greedy).
        """
        device = self.start.device
        if self.class_embed is not None and labels is None:
            labels = torch.arange(n, device=device) % self.num_classes
        was_training = self.training
        self.eval()
        raster = torch.zeros(n, self.order.numel(), dtype=torch.long, device=device)
        try:
            if use_cache:
                caches = [blk.attn.init_cache(n, self.grid, device) for blk in self.blocks]
                pos = self._position()
                cls = self.class_embed(labels) if self.class_embed is not None else 0.0
            for t, p in enumerate(self.order.tolist()):
                if use_cache:
                    if t == 0:
                        h = self.start.expand(n, -1)
                    else:
                        q = int(self.order[t - 1])
                        h = self.embed(self.channel_of[q] * self.levels + raster[:, q]) * math.sqrt(self.dim)
                    h = h + pos[p] + cls
                    for blk, cache in zip(self.blocks, caches):
                        h = blk.step(h, p, cache)
                    logits = self._out(h)
                else:
                    img = self._from_raster(raster[..., None])[:, 0]
                    logits = self._to_raster_logits(self.forward(img, labels))[:, p]
                raster[:, p] = self._draw(logits, temperature, generator)
        finally:
            self.train(was_training)
        return self._from_raster(raster[..., None])[:, 0]

    def _to_raster_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """[B, K, C, H, W] -> [B, N, K]."""
        return logits.permute(0, 3, 4, 2, 1).reshape(logits.shape[0], -1, logits.shape[1])

    @staticmethod
    def _draw(logits: torch.Tensor, temperature: float, generator) -> torch.Tensor:
        if temperature <= 0:
            return logits.argmax(-1)
        probs = torch.softmax(logits.float() / temperature, dim=-1)
        return torch.multinomial(probs, 1, generator=generator)[:, 0]


@register_model
def image_transformer(**kwargs) -> ImageTransformer:
    """``create_model("image_transformer", mixer="local_1d"|"local_2d"|"full"|"focal_modulation",
    image_size=..., channels=..., levels=..., dim=..., depth=..., heads=..., block_length=...,
    query_shape=..., memory_flange=..., focal_levels=..., focal_window=...)``."""
    return ImageTransformer(**kwargs)
