"""A hierarchical vision backbone (FocalNet / Swin macro-architecture) whose token mixer is pluggable.

Yang et al.: "Focal Modulation Networks", NeurIPS 2022 (arXiv:2203.11926), Sec. 3 and Table 1 (the
FocalNet-T/S/B configurations); Liu et al.: "Swin Transformer", ICCV 2021, Sec. 3.1 (the same 4-stage layout).

Stem (4x4 patch conv + LN) -> 4 stages, each a 2x2 downsampling conv + LN (except the first) and pre-LN
blocks ``x + DropPath(LS(mixer(LN(x))))``, ``x + DropPath(LS(MLP(LN(x))))`` with MLP ratio 4 -> LN -> global
average pool -> linear head. Everything is channels-first [B, C, H, W]. The mixer is any ``spatial`` mixer of
the catalogue (:mod:`attnbench.mechanisms`: ``focal_modulation`` = FocalNet, ``window_attention`` = Swin with
shifted windows in every other block, ``global_attention`` = ViT-style MHSA, the MetaFormer baselines, ...);
the backbone asks the registry for it and passes what it knows about the block's place; only the mixer
differs. Mixers blind to positions get a learned absolute position embedding by default.

With ``mixer="focal_modulation"`` the state-dict keys and shapes are exactly those of timm's ``FocalNet``, so
``create_model("focalnet_tiny_srf").load_state_dict(timm.create_model("focalnet_tiny_srf").state_dict())``
is strict and gives the same logits. ``pretrained=PATH`` loads a local checkpoint in timm's layout or in the
official microsoft/FocalNet layout (remapped by :func:`remap_official`); nothing is ever downloaded.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from attnbench.errors import ConfigError
from attnbench.mechanisms.focal_modulation import FocalModulation, LayerNorm2d
from attnbench.mechanisms.global_attention import GlobalAttention
from attnbench.mechanisms.neighborhood_attention import NeighborhoodAttention
from attnbench.mechanisms.non_local import SelfAttention2d
from attnbench.mechanisms.registry import check_attn_backend, create_mixer, mixer_info
from attnbench.mechanisms.window_attention import WindowAttention
from attnbench.models.registry import register_model
from attnbench.safe_files import YACS_CONFIG, load_torch_file

log = logging.getLogger(__name__)

PATCH_SIZE = 4


# --------------------------------------------------------------------------------------------- layers
class DropPath(nn.Module):
    """Stochastic depth (Huang et al., 2016): zero a sample's residual branch with probability ``p`` and
    rescale the kept ones by ``1 / (1 - p)`` during training; identity in eval."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p:.3f}"


class LayerScale2d(nn.Module):
    """Per-channel learned scale of a residual branch (Touvron et al., CaiT, 2021): [B, C, H, W]."""

    def __init__(self, dim: int, init_value: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.view(1, -1, 1, 1)


class Mlp(nn.Module):
    """Per-position MLP as 1x1 convs: [B, C, H, W] -> [B, C, H, W], hidden width ``C * ratio``, GELU."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, kernel_size=1)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Conv2d(hidden, dim, kernel_size=1)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class Downsample(nn.Module):
    """Strided conv + LN: [B, C_in, H, W] -> [B, C_out, H / s, W / s] (the stem uses s = 4, stages s = 2).

    ``overlap`` uses the overlapping kernels of the large FocalNets (7/pad 2 for s = 4, 3/pad 1 for s = 2).
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int, overlap: bool = False, norm_eps: float = 1e-5):
        super().__init__()
        kernel, padding = stride, 0
        if overlap:
            kernel, padding = {4: (7, 2), 2: (3, 1)}[stride]
        self.proj = nn.Conv2d(in_chs, out_chs, kernel_size=kernel, stride=stride, padding=padding)
        self.norm = LayerNorm2d(out_chs, eps=norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class PatchMerging(nn.Module):
    """Swin's downsampling (Liu et al. 2021, Sec. 3.1 "patch merging"): the channels of each 2x2
    neighbourhood concatenated (4C, in timm's order: column offset major, then row offset), LayerNorm, a
    linear map without bias: [B, C, H, W] -> [B, C_out, H / 2, W / 2]. Keys ``norm`` [4C] and ``reduction``
    [C_out, 4C] as timm's."""

    def __init__(self, in_chs: int, out_chs: int, norm_eps: float = 1e-5):
        super().__init__()
        self.norm = nn.LayerNorm(4 * in_chs, eps=norm_eps)
        self.reduction = nn.Linear(4 * in_chs, out_chs, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x = x.permute(0, 2, 3, 1).reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.reduction(self.norm(x)).permute(0, 3, 1, 2)


class Block(nn.Module):
    """Pre-LN residual block around a token mixer and an MLP: [B, C, H, W] -> [B, C, H, W].

    The mixer is stored under the attribute its registration names (``modulation`` for focal modulation and
    ``attn`` for attention, timm's names; ``token_mixer`` for the MetaFormer baselines).
    ``use_post_norm`` moves the LNs after the branches (the large FocalNets).
    """

    def __init__(
        self,
        dim: int,
        mixer: nn.Module,
        mixer_name: str,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        layerscale_value: float | None = None,
        use_post_norm: bool = False,
        proj_drop: float = 0.0,
        norm_eps: float = 1e-5,
    ):
        super().__init__()

        def norm(used: bool) -> nn.Module:
            return LayerNorm2d(dim, eps=norm_eps) if used else nn.Identity()

        self.mixer_name = mixer_name
        self.norm1 = norm(not use_post_norm)
        self.add_module(mixer_name, mixer)
        self.norm1_post = norm(use_post_norm)
        self.ls1 = LayerScale2d(dim, layerscale_value) if layerscale_value is not None else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = norm(not use_post_norm)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=proj_drop)
        self.norm2_post = norm(use_post_norm)
        self.ls2 = LayerScale2d(dim, layerscale_value) if layerscale_value is not None else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    @property
    def mixer(self) -> nn.Module:
        return getattr(self, self.mixer_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.norm1_post(self.mixer(self.norm1(x)))))
        return x + self.drop_path2(self.ls2(self.norm2_post(self.mlp(self.norm2(x)))))


class Stage(nn.Module):
    """Optional 2x downsampling followed by ``len(blocks)`` blocks.

    With ``grad_checkpointing`` (training only) each block's activations are recomputed in the backward pass
    instead of stored (``torch.utils.checkpoint``, non-reentrant; the RNG state is replayed, so dropout and
    stochastic depth draw the same masks twice): less memory for one extra forward per block.
    """

    def __init__(self, downsample: nn.Module, blocks: Sequence[nn.Module], grad_checkpointing: bool = False):
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.ModuleList(blocks)
        self.grad_checkpointing = grad_checkpointing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        recompute = self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting()
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=False) if recompute else block(x)
        return x


class ClassifierHead(nn.Module):
    """Global average pool -> dropout -> linear: [B, C, H, W] -> [B, num_classes] (timm's key ``head.fc``)."""

    def __init__(self, dim: int, num_classes: int, drop: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout(drop)
        self.fc = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(x.mean(dim=(2, 3)))
        return x if pre_logits else self.fc(x)


# ------------------------------------------------------------------------------------------- backbone
def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


class FocalNet(nn.Module):
    """Hierarchical backbone: images [B, in_chans, H, W] -> logits [B, num_classes].

    Args:
        in_chans, num_classes: input channels and classes (``num_classes=0``: no head, features out).
        embed_dim: width of stage 1; stage ``i`` has ``embed_dim * 2**i`` channels.
        depths: blocks per stage.
        mixer: a ``spatial`` mixer of the catalogue (``attnbench.mechanisms.list_mixers("spatial")``).
        mlp_ratio: MLP hidden width / block width.
        focal_levels, focal_windows: per-stage focal levels ``L`` and first kernel sizes (focal modulation).
        use_post_norm_in_modulation, normalize_modulator: focal-modulation options (see the mechanism).
        window_size: Swin window side (window attention).
        head_dim: channels per attention head (heads = width / head_dim).
        qkv_bias: bias of the attention q/k/v projection.
        abs_pos_embed: learned absolute position embedding added after the stem; ``None`` = only for mixers
            registered as blind to positions (global attention, SAGAN's self-attention).
        img_size: expected input size; when given, it is checked against the total stride and the window.
            The position embedding is made for it (default 224) and resized for other inputs.
        use_overlap_down, use_post_norm, layerscale_value: options of the large FocalNets.
        downsample: between stages, ``conv`` (FocalNet's strided conv + LN: the controlled backbone every
            mixer shares) or ``patch_merging`` (Swin's; ``swin_*`` = window attention + patch merging).
        drop_rate, proj_drop_rate, attn_drop_rate: dropout before the head / after projections / on attention.
        drop_path_rate: stochastic depth of the last block; it grows linearly from 0 over all blocks.
        grad_checkpointing: recompute each block's activations in the backward pass (memory for time).
        attn_backend: how attention mixers compute (``auto`` | ``sdpa`` | ``flex`` | ``math``), never what.
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        mixer: str = "focal_modulation",
        mlp_ratio: float = 4.0,
        focal_levels: Sequence[int] = (2, 2, 2, 2),
        focal_windows: Sequence[int] = (3, 3, 3, 3),
        use_post_norm_in_modulation: bool = False,
        normalize_modulator: bool = False,
        window_size: int = 7,
        head_dim: int = 32,
        qkv_bias: bool = True,
        abs_pos_embed: bool | None = None,
        img_size: int | Sequence[int] | None = None,
        use_overlap_down: bool = False,
        use_post_norm: bool = False,
        layerscale_value: float | None = None,
        downsample: str = "conv",
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        grad_checkpointing: bool = False,
        attn_backend: str = "auto",
    ):
        super().__init__()
        depths = tuple(int(d) for d in depths)
        check_attn_backend(attn_backend)
        check_config(mixer, depths, embed_dim, focal_levels, focal_windows, window_size, head_dim, img_size)
        if downsample not in ("conv", "patch_merging"):
            raise ConfigError(f"downsample={downsample!r}: expected conv or patch_merging")
        self.mixer = mixer
        self.num_classes = num_classes
        self.embed_dim = [embed_dim * 2**i for i in range(len(depths))]
        self.num_features = self.embed_dim[-1]
        self.img_size = None if img_size is None else _pair(img_size)

        self.stem = Downsample(in_chans, self.embed_dim[0], stride=PATCH_SIZE, overlap=use_overlap_down)
        if abs_pos_embed is None:
            abs_pos_embed = mixer_info("spatial", mixer).position_blind
        self.pos_embed = None
        if abs_pos_embed:
            gh, gw = (s // PATCH_SIZE for s in (self.img_size or (224, 224)))
            self.pos_embed = nn.Parameter(torch.zeros(1, self.embed_dim[0], gh, gw))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)

        self._mixer_opts = dict(
            focal_levels=focal_levels, focal_windows=focal_windows, window_size=window_size,
            head_dim=head_dim, qkv_bias=qkv_bias, use_post_norm_in_modulation=use_post_norm_in_modulation,
            normalize_modulator=normalize_modulator, attn_drop=attn_drop_rate, proj_drop=proj_drop_rate,
            attn_backend=attn_backend,
        )  # fmt: skip
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()  # linear stochastic-depth rule
        stages = []
        for i, depth in enumerate(depths):
            dim = self.embed_dim[i]
            if i == 0:
                down = nn.Identity()
            elif downsample == "patch_merging":
                down = PatchMerging(self.embed_dim[i - 1], dim)
            else:
                down = Downsample(self.embed_dim[i - 1], dim, 2, use_overlap_down)
            blocks = []
            for j in range(depth):
                name, mod = self._make_mixer(dim, i, j)
                blocks.append(Block(
                    dim, mod, name, mlp_ratio=mlp_ratio, drop_path=rates[sum(depths[:i]) + j],
                    layerscale_value=layerscale_value, use_post_norm=use_post_norm, proj_drop=proj_drop_rate,
                ))  # fmt: skip
            stages.append(Stage(down, blocks, grad_checkpointing))
        self.layers = nn.Sequential(*stages)
        self.norm = LayerNorm2d(self.num_features, eps=1e-5)
        self.head = ClassifierHead(self.num_features, num_classes, drop=drop_rate)
        self.apply(_init_weights)

    def _make_mixer(self, dim: int, stage: int, index: int) -> tuple[str, nn.Module]:
        """(attribute name, token mixer) of block ``index`` of ``stage``, from the ``spatial`` registry; the
        context names the block's place (``block_index``: shifted windows in odd blocks; ``input_size``: the
        stage's map when the image size is known)."""
        o = self._mixer_opts
        size = None
        if self.img_size is not None:
            size = tuple(s // (PATCH_SIZE * 2**stage) for s in self.img_size)
        context = dict(
            head_dim=o["head_dim"], window_size=o["window_size"], block_index=index, stage=stage,
            focal_window=o["focal_windows"][stage], focal_level=o["focal_levels"][stage],
            use_post_norm_in_modulation=o["use_post_norm_in_modulation"],
            normalize_modulator=o["normalize_modulator"], qkv_bias=o["qkv_bias"], attn_drop=o["attn_drop"],
            proj_drop=o["proj_drop"], input_size=size, attn_backend=o["attn_backend"],
        )  # fmt: skip
        try:
            module = create_mixer("spatial", self.mixer, dim, **context)
        except ValueError as err:
            raise ConfigError(f"mixer={self.mixer!r} in stage {stage + 1}: {err}") from err
        return mixer_info("spatial", self.mixer).attr, module

    def _pos(self, size: torch.Size) -> torch.Tensor:
        pos = self.pos_embed
        if tuple(pos.shape[-2:]) != tuple(size):
            pos = F.interpolate(pos, size=tuple(size), mode="bicubic", align_corners=False)
        return pos

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """timm's switch: recompute block activations in the backward pass (saves memory, costs time)."""
        for stage in self.layers:
            stage.grad_checkpointing = enable

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, in_chans, H, W] -> normalised last-stage map [B, num_features, H/32, W/32]."""
        x = self.stem(x)
        if self.pos_embed is not None:
            x = x + self._pos(x.shape[-2:])
        return self.norm(self.layers(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """[B, num_features, h, w] -> logits [B, num_classes] (pooled features if ``pre_logits``)."""
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.no_grad()
    def mixer_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Maps [B, h, w] of the last block of each stage whose map is larger than 1x1: the modulator
        magnitude |h(ctx)| (focal modulation) or the attention each position receives (attention mixers,
        1 = uniform)."""
        with capture_maps(self) as maps:
            self(x)
        out = {}
        for i, stage in enumerate(self.layers):
            name = f"layers.{i}.blocks.{len(stage.blocks) - 1}.{stage.blocks[-1].mixer_name}"
            if name in maps and maps[name].shape[-1] * maps[name].shape[-2] > 1:
                out[f"stage{i + 1}"] = maps[name]
        return out

    def mixer_map_legends(self) -> dict[str, tuple[str, str]]:
        """``{stage name: (what its map shows, the unit of its values)}`` for the maps of :meth:`mixer_maps`,
        as the last block's mixer describes them (its ``map_legend``)."""
        out = {}
        for i, stage in enumerate(self.layers):
            legend = getattr(stage.blocks[-1].mixer, "map_legend", None)
            if legend is not None:
                out[f"stage{i + 1}"] = (f"{legend[0]}, last block", legend[1])
        return out


def _init_weights(module: nn.Module) -> None:
    """Truncated-normal (std 0.02) conv/linear weights, zero biases (as FocalNet and timm)."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def check_config(
    mixer: str,
    depths: Sequence[int],
    embed_dim: int,
    focal_levels: Sequence[int],
    focal_windows: Sequence[int],
    window_size: int,
    head_dim: int,
    img_size: int | Sequence[int] | None,
) -> None:
    """Raise ConfigError for settings that cannot build or cannot run at ``img_size`` (the mixer's own
    settings are checked by its builder)."""
    mixer_info("spatial", mixer)  # an unknown name: ConfigError listing the spatial mixers
    if not depths or any(d < 1 for d in depths):
        raise ConfigError(f"depths={list(depths)}: expected one positive block count per stage")
    n = len(depths)
    if len(focal_levels) < n or len(focal_windows) < n:
        raise ConfigError(
            f"focal_levels={list(focal_levels)} / focal_windows={list(focal_windows)} need one "
            f"entry per stage ({n} stages)"
        )
    if img_size is None:
        return
    stride = PATCH_SIZE * 2 ** (n - 1)
    for s in _pair(img_size):
        if s % stride:
            raise ConfigError(
                f"image size {s} is not divisible by the total stride {stride} "
                f"(patch {PATCH_SIZE} x 2^{n - 1} "
                f"downsamplings for {n} stages); use a multiple of {stride}"
            )


# ------------------------------------------------------------------------------------- visualisation
@contextmanager
def capture_maps(model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """While active, every forward of ``model`` fills the yielded dict with one map [B, H, W] per token
    mixer (keyed by the mixer's module name): |h(ctx)| averaged over channels for focal modulation, the
    attention each position receives (head- and query-averaged, 1 = uniform) for the attention mixers
    (window, global, neighborhood, SAGAN's self-attention). Attention runs explicitly (not through SDPA or
    FlexAttention) inside the context; hooks and flags are removed on exit. Mixers without weights over
    positions (identity, pooling, dwconv, random) give no map.
    """
    maps: dict[str, torch.Tensor] = {}
    sizes: dict[str, tuple[int, int]] = {}
    handles, flagged, stored = [], [], []

    def size_hook(name):
        def hook(_mod, args):
            sizes[name] = tuple(args[0].shape[-2:])

        return hook

    def modulator_hook(name):
        def hook(_mod, _args, out):
            maps[name] = FocalModulation.modulator_map(out.detach())

        return hook

    def attn_hook(name, mech):
        def hook(_mod, _args, out):
            maps[name] = mech.received_map(out.detach(), *sizes[name])

        return hook

    def stored_hook(name, mech):
        def hook(_mod, args, _out):
            maps[name] = mech.received_map(mech.last_attention, *args[0].shape[-2:])

        return hook

    for name, mod in model.named_modules():
        if isinstance(mod, FocalModulation):
            handles.append(mod.modulator.register_forward_hook(modulator_hook(name)))
        elif isinstance(mod, (WindowAttention, GlobalAttention, NeighborhoodAttention)):
            handles.append(mod.register_forward_pre_hook(size_hook(name)))
            handles.append(mod.attn_map.register_forward_hook(attn_hook(name, mod)))
            flagged.append((mod, mod.explicit_attn))
            mod.explicit_attn = True
        elif isinstance(mod, SelfAttention2d):
            handles.append(mod.register_forward_hook(stored_hook(name, mod)))
            stored.append((mod, mod.store_attention))
            mod.store_attention = True
    try:
        yield maps
    finally:
        for h in handles:
            h.remove()
        for mod, flag in flagged:
            mod.explicit_attn = flag
        for mod, flag in stored:
            mod.store_attention, mod.last_attention = flag, None


# ---------------------------------------------------------------------------------------- checkpoints
def remap_official(
    state_dict: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Rename a microsoft/FocalNet state dict to this model's (= timm's) layout.

    Official names: ``patch_embed.*`` (stem), ``layers.N.downsample`` at the END of stage N (here: start of
    stage N+1), ``gamma_1/2`` (LayerScale), ``modulation.ln`` (post-LN in modulation), ``norm1/2`` that act as
    post-norms when the model uses them, ``head`` (Linear). Linear weights [out, in] become 1x1 convs
    [out, in, 1, 1] where ``target`` (this model's state dict) says so.
    """
    out = {}
    for key, value in state_dict.items():
        k = re.sub(r"^patch_embed\.", "stem.", key)
        k = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m.group(1)) + 1}.downsample.", k)
        k = re.sub(r"\.gamma_([12])$", r".ls\1.gamma", k)
        k = k.replace(".modulation.ln.", ".modulation.norm.")
        k = re.sub(r"^head\.", "head.fc.", k)
        if k not in target:
            k = re.sub(r"\.norm([12])\.", r".norm\1_post.", k)
        if k in target and target[k].shape != value.shape and target[k].numel() == value.numel():
            value = value.reshape(target[k].shape)
        out[k] = value
    return out


def remap_swin(
    state_dict: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """timm's ``swin_*_patch4_window7_224`` state dict → this model's (``downsample="patch_merging"``):
    ``patch_embed.*`` is the stem; the MLP's Linear weights [out, in] become 1x1 convs [out, in, 1, 1]."""
    out = {}
    for key, value in state_dict.items():
        k = re.sub(r"^patch_embed\.", "stem.", key)
        if k in target and target[k].shape != value.shape and target[k].numel() == value.numel():
            value = value.reshape(target[k].shape)
        out[k] = value
    return out


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    # the official microsoft/FocalNet checkpoints pickle their yacs training config next to the weights:
    # it is admitted as a plain dict stand-in; any other object is refused (it could run code)
    obj = load_torch_file(path, allow=YACS_CONFIG, what="model.pretrained")
    for key in ("model", "state_dict", "model_ema"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise ConfigError(f"pretrained={str(path)!r} does not hold a state dict (got {type(obj).__name__})")
    for prefix in ("net.", "module.", "model."):  # Lightning task, DDP, wrappers
        if any(k.startswith(prefix + "stem.") or k.startswith(prefix + "patch_embed.") for k in obj):
            obj = {k[len(prefix) :]: v for k, v in obj.items() if k.startswith(prefix)}
    return obj


def load_checkpoint(model: FocalNet, path: str | Path) -> None:
    """Load a local checkpoint (timm or official microsoft/FocalNet layout, .pth/.pt/.ckpt/.safetensors).

    A classifier of another size is dropped (the new head keeps its fresh init, for fine-tuning); 3-channel
    stem filters are summed for a 1-channel model. Anything else that does not fit raises ConfigError.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"pretrained={str(path)!r} is not a file; expected a local checkpoint (.pth/.safetensors) "
            "in timm's or the official microsoft/FocalNet key layout (nothing is downloaded)"
        )
    sd = _read_state_dict(path)
    target = model.state_dict()
    if "patch_embed.proj.weight" in sd and any(k.endswith("downsample.reduction.weight") for k in sd):
        sd = remap_swin(sd, target)  # timm's Swin: only the stem's name and Linear-vs-1x1 layouts differ
    elif "patch_embed.proj.weight" in sd:
        sd = remap_official(sd, target)
    stem = sd.get("stem.proj.weight")
    if stem is not None and stem.shape[1] != target["stem.proj.weight"].shape[1]:
        if target["stem.proj.weight"].shape[1] != 1:
            raise ConfigError(
                f"checkpoint stem has {stem.shape[1]} input channels, the model "
                f"{target['stem.proj.weight'].shape[1]}; only 1-channel adaptation is supported"
            )
        sd["stem.proj.weight"] = stem.sum(dim=1, keepdim=True)
    dropped = [
        k
        for k in ("head.fc.weight", "head.fc.bias")
        if k in sd and k in target and sd[k].shape != target[k].shape
    ]
    for k in dropped:
        del sd[k]
    if dropped:
        log.warning("checkpoint classifier has another number of classes: keeping a fresh head")
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False)
    except RuntimeError as err:
        raise ConfigError(f"checkpoint {path} does not fit the model: {err}") from err
    missing = [k for k in missing if k not in dropped]
    if missing or unexpected:
        raise ConfigError(
            f"checkpoint {path} does not fit the model (mixer={model.mixer!r}): missing keys "
            f"{missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected keys "
            f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    log.info("loaded %s", path)


# ------------------------------------------------------------------------------------------ registry
def _create(pretrained: str | bool | None, **kwargs) -> FocalNet:
    model = FocalNet(**kwargs)
    if pretrained is True:
        raise ConfigError(
            "pretrained=true: attnbench never downloads weights; pass the path of a local checkpoint"
        )
    if pretrained:
        load_checkpoint(model, pretrained)
    return model


@register_model
def focalnet_tiny_srf(pretrained: str | None = None, **kwargs) -> FocalNet:
    """FocalNet-T, small receptive field (focal levels 2): 28.4M params (paper Table 1)."""
    return _create(pretrained, **{"depths": (2, 2, 6, 2), "embed_dim": 96, **kwargs})


@register_model
def focalnet_small_srf(pretrained: str | None = None, **kwargs) -> FocalNet:
    """FocalNet-S (SRF): depths 2-2-18-2, width 96."""
    return _create(pretrained, **{"depths": (2, 2, 18, 2), "embed_dim": 96, **kwargs})


@register_model
def focalnet_base_srf(pretrained: str | None = None, **kwargs) -> FocalNet:
    """FocalNet-B (SRF): depths 2-2-18-2, width 128."""
    return _create(pretrained, **{"depths": (2, 2, 18, 2), "embed_dim": 128, **kwargs})


@register_model
def focalnet_tiny_lrf(pretrained: str | None = None, **kwargs) -> FocalNet:
    """FocalNet-T, large receptive field (focal levels 3)."""
    return _create(
        pretrained, **{"depths": (2, 2, 6, 2), "embed_dim": 96, "focal_levels": (3, 3, 3, 3), **kwargs}
    )


@register_model
def focalnet_small_lrf(pretrained: str | None = None, **kwargs) -> FocalNet:
    """FocalNet-S (LRF)."""
    return _create(
        pretrained, **{"depths": (2, 2, 18, 2), "embed_dim": 96, "focal_levels": (3, 3, 3, 3), **kwargs}
    )


@register_model
def focalnet_base_lrf(pretrained: str | None = None, **kwargs) -> FocalNet:
    """FocalNet-B (LRF)."""
    return _create(
        pretrained, **{"depths": (2, 2, 18, 2), "embed_dim": 128, "focal_levels": (3, 3, 3, 3), **kwargs}
    )


@register_model
def focalnet_micro(pretrained: str | None = None, **kwargs) -> FocalNet:
    """A small FocalNet for 32x32 inputs (digits): width 32, depths 2-2-2-2, window 4, 16-channel heads."""
    defaults = {
        "depths": (2, 2, 2, 2),
        "embed_dim": 32,
        "window_size": 4,
        "head_dim": 16,
        "drop_path_rate": 0.05,
    }
    return _create(pretrained, **{**defaults, **kwargs})


# the large FocalNets (paper Table 2, ImageNet-22k pre-training): overlapping downsampling, post-norm and
# LayerScale; the same names and settings as timm's, so their state dicts load strictly
_LARGE = {"depths": (2, 2, 18, 2), "use_post_norm": True, "use_overlap_down": True, "layerscale_value": 1e-4}
_LARGE_VARIANTS = {
    "focalnet_large_fl3": {"embed_dim": 192, "focal_levels": (3,) * 4, "focal_windows": (5,) * 4},
    "focalnet_large_fl4": {"embed_dim": 192, "focal_levels": (4,) * 4},
    "focalnet_xlarge_fl3": {"embed_dim": 256, "focal_levels": (3,) * 4, "focal_windows": (5,) * 4},
    "focalnet_xlarge_fl4": {"embed_dim": 256, "focal_levels": (4,) * 4},
    "focalnet_huge_fl3": {
        "embed_dim": 352,
        "focal_levels": (3,) * 4,
        "focal_windows": (3,) * 4,
        "use_post_norm_in_modulation": True,
    },
    "focalnet_huge_fl4": {"embed_dim": 352, "focal_levels": (4,) * 4, "use_post_norm_in_modulation": True},
}


def _large_factory(name: str, settings: dict):
    def factory(pretrained: str | None = None, **kwargs) -> FocalNet:
        return _create(pretrained, **{**_LARGE, **settings, **kwargs})

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"{name}: timm's settings ({settings['embed_dim']} wide, depths 2-2-18-2)."
    return register_model(factory)


for _name, _settings in _LARGE_VARIANTS.items():
    globals()[_name] = _large_factory(_name, _settings)


# Swin Transformers (Liu et al. 2021, Table 1): window attention with shifted windows and Swin's patch
# merging, so timm's swin_*_patch4_window7_224 weights load (model.pretrained=FILE) and give timm's
# logits. The controlled comparison (every mixer with FocalNet's conv downsampling) is focalnet_* with
# mixer=window_attention.
_SWIN = {"mixer": "window_attention", "downsample": "patch_merging", "window_size": 7, "head_dim": 32,
         "abs_pos_embed": False}  # fmt: skip
_SWIN_VARIANTS = {
    "swin_tiny": {"embed_dim": 96, "depths": (2, 2, 6, 2), "drop_path_rate": 0.2},
    "swin_small": {"embed_dim": 96, "depths": (2, 2, 18, 2), "drop_path_rate": 0.3},
    "swin_base": {"embed_dim": 128, "depths": (2, 2, 18, 2), "drop_path_rate": 0.5},
}


def _swin_factory(name: str, settings: dict):
    def factory(pretrained: str | None = None, **kwargs) -> FocalNet:
        return _create(pretrained, **{**_SWIN, **settings, **kwargs})

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = (
        f"{name}: Swin (window attention + patch merging), timm's swin_{name[5:]}_patch4_window7_224."
    )
    return register_model(factory)


for _name, _settings in _SWIN_VARIANTS.items():
    globals()[_name] = _swin_factory(_name, _settings)
