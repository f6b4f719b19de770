"""Image Transformer (Parmar et al., ICML 2018): an autoregressive decoder over sub-pixels or pixels.

Three output distributions (``output=``), each returned as normalised per-sub-pixel log-probabilities
``[B, levels, C, H, W]`` (``gather`` at the targets gives the exact log-likelihood, bits/dim stays bits per
sub-pixel):

* ``categorical``: a ``levels``-way softmax per sub-pixel (the paper's best CIFAR-10 model, 2.90 bits/dim).
* ``dmol``: attnbench's per-sub-pixel discretized mixture of logistics (Salimans et al. 2017's likelihood,
  one independent mixture for each sub-pixel; no channel coupling).
* ``dmol_pixel``: the paper's / PixelCNN++'s per-pixel mixture (Sec. 3.3; Salimans et al. 2017, Sec. 2.2):
  one mixture of K discretized logistics over the whole pixel, the channels sharing the component; per
  component a logit, per-channel means and log-scales, and coupling coefficients that shift each channel's
  mean by the (true, teacher-forced) values of the earlier channels of the pixel: μ_G = μ'_G + α·x_R,
  μ_B = μ'_B + β·x_R + γ·x_G (x in [-1, 1], coefficients through tanh). For C channels there are
  C(C-1)/2 coefficients, one per earlier channel (greyscale: none; RGB: exactly α, β, γ).

Sub-pixel outputs (``categorical``, ``dmol``): every sub-pixel (c, h, w) is one position of an ``H × (W·C)``
grid (channels interleaved along each row, Sec. 3.1). Its input is the √d-scaled embedding (one table per
channel) of the sub-pixel generated just before it.

Per-pixel output (``dmol_pixel``): every pixel is one position of the ``H × W`` grid (sequence length H·W).
Its input is the embedding of the pixel generated just before it: the sum of the √d-scaled embeddings of
its C intensities (one table per channel), the same as one linear map of the concatenated channel
embeddings. (The tensor2tensor code instead maps the intensities to [-1, 1] and applies a 1×3 strided
convolution + ReLU; the tables contain any per-channel additive embedding.) The output at a pixel holds the
mixture parameters; channel c's log-probabilities given the earlier channels are
``log Σ_k w_k(x_<c) p_k(x_c | x_<c)``, where ``w_k`` is the posterior of component k given the pixel's
earlier channels, so the C per-channel terms sum to the pixel's mixture log-likelihood.

Both layouts add a 2D position encoding (half the width encodes the row, half the column — and channel,
for sub-pixels; Sec. 3.1) and an optional class embedding (Sec. 4). Decoder blocks (self-attention +
position-wise FFN, Sec. 3.2) use full, local 1D or local 2D causal attention over that grid
(:mod:`attnbench.mechanisms.local_attention`: local 1D over the raster sequence, local 2D over the grid), or
causal focal modulation in raster order (``mixer="focal_modulation"``,
:mod:`attnbench.mechanisms.causal_focal_modulation`) as the modulation counterpart. The generation order
is the mixer's order over the grid; for ``dmol_pixel`` each pixel's channels follow in order.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from attnbench.errors import ConfigError
from attnbench.mechanisms.registry import check_attn_backend, create_mixer, mixer_info
from attnbench.models.registry import register_model

OUTPUTS = ("categorical", "dmol", "dmol_pixel")
MIN_LOG_SCALE = -7.0  # PixelCNN++'s lower bound on the log-scales


def sinusoid_2d(rows: int, cols: int, dim: int, layout: str = "interleaved") -> torch.Tensor:
    """[rows·cols, dim]: sin/cos of the row in the first dim/2 features, of the column in the rest.

    ``interleaved`` (attnbench's original): per axis of width d, sin at even and cos at odd features with
    frequencies 10000^(−2i/d). ``t2t`` (tensor2tensor's ``add_timing_signal_nd`` over the 2 axes): per axis
    n = dim // 4 timescales 10000^(−i/(n−1)) (i < n), the n sines then the n cosines, row block first; any
    dim % 4 features left over stay 0.
    """
    if layout == "t2t":
        n = dim // 4
        inv = torch.exp(-math.log(10000.0) * torch.arange(n, dtype=torch.float64) / max(n - 1, 1))
        out = torch.zeros(rows, cols, dim, dtype=torch.float64)
        for axis, length in enumerate((rows, cols)):
            t = torch.arange(length, dtype=torch.float64)[:, None] * inv[None]
            sig = torch.cat([torch.sin(t), torch.cos(t)], 1)  # [length, 2n]
            sig = sig[:, None] if axis == 0 else sig[None]
            out[..., axis * 2 * n : (axis + 1) * 2 * n] = sig
        return out.reshape(rows * cols, dim).float()
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


def logistic_bin_log_probs(mu: torch.Tensor, log_s: torch.Tensor, levels: int) -> torch.Tensor:
    """Log-probabilities of the ``levels`` bins of [-1, 1] under K logistics.

    Bin v is centred at ``-1 + 2v/(levels-1)`` with half-width ``1/(levels-1)``; the edge bins extend to ±∞,
    so each component's bins sum to exactly 1. Computed as
    ``log(σ(a) − σ(b)) = log σ(a) + log σ(−b) + log(1 − e^{−(a−b)})`` (a, b the scaled upper and lower edges),
    which stays finite and accurate far into both tails and for very sharp or very broad components.

    Args:
        mu, log_s: [..., K] means and log-scales (log-scales are clamped at -7, as in PixelCNN++).
    Returns:
        [..., levels, K].
    """
    log_s = log_s.clamp(min=MIN_LOG_SCALE)
    centers = torch.linspace(-1.0, 1.0, levels, device=mu.device, dtype=mu.dtype)
    half = 1.0 / (levels - 1)
    x = centers.view(*([1] * (mu.dim() - 1)), levels, 1)  # [..., levels, 1]
    inv_s = torch.exp(-log_s).unsqueeze(-2)
    a = (x + half - mu.unsqueeze(-2)) * inv_s  # upper edge
    b = (x - half - mu.unsqueeze(-2)) * inv_s  # lower edge
    first = torch.zeros(levels, 1, dtype=torch.bool, device=mu.device)
    last = first.clone()
    first[0], last[-1] = True, True
    term_a = torch.where(last, 0.0, F.logsigmoid(a))  # the last bin has no upper edge
    term_b = torch.where(first, 0.0, F.logsigmoid(-b))  # the first bin has no lower edge
    term_d = torch.where(first | last, 0.0, torch.log((-torch.expm1(-(a - b))).clamp(min=1e-30)))
    return term_a + term_b + term_d


def dmol_log_probs(params: torch.Tensor, levels: int) -> torch.Tensor:
    """Discretized mixture of logistics over ``levels`` bins of [-1, 1] (``output="dmol"``, per sub-pixel).

    Args:
        params: [..., 3K] mixture logits, means and log-scales.
    Returns:
        [..., levels] log-probabilities (they sum to exactly 1 in probability: the bins tile the real line).
    """
    logit_pi, mu, log_s = params.unflatten(-1, (3, -1)).unbind(-2)  # each [..., K]
    log_p = logistic_bin_log_probs(mu, log_s, levels)  # [..., levels, K]
    return torch.logsumexp(log_p + F.log_softmax(logit_pi, -1).unsqueeze(-2), dim=-1)


# ---- the per-pixel mixture with channel coupling (output="dmol_pixel") -----------------------------------
def dmol_pixel_rows(channels: int) -> int:
    """Rows of K parameters per pixel: 1 logit row, C mean rows, C log-scale rows, C(C-1)/2 coefficients."""
    return 1 + 2 * channels + channels * (channels - 1) // 2


def dmol_pixel_split(params: torch.Tensor, channels: int):
    """Split ``params [..., rows·K]`` (rows of :func:`dmol_pixel_rows`, K innermost) into
    ``logit_pi [..., K]``, ``mu [..., C, K]``, ``log_s [..., C, K]`` and the coupling coefficients
    ``coef [..., C(C-1)/2, K]`` after tanh, in the order (1,0), (2,0), (2,1), ... — for RGB: α (G←R),
    β (B←R), γ (B←G)."""
    c = channels
    rows = params.unflatten(-1, (dmol_pixel_rows(c), -1))
    logit_pi, mu, log_s = rows[..., 0, :], rows[..., 1 : 1 + c, :], rows[..., 1 + c : 1 + 2 * c, :]
    return logit_pi, mu, log_s, torch.tanh(rows[..., 1 + 2 * c :, :])


def dmol_pixel_means(mu: torch.Tensor, coef: torch.Tensor, x_unit: torch.Tensor) -> torch.Tensor:
    """Coupled means ``[..., C, K]``: ``mu_c + Σ_{j<c} coef_{c,j} · x_j`` with the values ``x_unit [..., C]``
    of the pixel's channels in [-1, 1] (channel c's mean reads only channels before it)."""
    means, i = [mu[..., 0, :]], 0
    for c in range(1, mu.shape[-2]):
        shift = 0.0
        for j in range(c):
            shift = shift + coef[..., i, :] * x_unit[..., j, None]
            i += 1
        means.append(mu[..., c, :] + shift)
    return torch.stack(means, dim=-2)


def to_unit(x: torch.Tensor, levels: int, dtype=torch.float32) -> torch.Tensor:
    """Integer levels → bin centres in [-1, 1]."""
    return x.to(dtype) * (2.0 / (levels - 1)) - 1.0


def dmol_pixel_log_probs(params: torch.Tensor, x: torch.Tensor, levels: int) -> torch.Tensor:
    """Per-sub-pixel conditional log-probabilities of the per-pixel mixture (``output="dmol_pixel"``).

    Args:
        params: [..., rows·K] (:func:`dmol_pixel_split`).
        x: LongTensor[..., C], the pixel's true values (teacher forcing: channel c's distribution reads the
            values of channels < c, through the coupled means and the component posterior).
    Returns:
        [..., C, levels]: ``out[..., c, v] = log p(x_c = v | x_<c)``, normalised over v for every c, and
        ``Σ_c out[..., c, x_c] = log Σ_k π_k Π_c p_k(x_c | x_<c)``, the pixel's log-likelihood.
    """
    logit_pi, mu, log_s, coef = dmol_pixel_split(params, x.shape[-1])
    means = dmol_pixel_means(mu, coef, to_unit(x, levels, params.dtype))
    bins = logistic_bin_log_probs(means, log_s, levels)  # [..., C, levels, K]
    k = bins.shape[-1]
    at_x = bins.gather(-2, x[..., None, None].expand(*x.shape, 1, k)).squeeze(-2)  # [..., C, K]
    # log-posterior weights of the components given the channels before c (exclusive prefix sums, no
    # subtraction: a very unlikely channel would otherwise cancel catastrophically)
    before = torch.cat([torch.zeros_like(at_x[..., :1, :]), at_x[..., :-1, :].cumsum(-2)], dim=-2)
    prior = F.log_softmax(logit_pi, -1).unsqueeze(-2) + before  # [..., C, K]
    joint = torch.logsumexp(bins + prior.unsqueeze(-2), dim=-1)  # [..., C, levels]
    return joint - torch.logsumexp(prior, dim=-1, keepdim=True)


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
        activation: str = "gelu",
        ffn_dropout: float | None = None,
        ln_eps: float = 1e-5,
        attn_bias: bool = True,
        **attn_kw,
    ):
        super().__init__()
        self.pre = norm == "pre"
        # the token mixer, from the causal registry (``attn`` for every mixer: checkpoints keep their keys)
        context = {k: v for k, v in attn_kw.items() if k != "kind"}
        context.update(focal or {})
        self.attn = create_mixer(
            "causal", attn_kw["kind"], dim, num_heads=heads, attn_dropout=attn_dropout, attn_bias=attn_bias,
            **context,
        )  # fmt: skip
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=ln_eps), nn.LayerNorm(dim, eps=ln_eps)
        act = nn.GELU() if activation == "gelu" else nn.ReLU()
        inner = dropout if ffn_dropout is None else ffn_dropout
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), act, nn.Dropout(inner), nn.Linear(ffn_dim, dim))
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
    every position; ``forward`` and ``sample`` then take labels. ``output`` is ``categorical``, ``dmol`` or
    ``dmol_pixel`` (module docstring); ``activation`` (``gelu`` | ``relu``) and ``ffn_dropout`` (default:
    ``dropout``) shape the position-wise FFN.

    tensor2tensor's choices, each off by default so that earlier checkpoints load as they were:
    ``start="zero"`` (the first position's input is zeros, t2t's shift-right; default ``learned``: a learned
    vector, kept in the state dict either way), ``ln_eps`` (t2t's ``norm_epsilon`` 1e-6; default torch's
    1e-5), ``attn_bias=False`` (t2t's q/k/v/output projections have no bias), ``pos_encoding=
    "sinusoidal_t2t"`` (t2t's sin/cos block layout, :func:`sinusoid_2d`).

    ``forward(x LongTensor[B, C, H, W] in [0, levels), y LongTensor[B] | None) -> [B, levels, C, H, W]``
    logits (normalised log-probabilities for the ``dmol`` outputs); the logits of a sub-pixel depend only on
    the sub-pixels before it in :meth:`generation_order`.
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
        ffn_dropout: float | None = None,
        activation: str = "gelu",
        norm: str = "pre",
        pos_encoding: str = "sinusoidal",
        num_classes: int = 0,
        class_conditional: bool | None = None,
        output: str = "categorical",
        num_mixtures: int = 10,
        attn_backend: str = "auto",
        start: str = "learned",
        ln_eps: float = 1e-5,
        attn_bias: bool = True,
    ):
        super().__init__()
        mixer_info("causal", mixer)  # an unknown name: ConfigError listing the causal mixers
        check_attn_backend(attn_backend)
        h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(int(s) for s in image_size)
        checks = [
            (norm in ("pre", "post"), f"norm={norm!r}: expected 'pre' or 'post'"),
            (
                pos_encoding in ("sinusoidal", "sinusoidal_t2t", "learned"),
                f"pos_encoding={pos_encoding!r}: expected 'sinusoidal', 'sinusoidal_t2t' or 'learned'",
            ),
            (start in ("learned", "zero"), f"start={start!r}: expected 'learned' or 'zero'"),
            (ln_eps > 0, f"ln_eps={ln_eps}: expected > 0"),
            (output in OUTPUTS, f"output={output!r}: expected one of {', '.join(OUTPUTS)}"),
            (activation in ("gelu", "relu"), f"activation={activation!r}: expected 'gelu' or 'relu'"),
            (levels >= 2, f"levels={levels}: expected >= 2"),
            (dim % heads == 0 and dim % 2 == 0, f"dim={dim} must be even and divisible by heads={heads}"),
            (
                min(h, w, channels, depth) >= 1,
                f"image_size={image_size}, channels={channels}, depth={depth} must be positive",
            ),
            (
                output == "categorical" or num_mixtures >= 1,
                f"output={output} needs num_mixtures >= 1, got {num_mixtures}",
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
        # one sequence position per pixel (dmol_pixel) or per sub-pixel (channels interleaved along a row)
        self.per_pixel = output == "dmol_pixel"
        self.grid = (h, w) if self.per_pixel else (h, w * channels)
        self.levels, self.dim, self.num_classes, self.output = levels, dim, num_classes, output
        self.embed = nn.Embedding(channels * levels, dim)  # one `levels`-row table per channel
        nn.init.normal_(self.embed.weight, std=dim**-0.5)
        # input of the first generated position: learned, or zeros (t2t) kept out of training
        self.start = nn.Parameter(torch.zeros(dim), requires_grad=start == "learned")
        self.start_kind = start
        if pos_encoding in ("sinusoidal", "sinusoidal_t2t"):
            layout = "t2t" if pos_encoding == "sinusoidal_t2t" else "interleaved"
            self.register_buffer("pos", sinusoid_2d(*self.grid, dim, layout), persistent=False)
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
            attn_backend=attn_backend,
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
                    activation=activation,
                    ffn_dropout=ffn_dropout,
                    ln_eps=ln_eps,
                    attn_bias=attn_bias,
                    **attn_kw,
                )
                for _ in range(depth)
            )
        except ValueError as e:
            raise ConfigError(str(e)) from e
        self.norm = nn.LayerNorm(dim, eps=ln_eps) if norm == "pre" else nn.Identity()
        out_dim = {
            "categorical": levels,
            "dmol": 3 * num_mixtures,
            "dmol_pixel": dmol_pixel_rows(channels) * num_mixtures,
        }[output]
        self.head = nn.Linear(dim, out_dim)
        n = self.grid[0] * self.grid[1]
        order = self.blocks[0].attn.generation_order(*self.grid)
        prev = torch.empty(n, dtype=torch.long)
        prev[order[1:]] = order[:-1]
        prev[order[0]] = n  # the start vector
        self.register_buffer("order", order, persistent=False)  # grid positions in generation order
        self.register_buffer("prev", prev, persistent=False)
        self.register_buffer("channel_of", torch.arange(n) % channels, persistent=False)
        self.register_buffer("channel_offset", torch.arange(channels) * levels, persistent=False)

    # ---- layout helpers ----------------------------------------------------------------------------------
    def _to_raster(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, N] sub-pixels in raster order of the H × (W·C) grid, or [B, H·W, C] pixels in
        raster order of the H × W grid (``dmol_pixel``)."""
        t = x.permute(0, 2, 3, 1)
        return t.reshape(x.shape[0], -1, x.shape[1]) if self.per_pixel else t.reshape(x.shape[0], -1)

    def _from_raster(self, t: torch.Tensor) -> torch.Tensor:
        """[B, C·H·W, K] (sub-pixels in raster order of the H × (W·C) grid) -> [B, K, C, H, W]."""
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
        """Input embedding of positions: sub-pixels ``[..]`` -> ``[.., D]``; pixels ``[.., C]`` -> ``[.., D]``
        (the sum of the channels' embeddings)."""
        if self.per_pixel:
            return self.embed(self.channel_offset + raster).sum(-2) * math.sqrt(self.dim)
        return self.embed(self.channel_of * self.levels + raster) * math.sqrt(self.dim)

    def start_input(self) -> torch.Tensor:
        """``[D]``: the input of the first generated position (zeros with ``start="zero"``, whatever a loaded
        checkpoint holds in ``start``)."""
        return torch.zeros_like(self.start) if self.start_kind == "zero" else self.start

    def _head(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """The decoder and head over all positions: ``[B, N, head outputs]`` in raster order of the grid."""
        b = x.shape[0]
        emb = self._values_embedding(self._to_raster(x))  # [B, N, D]
        emb = torch.cat([emb, self.start_input().expand(b, 1, -1)], dim=1)
        h = emb[:, self.prev] + self._position()  # shifted right in generation order
        if self.class_embed is not None:
            h = h + self.class_embed(y)[:, None]
        h = self.drop(h)
        for blk in self.blocks:
            h = blk(h, self.grid)
        return self.head(self.norm(h))

    # ---- public API --------------------------------------------------------------------------------------
    def generation_order(self) -> torch.Tensor:
        """LongTensor[C·H·W, 3]: the (c, h, w) of each sub-pixel in the order they are generated
        (``dmol_pixel``: the pixels in the mixer's order over the H × W grid, then its channels)."""
        c, h, w = self.image_shape
        o = self.order.cpu()
        if self.per_pixel:
            o = (o[:, None] * c + torch.arange(c)).reshape(-1)  # sub-pixel raster index = pixel · C + channel
        return torch.stack([o % c, o // (w * c), (o // c) % w], dim=1)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        self._check(x, y)
        out = self._head(x, y)
        if self.output == "categorical":
            return self._from_raster(out)
        if self.output == "dmol":
            return self._from_raster(dmol_log_probs(out, self.levels))
        params = out.float() if out.dtype in (torch.float16, torch.bfloat16) else out  # the tails need fp32
        lp = dmol_pixel_log_probs(params, self._to_raster(x), self.levels)  # [B, H·W, C, levels]
        return self._from_raster(lp.flatten(1, 2))

    # ---- maps (figures, ``python -m attnbench.compare_maps``) -------------------------------------------
    def query_index(self, query: tuple[int, int] | None = None) -> int:
        """The grid position of pixel ``query = (row, col)`` (default: the image centre ``(H//2, W//2)``);
        with sub-pixels, its first channel."""
        _, h, w = self.image_shape
        row, col = query if query is not None else (h // 2, w // 2)
        if not (0 <= row < h and 0 <= col < w):
            raise ConfigError(f"query=({row}, {col}): expected a pixel of the {h}×{w} image")
        pixel = row * w + col
        return pixel if self.per_pixel else pixel * self.image_shape[0]

    @torch.no_grad()
    def mixer_maps(
        self, x: torch.Tensor, y: torch.Tensor | None = None, query: tuple[int, int] | None = None
    ) -> dict[str, torch.Tensor]:
        """What each layer's token mixer at the ``query`` pixel reads, over the image: ``{"layer<i>": [B, H,
        W]}`` for integer images ``x [B, C, H, W]`` (the mixer's ``query_map``: attention probabilities, or
        the Jacobian norm for modulation). The input is shifted right in generation order, so a grid position
        holds the sub-pixel generated just before it (``prev``); each position's weight is moved onto that
        sub-pixel, and a pixel's sub-pixels are summed: the map shows whose *values* the query reads (exactly
        in the first layer; a later layer's position also carries what it mixed before). The query pixel
        itself and everything generated after it are zero. Mixers with no ``query_map`` (identity) give no
        map."""
        self._check(x, y)
        inputs: dict[int, tuple[torch.Tensor, tuple]] = {}
        handles = []
        for i, blk in enumerate(self.blocks):
            if hasattr(blk.attn, "query_map"):

                def hook(_mod, args, i=i):
                    inputs[i] = (args[0].detach(), args[1])

                handles.append(blk.attn.register_forward_pre_hook(hook))
        try:
            self._head(x, y)
        finally:
            for h in handles:
                h.remove()
        c, h, w = self.image_shape
        index = self.query_index(query)
        out = {}
        for i, (inp, grid) in sorted(inputs.items()):
            m = self.blocks[i].attn.query_map(inp, grid, index)  # [B, N] over the grid positions
            carried = m.new_zeros(m.shape[0], m.shape[1] + 1).index_add_(1, self.prev, m)[
                :, :-1
            ]  # drop start
            out[f"layer{i + 1}"] = (
                carried.view(-1, h, w) if self.per_pixel else carried.view(-1, h, w, c).sum(-1)
            )
        return out

    def mixer_map_legends(self) -> dict[str, tuple[str, str]]:
        """``{layer name: (what its map shows, unit)}`` for :meth:`mixer_maps`, as the mixer describes it."""
        out = {}
        for i, blk in enumerate(self.blocks):
            legend = getattr(blk.attn, "map_legend", None)
            if legend is not None and hasattr(blk.attn, "query_map"):
                out[f"layer{i + 1}"] = legend
        return out

    @torch.no_grad()
    def sample(
        self,
        n: int,
        temperature: float = 1.0,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Draw ``n`` images, LongTensor[n, C, H, W], one position at a time in the generation order.

        With ``use_cache`` (default) each step runs only the new position through the decoder, reading the
        cached keys/values of earlier positions; ``use_cache=False`` recomputes the whole image per step
        (the reference: same images for the same ``generator`` state). ``temperature`` divides the logits
        (0 = greedy). ``dmol_pixel`` draws a whole pixel per step: the mixture component once (its logits
        divided by ``temperature``), then the channels in order from that component's discretized logistics,
        their means coupled to the channels already drawn.
        """
        device = self.start.device
        if self.class_embed is not None and labels is None:
            labels = torch.arange(n, device=device) % self.num_classes
        was_training = self.training
        self.eval()
        c = self.image_shape[0]
        shape = (n, self.order.numel(), c) if self.per_pixel else (n, self.order.numel())
        raster = torch.zeros(shape, dtype=torch.long, device=device)

        def image() -> torch.Tensor:
            return self._from_raster(raster.reshape(n, -1, 1))[:, 0]

        try:
            if use_cache:
                caches = [blk.attn.init_cache(n, self.grid, device) for blk in self.blocks]
                pos = self._position()
                cls = self.class_embed(labels) if self.class_embed is not None else 0.0
                scale = math.sqrt(self.dim)
            for t, p in enumerate(self.order.tolist()):
                if use_cache:
                    if t == 0:
                        h = self.start_input().expand(n, -1)
                    else:
                        q = int(self.order[t - 1])
                        if self.per_pixel:  # the pixel before: all its channels
                            h = self._values_embedding(raster[:, q])
                        else:  # the sub-pixel before, in its channel's table
                            h = self.embed(self.channel_of[q] * self.levels + raster[:, q]) * scale
                    h = h + pos[p] + cls
                    for blk, cache in zip(self.blocks, caches):
                        h = blk.step(h, p, cache)
                    out = self.head(self.norm(h))
                else:
                    out = self._head(image(), labels)[:, p]
                if self.per_pixel:
                    raster[:, p] = self._draw_pixel(out.float(), temperature, generator)
                else:
                    logits = out if self.output == "categorical" else dmol_log_probs(out, self.levels)
                    raster[:, p] = self._draw(logits, temperature, generator)
        finally:
            self.train(was_training)
        return image()

    def _draw_pixel(self, params: torch.Tensor, temperature: float, generator) -> torch.Tensor:
        """One pixel per row of ``params [n, rows·K]``: LongTensor[n, C]."""
        c = self.image_shape[0]
        logit_pi, mu, log_s, coef = dmol_pixel_split(params, c)
        k = self._draw(logit_pi, temperature, generator)  # [n]: one component for the whole pixel
        values = torch.zeros(params.shape[0], c, dtype=torch.long, device=params.device)
        for ch in range(c):  # channel ch's mean reads the channels already drawn
            means = dmol_pixel_means(mu, coef, to_unit(values, self.levels, params.dtype))  # [n, C, K]
            bins = logistic_bin_log_probs(means[:, ch], log_s[:, ch], self.levels)  # [n, levels, K]
            log_p = bins.gather(-1, k.view(-1, 1, 1).expand(-1, self.levels, 1))[..., 0]
            values[:, ch] = self._draw(log_p, temperature, generator)
        return values

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
    query_shape=..., memory_flange=..., focal_levels=..., focal_window=...,
    output="categorical"|"dmol"|"dmol_pixel", num_mixtures=...)``."""
    return ImageTransformer(**kwargs)
