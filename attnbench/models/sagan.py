"""Class-conditional SAGAN: ResNet generator and projection discriminator with a pluggable mixer block.

Zhang et al., "Self-Attention Generative Adversarial Networks", ICML 2019; the block layout follows the
BigGAN/SNGAN ResNet GANs the paper builds on (Miyato et al. 2018; Miyato & Koyama 2018; Brock et al. 2019).

- Generator ``G(z: [B, z_dim], y: LongTensor[B]) -> [B, C, S, S]`` in [-1, 1]: linear z -> 4x4 map, ResNet
  up-blocks (class-conditional BatchNorm, ReLU, nearest 2x upsampling, 3x3 convs, 1x1 shortcut), then
  BN-ReLU-conv3x3-tanh. Class conditioning: per-class BN gains/biases (``shared_dim=0``, the SAGAN
  release), or gains/biases as linear maps of a shared class embedding (``shared_dim>0``, BigGAN), which
  ``class_input=True`` also concatenates with z at the input (BigGAN-deep).
- Discriminator ``D(x: [B, C, S, S], y) -> [B]`` (raw scores): ResNet down-blocks (average pooling), ReLU,
  sum pooling over positions, ``linear(h) + <embed(y), h>`` (the projection term, Miyato & Koyama 2018).
- Spectral normalisation (``torch.nn.utils.parametrizations.spectral_norm``) on every conv and linear of G
  and D, the mixer's included, and on D's class embedding.
- The mixer follows the block whose output resolution is listed in ``attn_res_g`` / ``attn_res_d``: any
  ``spatial`` mixer of the catalogue (:mod:`attnbench.mechanisms`), asked from the registry with the map's
  size, inside SAGAN's gated residual ``y = gamma * mixer(x) + x`` with gamma starting at 0 (Zhang et al.
  Eq. 3; the non-local block ``self_attention`` has this gate built in), or ``none`` (no block at all).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

from attnbench.errors import ConfigError
from attnbench.mechanisms.non_local import SelfAttention2d
from attnbench.mechanisms.registry import check_attn_backend, create_mixer, list_mixers, mixer_info
from attnbench.models.registry import register_model

NO_MIXER = "none"  # SAGAN's own option beside the spatial mixers: no mixer block at all
ATTN_VARIANTS = ("official", "paper")


class GatedResidual(nn.Module):
    """``y = gamma * mixer(x) + x`` on ``[B, C, H, W]`` maps, gamma initialised to 0 like SAGAN's block
    (Zhang et al. 2019, Eq. 3), so swapping the mixer changes nothing at initialisation. The mixer is stored
    under the attribute its registration names (``modulation`` for focal modulation: the keys of earlier
    checkpoints)."""

    def __init__(self, mixer: nn.Module, attr: str = "mixer"):
        super().__init__()
        self.mixer_name = attr
        self.add_module(attr, mixer)
        self.gamma = nn.Parameter(torch.zeros(()))

    @property
    def mixer(self) -> nn.Module:
        return getattr(self, self.mixer_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gamma * self.mixer(x) + x


def make_mixer(mixer: str, channels: int, resolution: int, **context) -> nn.Module:
    """The block placed after a ResNet block whose output is a ``resolution`` x ``resolution`` map: the
    ``spatial`` mixer ``mixer`` in SAGAN's gated residual (its own when it has one), or nothing (``none``)."""
    if mixer == NO_MIXER:
        return nn.Identity()
    try:
        module = create_mixer(
            "spatial", mixer, channels, input_size=(resolution, resolution), gated_residual=True, **context
        )
    except ValueError as err:
        raise ConfigError(f"model.mixer={mixer!r} at {resolution}x{resolution}: {err}") from err
    if getattr(module, "gated_residual", False):
        return module
    return GatedResidual(module, mixer_info("spatial", mixer).attr)


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm without affine parameters, then a class-dependent gain and bias: ``bn(x) * (1 + g) + b``.

    ``cond_dim=None``: per-class embeddings ``g = G[y]``, ``b = B[y]``, starting at gain 1 and bias 0 (the
    SAGAN release). ``cond_dim=d``: ``g`` and ``b`` are linear maps (spectrally normalised with the rest of G)
    of a shared d-dim class embedding passed in as ``c`` (BigGAN's shared embedding, Brock et al. 2019).
    ``num_classes=0`` gives a plain affine BatchNorm.
    """

    def __init__(self, channels: int, num_classes: int, cond_dim: int | None = None):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=num_classes == 0)
        self.num_classes = num_classes
        if num_classes and cond_dim:
            self.gain = nn.Linear(cond_dim, channels, bias=False)
            self.bias = nn.Linear(cond_dim, channels, bias=False)
        elif num_classes:
            self.gain = nn.Embedding(num_classes, channels)
            self.bias = nn.Embedding(num_classes, channels)
            nn.init.zeros_(self.gain.weight)
            nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        """``x: [B, C, H, W]``; ``c``: labels ``LongTensor[B]`` (embeddings) or ``[B, cond_dim]`` (shared)."""
        h = self.bn(x)
        if not self.num_classes:
            return h
        return h * (1 + self.gain(c))[:, :, None, None] + self.bias(c)[:, :, None, None]


class GBlock(nn.Module):
    """Generator up-block: CBN-ReLU-up2x-conv3x3-CBN-ReLU-conv3x3, plus up2x-conv1x1 shortcut."""

    def __init__(self, cin: int, cout: int, num_classes: int, cond_dim: int | None = None):
        super().__init__()
        self.bn1 = ConditionalBatchNorm2d(cin, num_classes, cond_dim)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.bn2 = ConditionalBatchNorm2d(cout, num_classes, cond_dim)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        h = F.interpolate(F.relu(self.bn1(x, c)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h), c)))
        return h + self.shortcut(F.interpolate(x, scale_factor=2, mode="nearest"))


class DBlock(nn.Module):
    """Discriminator block: [ReLU]-conv3x3-ReLU-conv3x3-[avgpool2], plus a 1x1 shortcut when the shape
    changes. The first block (``preact=False``) sees the image directly and pools before its shortcut conv."""

    def __init__(self, cin: int, cout: int, down: bool, preact: bool):
        super().__init__()
        self.down, self.preact = down, preact
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.shortcut = nn.Conv2d(cin, cout, 1) if (cin != cout or down) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(x) if self.preact else x
        h = self.conv2(F.relu(self.conv1(h)))
        if self.down:
            h = F.avg_pool2d(h, 2)
        s = x
        if self.shortcut is not None:
            if self.preact:
                s = self.shortcut(s)
                s = F.avg_pool2d(s, 2) if self.down else s
            else:
                s = F.avg_pool2d(s, 2) if self.down else s
                s = self.shortcut(s)
        return h + s


def _as_res_set(res: int | Sequence[int] | None) -> set[int]:
    if res is None:
        return set()
    if isinstance(res, int):
        return {res} if res > 0 else set()
    return {int(r) for r in res if int(r) > 0}


def _check_size(image_size: int) -> int:
    n = int(math.log2(image_size)) if image_size > 0 else 0
    if image_size < 8 or 2**n != image_size:
        raise ConfigError(f"SAGAN image_size={image_size}: expected a power of two >= 8 (e.g. 32, 64, 128)")
    return n


def default_g_channels(image_size: int, ch: int) -> list[int]:
    """G widths at resolutions 4, 8, ..., S: ``ch * min(16, S / r)`` at resolution r (BigGAN's 64/128 px
    layouts; halving the width each time the resolution doubles keeps the large maps cheap)."""
    res = [4 * 2**i for i in range(_check_size(image_size) - 1)]
    return [ch * min(16, image_size // r) for r in res]


def default_d_layout(image_size: int, ch: int) -> tuple[list[int], list[bool]]:
    """(output widths, downsample flags) of the D blocks. Up to 32 px: down to 8x8 (at least once), then two
    plain blocks (SNGAN/BigGAN CIFAR); above: down to 4x4, then one plain block (BigGAN 64/128 px). Widths
    start at ``ch`` and double per block up to the first plain block, at most ``16 * ch``."""
    n = _check_size(image_size)
    downs = [True] * max(1, n - 3) + [False, False] if image_size <= 32 else [True] * (n - 2) + [False]
    first_plain = downs.index(False)
    return [ch * min(16, 2 ** min(i, first_plain)) for i in range(len(downs))], downs


def _check_res(name: str, res: set[int], valid: list[int]) -> None:
    bad = sorted(res - set(valid))
    if bad:
        raise ConfigError(
            f"{name}={sorted(res)}: no block outputs resolution {bad}; valid resolutions: {valid}"
        )


def _ortho_init(module: nn.Module) -> None:
    """Orthogonal weights and zero biases for every conv/linear (BigGAN's default init)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.orthogonal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def apply_spectral_norm(module: nn.Module, embeddings: bool = False) -> nn.Module:
    """Parametrise every Conv2d and Linear (and Embedding when ``embeddings``) of ``module`` as W / sigma(W)
    with one power iteration per training forward (Miyato et al. 2018)."""
    kinds = (nn.Conv2d, nn.Linear) + ((nn.Embedding,) if embeddings else ())
    for m in list(module.modules()):
        if isinstance(m, kinds):
            spectral_norm(m, eps=1e-8)
    return module


class Generator(nn.Module):
    """``forward(z: [B, z_dim], y: LongTensor[B]) -> [B, out_channels, S, S]`` in [-1, 1]."""

    def __init__(
        self,
        image_size: int = 32,
        out_channels: int = 3,
        num_classes: int = 10,
        z_dim: int = 128,
        ch: int = 64,
        channels: Sequence[int] | None = None,
        attn_res: int | Sequence[int] | None = 16,
        mixer: str = "self_attention",
        attn_variant: str = "official",
        focal_window: int = 3,
        focal_level: int = 2,
        shared_dim: int = 0,
        class_input: bool = False,
        mixer_context: dict | None = None,
    ):
        super().__init__()
        chans = list(channels) if channels else default_g_channels(image_size, ch)
        res = [4 * 2**i for i in range(len(chans))]
        if res[-1] != image_size:
            raise ConfigError(
                f"g_channels={chans} gives {res[-1]} px images, expected {len(res)} entries "
                f"ending at image_size={image_size}"
            )
        attn = _as_res_set(attn_res) if mixer != NO_MIXER else set()
        _check_res("attn_res_g", attn, res[1:])
        self.z_dim, self.num_classes, self.image_size = z_dim, num_classes, image_size
        self.bottom_channels = chans[0]
        cond_dim = shared_dim if (shared_dim and num_classes) else None
        if class_input and not cond_dim:
            raise ConfigError(
                "class_input=true feeds the shared class embedding to G's first layer: it needs "
                "shared_dim > 0 and num_classes > 0"
            )
        self.class_input = bool(class_input)
        self.linear = nn.Linear(z_dim + (cond_dim if class_input else 0), chans[0] * 16)
        self.shared = nn.Embedding(num_classes, cond_dim) if cond_dim else None
        self.blocks = nn.ModuleList(
            GBlock(chans[i], chans[i + 1], num_classes, cond_dim) for i in range(len(chans) - 1)
        )
        context = dict(attn_variant=attn_variant, focal_window=focal_window, focal_level=focal_level,
                       **(mixer_context or {}))  # fmt: skip
        self.mixers = nn.ModuleList(
            make_mixer(mixer, chans[i + 1], res[i + 1], **context) if res[i + 1] in attn else nn.Identity()
            for i in range(len(chans) - 1)
        )
        self.out_bn = nn.BatchNorm2d(chans[-1])
        self.out_conv = nn.Conv2d(chans[-1], out_channels, 3, padding=1)
        _ortho_init(self)
        if self.shared is not None:
            nn.init.orthogonal_(self.shared.weight)
        apply_spectral_norm(self)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        c = self.shared(y) if self.shared is not None else y
        h = self.linear(torch.cat([z, c], dim=1) if self.class_input else z)
        h = h.view(z.shape[0], self.bottom_channels, 4, 4)
        for block, mixer in zip(self.blocks, self.mixers):
            h = mixer(block(h, c))
        return torch.tanh(self.out_conv(F.relu(self.out_bn(h))))

    def mixer_resolutions(self) -> dict[int, int]:
        """``{index in self.mixers: feature-map resolution}`` of the blocks that carry a mixer."""
        return {
            i: 8 * 2**i for i, m in enumerate(self.mixers) if not isinstance(m, nn.Identity)
        }  # block i outputs 4·2^(i+1) px

    @torch.no_grad()
    def mixer_maps(self, z: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Maps ``[B, r, r]`` of each mixer block of G, named ``g<r>`` by its resolution r, for the samples
        ``G(z, y)``: the modulator magnitude |h(ctx)| (focal modulation) or the attention each position
        receives (attention mixers, 1 = uniform), as FocalNet's :meth:`mixer_maps`; mixers without weights
        over positions give none. Call in the generator's sampling mode (its BatchNorm statistics)."""
        from attnbench.models.focalnet import capture_maps

        with capture_maps(self) as maps:
            self(z, y)
        out = {}
        for i, res in self.mixer_resolutions().items():
            names = [k for k in maps if k == f"mixers.{i}" or k.startswith(f"mixers.{i}.")]
            if names:
                out[f"g{res}"] = maps[names[0]]
        return out

    def mixer_map_legends(self) -> dict[str, tuple[str, str]]:
        """``{map name: (what it shows, its unit)}`` for the maps of :meth:`mixer_maps`, as the mixer module
        describes them (its ``map_legend``)."""
        out = {}
        for i, res in self.mixer_resolutions().items():
            legends = [m.map_legend for m in self.mixers[i].modules() if getattr(m, "map_legend", None)]
            if legends:
                out[f"g{res}"] = (f"{legends[0][0]}, generator at {res}×{res}", legends[0][1])
        return out


class Discriminator(nn.Module):
    """``forward(x: [B, in_channels, S, S], y: LongTensor[B]) -> [B]`` raw (hinge-loss) scores."""

    def __init__(
        self,
        image_size: int = 32,
        in_channels: int = 3,
        num_classes: int = 10,
        ch: int = 64,
        channels: Sequence[int] | None = None,
        attn_res: int | Sequence[int] | None = 16,
        mixer: str = "self_attention",
        attn_variant: str = "official",
        focal_window: int = 3,
        focal_level: int = 2,
        mixer_context: dict | None = None,
    ):
        super().__init__()
        chans, downs = default_d_layout(image_size, ch)
        if channels:
            if len(channels) != len(chans):
                raise ConfigError(
                    f"d_channels={list(channels)} must have {len(chans)} entries for "
                    f"image_size={image_size} (downsampling pattern {downs})"
                )
            chans = list(channels)
        res, r = [], image_size
        for d in downs:
            r = r // 2 if d else r
            res.append(r)
        attn = _as_res_set(attn_res) if mixer != NO_MIXER else set()
        _check_res("attn_res_d", attn, sorted(set(res)))
        self.num_classes = num_classes
        cins = [in_channels] + chans[:-1]
        self.blocks = nn.ModuleList(
            DBlock(cins[i], chans[i], downs[i], preact=i > 0) for i in range(len(chans))
        )
        # a resolution shared by several plain blocks gets its mixer after the first of them only
        placed, mixers = set(), []
        context = dict(attn_variant=attn_variant, focal_window=focal_window, focal_level=focal_level,
                       **(mixer_context or {}))  # fmt: skip
        for i in range(len(chans)):
            use = res[i] in attn and res[i] not in placed
            placed |= {res[i]} if use else set()
            mixers.append(make_mixer(mixer, chans[i], res[i], **context) if use else nn.Identity())
        self.mixers = nn.ModuleList(mixers)
        self.linear = nn.Linear(chans[-1], 1)
        self.embed = nn.Embedding(num_classes, chans[-1]) if num_classes else None
        _ortho_init(self)
        if self.embed is not None:
            nn.init.orthogonal_(self.embed.weight)
        apply_spectral_norm(self, embeddings=True)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = x
        for block, mixer in zip(self.blocks, self.mixers):
            h = mixer(block(h))
        h = F.relu(h).sum(dim=(2, 3))  # sum pooling, [B, C]
        out = self.linear(h).squeeze(1)
        if self.embed is not None:
            out = out + (self.embed(y) * h).sum(dim=1)  # projection term
        return out


class SAGAN(nn.Module):
    """Holds ``generator`` and ``discriminator``; ``forward(z, y)`` samples images with the generator."""

    def __init__(self, generator: Generator, discriminator: Discriminator):
        super().__init__()
        self.generator, self.discriminator = generator, discriminator
        self.z_dim, self.num_classes = generator.z_dim, generator.num_classes
        self.image_size = generator.image_size

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.generator(z, y)

    def attention_modules(self, which: str = "generator") -> list[SelfAttention2d]:
        """The self-attention blocks of the generator or discriminator, in forward order."""
        net = self.generator if which == "generator" else self.discriminator
        return [m for m in net.modules() if isinstance(m, SelfAttention2d)]


@register_model
def sagan(
    image_size: int = 32,
    channels: int = 3,
    num_classes: int = 10,
    z_dim: int = 128,
    ch: int = 64,
    g_ch: int | None = None,
    d_ch: int | None = None,
    g_channels: Sequence[int] | None = None,
    d_channels: Sequence[int] | None = None,
    mixer: str = "self_attention",
    attn_res_g: int | Sequence[int] | None = 16,
    attn_res_d: int | Sequence[int] | None = 16,
    attn_variant: str = "official",
    focal_window: int = 3,
    focal_level: int = 2,
    shared_dim: int = 0,
    class_input: bool = False,
    heads: int = 1,
    window_size: int = 4,
    attn_backend: str = "auto",
    init: str = "orthogonal",
    bn_momentum: float = 0.1,
    out_bn_momentum: float | None = None,
) -> SAGAN:
    """Class-conditional SAGAN for ``image_size`` px images with ``channels`` colour channels.

    ``ch`` is the width unit (``g_ch`` / ``d_ch`` override it per network; ``g_channels`` / ``d_channels``
    give explicit per-block widths). ``mixer`` selects the block at ``attn_res_g`` / ``attn_res_d``
    (feature-map resolutions; 0 or null = none); ``attn_variant`` = ``official`` (2x2-pooled keys/values,
    C/2 values) or ``paper`` (un-pooled, C/8 values). ``shared_dim=0``: per-class BatchNorm gains and biases
    (SAGAN release); ``shared_dim=d``: gains and biases are linear maps of a shared d-dim class embedding
    (BigGAN); ``class_input=true`` also feeds that embedding, concatenated with z, to G's first linear layer
    (BigGAN-deep). ``mixer`` is ``none`` or any ``spatial`` mixer of the catalogue; ``heads`` and
    ``window_size`` configure the attention mixers other than SAGAN's own (window / global attention),
    ``attn_backend`` how attention computes. ``init``: ``orthogonal`` (BigGAN's, the default) or ``xavier``
    (Glorot uniform, the SAGAN release's ``xavier_initializer``) for every conv/linear weight.
    ``bn_momentum`` / ``out_bn_momentum``: the running-statistics momentum of G's class-conditional
    BatchNorms / its last BatchNorm (torch's convention, 1 − TF's decay: the release's 0.999 / 0.9999 are
    1e-3 / 1e-4; null: ``bn_momentum``).
    """
    if init not in INITS:
        raise ConfigError(f"model.init={init!r}: expected one of {', '.join(INITS)}")
    if mixer != NO_MIXER and mixer not in list_mixers("spatial"):
        names = ", ".join([*list_mixers("spatial"), NO_MIXER])
        raise ConfigError(f"model.mixer={mixer!r} is not a SAGAN mixer; expected one of {names}")
    check_attn_backend(attn_backend)
    if attn_variant not in ATTN_VARIANTS:
        raise ConfigError(f"model.attn_variant={attn_variant!r}: expected one of {', '.join(ATTN_VARIANTS)}")
    common = dict(
        image_size=image_size,
        num_classes=num_classes,
        mixer=mixer,
        attn_variant=attn_variant,
        focal_window=focal_window,
        focal_level=focal_level,
        mixer_context=dict(num_heads=heads, window_size=window_size, attn_backend=attn_backend),
    )
    g = Generator(
        out_channels=channels,
        z_dim=z_dim,
        ch=g_ch or ch,
        channels=g_channels,
        attn_res=attn_res_g,
        shared_dim=shared_dim,
        class_input=class_input,
        **common,
    )
    d = Discriminator(in_channels=channels, ch=d_ch or ch, channels=d_channels, attn_res=attn_res_d, **common)
    if init == "xavier":
        _xavier_init(g)
        _xavier_init(d)
    for m in g.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = float(bn_momentum)
    g.out_bn.momentum = float(bn_momentum if out_bn_momentum is None else out_bn_momentum)
    return SAGAN(g, d)


INITS = ("orthogonal", "xavier")


@torch.no_grad()
def _xavier_init(module: nn.Module) -> None:
    """Glorot-uniform weights and zero biases for every conv/linear (spectrally normalised: the original
    weight, then the power-iteration vectors refreshed for it, as at construction)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            param = m.parametrizations.weight if hasattr(m, "parametrizations") else None
            nn.init.xavier_uniform_(param.original if param is not None else m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
            if param is not None:
                sn = param[0]
                sn._power_method(sn._reshape_weight_to_matrix(param.original), 15)
