"""Focal modulation made causal for autoregressive generation (the Image Transformer's ``focal_modulation``).

Focal modulation (Yang et al., "Focal Modulation Networks", NeurIPS 2022, Sec. 3.2) replaces attention's
query-key interaction by "aggregation first, then interaction". For each position i of the input x:

    q_i, z^0_i, g_i = f(x_i)                       one linear map: query, context, L+1 gates   (eq. 8 setup)
    z^l = GELU(DWConv_l(z^{l-1}))   l = 1..L       hierarchical contexts, kernel k_l = f·(l-1) + k   (eq. 8)
    z^{L+1}_i = GELU(mean_{j<=i} z^L_j)            the global level: the prefix mean (causal; FocalNet uses
                                                   the mean over the whole image)
    M_i = h(sum_{l=1}^{L+1} g^l_i · z^l_i)          gated aggregation, h a 1x1 (linear) map      (eq. 9)
    y_i = proj(q_i ⊙ M_i)                           modulation                                   (eq. 10)

Causality: the depthwise convolutions run over the generation order (raster order of the ``rows × cols``
grid, as ``local_1d``) with ``k_l - 1`` zeros of left padding, so z^l_i depends on positions
``i - sum(k_1..k_l) + l .. i`` only; the prefix mean on positions ``<= i``. The Image Transformer shifts its
input right by one position, so the logits of a sub-pixel depend only on the sub-pixels before it.

Decoding keeps a constant-size state per layer (``init_cache`` / ``step``): the last ``k_l - 1`` inputs of
each convolution level and a running sum of z^L with its count. One step costs O(D·sum(k_l)) work and memory,
independent of the position, where full attention's key/value cache grows with the image (local 2D's with its
width; local 1D's is fixed at two query blocks, still ``2·block_length`` keys and values per layer).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from attnbench.mechanisms.registry import register_mixer


class CausalFocalModulation(nn.Module):
    """``forward(x [B, N, D], grid=(rows, cols)) -> [B, N, D]``, causal in raster order of the grid.

    Args:
        dim: width D.
        focal_levels: L, the number of convolution levels.
        focal_window: kernel of the first level (k); level l has ``focal_factor * (l - 1) + k``.
        focal_factor: kernel growth per level (FocalNet: 2).
    """

    def __init__(self, dim: int, focal_levels: int = 2, focal_window: int = 3, focal_factor: int = 2):
        super().__init__()
        if focal_levels < 1 or focal_window < 1:
            raise ValueError(f"focal_levels={focal_levels} and focal_window={focal_window} must be >= 1")
        self.dim, self.focal_levels = dim, int(focal_levels)
        self.kernels = [focal_factor * level + focal_window for level in range(self.focal_levels)]
        self.f = nn.Linear(dim, 2 * dim + self.focal_levels + 1)
        self.convs = nn.ModuleList(nn.Conv1d(dim, dim, k, groups=dim, bias=False) for k in self.kernels)
        self.act = nn.GELU()
        self.h = nn.Linear(dim, dim)  # FocalNet's 1x1 convolution
        self.proj = nn.Linear(dim, dim)

    def generation_order(self, rows: int, cols: int) -> torch.Tensor:
        """Raster order of the grid (as ``local_1d``)."""
        return torch.arange(rows * cols)

    def _split(self, x: torch.Tensor):
        return torch.split(self.f(x), (self.dim, self.dim, self.focal_levels + 1), dim=-1)

    @staticmethod
    def prefix_mean(z: torch.Tensor) -> torch.Tensor:
        """``[B, D, N]`` -> the mean over positions ``<= i`` at each i (cumulative sum / count)."""
        count = torch.arange(1, z.shape[-1] + 1, device=z.device, dtype=z.dtype)
        return z.cumsum(dim=-1) / count

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        b, n, _ = x.shape
        if grid[0] * grid[1] != n:
            raise ValueError(f"grid {grid} does not hold {n} positions")
        q, z, gates = self._split(x)
        z = z.transpose(1, 2)  # [B, D, N]
        gates = gates.transpose(1, 2)  # [B, L+1, N]
        aggregate = torch.zeros_like(z)
        for level, (conv, k) in enumerate(zip(self.convs, self.kernels)):
            z = self.act(conv(F.pad(z, (k - 1, 0))))  # causal: left padding only
            aggregate = aggregate + z * gates[:, level : level + 1]
        aggregate = aggregate + self.act(self.prefix_mean(z)) * gates[:, self.focal_levels :]
        return self.proj(q * self.h(aggregate.transpose(1, 2)))

    # ---- maps (figures) ----------------------------------------------------------------------------------
    # what query_map shows and the unit of its colour bar (figures ask the mechanism, not its name)
    map_legend = ("dependence of the query's output on each position, ‖∂y_q/∂x_j‖", "‖∂y_q/∂x_j‖ (Frobenius)")

    def query_map(self, x: torch.Tensor, grid: tuple[int, int], index: int) -> torch.Tensor:
        """How much the mixer's output at raster ``index`` depends on each input position: the Frobenius
        norm of the Jacobian block ``∂y_index/∂x_j`` (``D × D``) for every ``j``: ``x [B, N, D]`` ->
        ``[B, N]`` (zero after ``index``: causal). Modulation has no weights over positions to show; this is
        what the query reads through the convolution levels (nearby) and the prefix mean (every earlier
        position)."""
        with torch.enable_grad():
            xg = x.detach().clone().requires_grad_(True)
            y = self.forward(xg, grid)[:, index]  # [B, D]
            sq = torch.zeros(x.shape[:2], device=x.device, dtype=x.dtype)
            for c in range(y.shape[-1]):
                (g,) = torch.autograd.grad(y[:, c].sum(), xg, retain_graph=c < y.shape[-1] - 1)
                sq += g.pow(2).sum(-1)  # images do not interact: the sum's gradient is each image's own
        return sq.sqrt().detach()

    # ---- incremental decoding ----------------------------------------------------------------------------
    def init_cache(self, batch: int, grid: tuple[int, int], device=None, dtype=None) -> dict:
        """The constant-size decoding state: each level's last ``k_l - 1`` inputs, the running sum of the
        last level and its count."""
        kw = {"device": device, "dtype": dtype or self.f.weight.dtype}
        return {
            "windows": [torch.zeros(batch, self.dim, k - 1, **kw) for k in self.kernels],
            "sum": torch.zeros(batch, self.dim, **kw),
            "count": 0,
        }

    def step(self, x: torch.Tensor, index: int, cache: dict) -> torch.Tensor:
        """Output for one position ``x [B, D]``; positions must arrive in raster order (``index`` is
        the raster index, used only to check that). Updates ``cache`` in place; equals ``forward``'s output
        at that position up to float rounding."""
        if index != cache["count"]:
            raise ValueError(f"step at raster index {index}, expected {cache['count']} (raster order)")
        q, z, gates = self._split(x)
        z = z[:, :, None]  # [B, D, 1]
        aggregate = torch.zeros_like(z)
        for level, conv in enumerate(self.convs):
            window = torch.cat([cache["windows"][level], z], dim=-1)  # [B, D, k_l]
            cache["windows"][level] = window[:, :, 1:]
            z = self.act((window * conv.weight[:, 0]).sum(-1, keepdim=True))  # the conv at one position
            aggregate = aggregate + z * gates[:, level, None, None]
        cache["sum"] = cache["sum"] + z[:, :, 0]
        cache["count"] += 1
        glob = self.act(cache["sum"] / cache["count"])[:, :, None]
        aggregate = aggregate + glob * gates[:, self.focal_levels, None, None]
        return self.proj(q * self.h(aggregate[:, :, 0]))


@register_mixer(
    "causal",
    "focal_modulation",
    attr="attn",
    paper="Yang et al.: Focal Modulation Networks, NeurIPS 2022, Sec. 3.2 (eq. 8-10), made causal here",
    equation="y_i = proj(q_i ⊙ h(Σ_l g_i^l z_i^l)),  z^l causal depthwise convs in raster order,  "
    "z^(L+1)_i = GELU(mean_{j≤i} z_j^L)",
)
def build_causal_focal_modulation(dim: int, focal_levels: int = 2, focal_window: int = 3, **_):
    """Causal focal modulation in raster order (its decoding state is constant-size)."""
    return CausalFocalModulation(dim, focal_levels=focal_levels, focal_window=focal_window)
