"""Show, Attend and Tell (Xu et al. 2015): a CNN feature grid, an LSTM decoder with additive attention.

Encoder (Sec. 3.1.1): a CNN whose last convolutional grid gives L annotation vectors a_i of size D. For real
images a torchvision ResNet/VGG trunk (weights from a local file, never downloaded; frozen unless
``fine_tune_encoder``); for the embedded digit canvases a small CNN trained from scratch.

Decoder (Sec. 3.1.2): an LSTM whose input at step t is [E y_{t-1}; z_t], with h_0, c_0 = tanh MLPs of the
mean annotation vector (f_init,h / f_init,c); the context z_t comes from
:class:`attnbench.mechanisms.additive_attention.AdditiveAttention` conditioned on h_{t-1}; the deep output
layer (eq. 7) p(y_t) ∝ exp(L_o(E y_{t-1} + L_h h_t + L_z z_t)), with a tanh before L_o (as in the authors'
implementation) and dropout.

Decoding: :meth:`ShowAttendTell.beam_search` runs a beam search batched over images (greedy = beam 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbench.errors import ConfigError
from attnbench.mechanisms.registry import check_attn_backend, create_mixer, mixer_info
from attnbench.models.registry import register_model
from attnbench.safe_files import load_torch_file

SPECIALS = ("<pad>", "<start>", "<end>", "<unk>")
TORCHVISION_TRUNKS = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "vgg11",
    "vgg13",
    "vgg16",
    "vgg19",
    "vgg11_bn",
    "vgg13_bn",
    "vgg16_bn",
    "vgg19_bn",
)


class DigitsCNN(nn.Module):
    """A small CNN for the digit canvases: ``[B, C, H, W] -> [B, D, H/2^p, W/2^p]``.

    One 3x3 conv-BN-ReLU per entry of ``channels``; a 2x2 max-pool after every second convolution, ``n_pool``
    times (p = ``n_pool``). D = ``channels[-1]``.
    """

    def __init__(
        self, in_channels: int = 1, channels: Sequence[int] = (32, 32, 64, 64, 128), n_pool: int = 1
    ):
        super().__init__()
        layers: list[nn.Module] = []
        cin, pools = in_channels, 0
        for i, cout in enumerate(channels):
            layers += [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]
            cin = cout
            if i % 2 == 1 and pools < n_pool and i < len(channels) - 1:
                layers.append(nn.MaxPool2d(2))
                pools += 1
        self.body = nn.Sequential(*layers)
        self.out_dim = cin

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


def _load_local_weights(net: nn.Module, path: str, head_prefixes: tuple[str, ...]) -> None:
    """Load a torchvision state dict from ``path``; only the classifier head may be missing."""
    import os

    if not os.path.isfile(path):
        raise ConfigError(f"encoder_weights={path!r} is not a file; expected a torchvision state dict (.pth)")
    state = load_torch_file(path, what="model.encoder_weights")
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise ConfigError(f"encoder_weights={path!r} does not fit the trunk: {str(err)[:300]}") from err
    missing = [k for k in missing if not k.startswith(head_prefixes)]
    if missing or unexpected:
        raise ConfigError(
            f"encoder_weights={path!r} does not match the trunk: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )


def torchvision_trunk(name: str, weights: str | None = None) -> tuple[nn.Module, int]:
    """The convolutional trunk of a torchvision ResNet/VGG (no pooling/classifier) and its channel count.

    VGGs end after the ReLU of their last convolution, before the last max-pool (``features[:-1]``): for
    ``vgg19`` that is conv5_4, stride 16, the paper's 14 x 14 x 512 grid at 224 x 224 input (Sec. 4.3), used
    as is with ``encoder_grid=None``. ResNets end after ``layer4`` (stride 32, 2048 channels for
    ResNet-50/101/152): 7 x 7 at 224 px, 8 x 8 at 256 px; ``encoder_grid=14`` then resamples that grid *up*
    by adaptive average pooling (each output cell averages 1-2 neighbouring cells per axis), a common
    re-implementation choice that is not the paper's grid.
    """
    import torchvision

    if name not in TORCHVISION_TRUNKS:
        raise ConfigError(f"encoder={name!r} is not one of digits_cnn, {', '.join(TORCHVISION_TRUNKS)}")
    net = getattr(torchvision.models, name)(weights=None)
    if weights:
        _load_local_weights(net, weights, ("fc.", "classifier."))
    if name.startswith("resnet"):
        return nn.Sequential(*list(net.children())[:-2]), net.fc.in_features
    return net.features[:-1], 512


class ShowAttendTell(nn.Module):
    """The captioner. ``vocab`` lists the words by id and must start with ``<pad> <start> <end> <unk>``.

    Args:
        vocab: the word list (id -> word).
        mixer: a ``context`` mixer of the registry (``soft`` | ``hard`` | ``none`` (mean-pooled context) |
            ``focal_modulation`` | ...): the compared mechanism. How it is trained and decoded follows its
            :class:`~attnbench.mechanisms.registry.MixerInfo` (``stochastic``, ``expected_form``,
            ``reads_grid``); the model names no mixer.
        encoder: ``digits_cnn`` or a torchvision trunk name (``resnet101``, ``vgg19``, ...).
        encoder_weights: a local torchvision state-dict file for the trunk (never downloaded).
        fine_tune_encoder: train the torchvision trunk too (else it is frozen and kept in eval mode).
        encoder_grid: adaptive-average-pool the feature map to this many cells per side (None: keep; the
            paper's VGG-19 grid at 224 px is 14 x 14 without it, see :func:`torchvision_trunk`).
        in_channels: image channels (digits_cnn only).
        cnn_channels, cnn_pools: conv widths and number of 2x2 poolings of the digits CNN (see DigitsCNN).
        embed_dim, hidden_dim, attn_dim: sizes of E, the LSTM state and the attention MLP.
        gate: the gating scalar beta (Sec. 4.2.1).
        dropout: dropout before the output layer L_o.
        dropout_h: also apply that dropout to h_t where it enters the output layer (L_h h_t; never to the
            recurrent state), as arctic-captions' ``use_dropout`` does.
        hard_eval: a stochastic mixer (hard attention) at evaluation: ``expected`` (default: the read of its
            ``expected_form``, the expected context, as arctic-captions decodes hard-attention models unless
            asked to sample) or ``argmax`` (the most likely location). Ignored by other mixers.
    """

    def __init__(
        self,
        vocab: Sequence[str],
        mixer: str = "soft",
        encoder: str = "digits_cnn",
        encoder_weights: str | None = None,
        fine_tune_encoder: bool = False,
        encoder_grid: int | None = None,
        in_channels: int = 3,
        cnn_channels: Sequence[int] = (32, 32, 64, 64, 128),
        cnn_pools: int = 1,
        embed_dim: int = 128,
        hidden_dim: int = 256,
        attn_dim: int = 128,
        gate: bool = True,
        dropout: float = 0.5,
        hard_eval: str = "expected",
        focal_levels: int = 2,
        focal_window: int = 3,
        attn_backend: str = "auto",
        dropout_h: bool = False,
    ):
        super().__init__()
        vocab = [str(w) for w in vocab]
        if tuple(vocab[:4]) != SPECIALS:
            raise ConfigError(f"the vocabulary must start with {SPECIALS}; got {vocab[:4]}")
        info = mixer_info("context", mixer)  # an unknown name: ConfigError listing the context mixers
        check_attn_backend(attn_backend)
        if hard_eval not in ("argmax", "expected"):
            raise ConfigError(f"hard_eval={hard_eval!r}; expected argmax or expected")
        self.vocab = vocab
        self.pad_id, self.start_id, self.end_id, self.unk_id = 0, 1, 2, 3
        self.mixer, self.hard_eval, self.mixer_info = mixer, hard_eval, info
        # the reads this model makes, by mode: its mixer's and, for a stochastic one, its expected form's
        self.read_info = {mixer: info}
        if info.expected_form is not None:
            self.read_info[info.expected_form] = mixer_info("context", info.expected_form)
        if encoder == "digits_cnn":
            self.encoder = DigitsCNN(in_channels, cnn_channels, cnn_pools)
            feat_dim = self.encoder.out_dim
            self.frozen_encoder = False
        else:
            if not encoder_weights and not fine_tune_encoder:
                raise ConfigError(
                    f"model.encoder={encoder} is frozen (model.fine_tune_encoder=false) but has no weights, "
                    "so its features would be random: pass model.encoder_weights=/path/to/weights.pth (a "
                    "local torchvision state dict; nothing is downloaded), or model.fine_tune_encoder=true "
                    "to train it from scratch"
                )
            self.encoder, feat_dim = torchvision_trunk(encoder, encoder_weights)
            self.frozen_encoder = not fine_tune_encoder
            self.encoder.requires_grad_(not self.frozen_encoder)
        self.pool = nn.AdaptiveAvgPool2d(encoder_grid) if encoder_grid else nn.Identity()
        self.feat_dim = feat_dim
        v = len(vocab)
        self.embed = nn.Embedding(v, embed_dim)  # E
        self.init_h = nn.Linear(feat_dim, hidden_dim)  # f_init,h
        self.init_c = nn.Linear(feat_dim, hidden_dim)  # f_init,c
        self.attention = create_mixer(  # the context mixer, from the registry (attribute ``attention``)
            "context", mixer, feat_dim, hidden_dim=hidden_dim, attn_dim=attn_dim, gate=gate,
            focal_levels=focal_levels, focal_window=focal_window, attn_backend=attn_backend,
        )  # fmt: skip
        self.lstm = nn.LSTMCell(embed_dim + feat_dim, hidden_dim)
        self.out_h = nn.Linear(hidden_dim, embed_dim)  # L_h
        self.out_z = nn.Linear(feat_dim, embed_dim, bias=False)  # L_z
        self.drop = nn.Dropout(dropout)
        self.dropout_h = bool(dropout_h)
        self.out = nn.Linear(embed_dim, v)  # L_o

    # ------------------------------------------------------------------------------------------ pieces
    def train(self, mode: bool = True) -> ShowAttendTell:
        super().train(mode)
        if self.frozen_encoder:
            self.encoder.eval()  # a frozen trunk keeps its BatchNorm statistics
        return self

    def encode(self, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Normalised images ``[B, C, H, W]`` -> annotation vectors ``[B, L, D]`` and the grid ``(h, w)``."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen_encoder):
            fmap = self.encoder(images)
        fmap = self.pool(fmap)
        return fmap.flatten(2).transpose(1, 2), (fmap.shape[-2], fmap.shape[-1])

    def init_state(self, feats: Tensor) -> tuple[Tensor, Tensor]:
        mean = feats.mean(dim=1)
        return torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean))

    def eval_mode(self) -> str:
        """The attention mode used when not sampling (evaluation, beam search)."""
        if self.mixer_info.stochastic and self.hard_eval == "expected":
            return self.mixer_info.expected_form
        return self.mixer

    def project(self, feats: Tensor, grid: tuple[int, int], mode: str):
        """The mixer's once-per-image projection of the grid for reads in ``mode``; None for a read that
        does not read the grid (``reads_grid=False``)."""
        return self.attention.project(feats, grid) if self.read_info[mode].reads_grid else None

    def step(
        self,
        y_prev: Tensor,
        state: tuple[Tensor, Tensor],
        feats: Tensor,
        feats_proj: Tensor | None,
        mode: str,
        sample: bool = False,
        use_expected: Tensor | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor], Tensor, dict[str, Tensor]]:
        """One decoding step: previous words ``[B]`` -> logits ``[B, V]``, (h, c), alpha ``[B, L]``, info."""
        h, c = state
        z, alpha, info = self.attention(
            feats, h, feats_proj, mode=mode, sample=sample, use_expected=use_expected
        )
        e = self.embed(y_prev)
        h, c = self.lstm(torch.cat([e, z], dim=-1), (h, c))
        h_out = self.drop(h) if self.dropout_h else h  # arctic's dropout on h (output path only)
        logits = self.out(self.drop(torch.tanh(e + self.out_h(h_out) + self.out_z(z))))
        return logits, (h, c), alpha, info

    # ------------------------------------------------------------------------------------------ training
    def forward(
        self, images: Tensor, captions: Tensor, use_expected: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Teacher-forced decoding.

        Args:
            images: normalised ``[B, C, H, W]``.
            captions: ``[B, T+1]`` word ids starting with ``<start>`` (padded with ``<pad>``).
            use_expected: a stochastic mixer in training only, bool ``[B]`` (see AdditiveAttention).

        Returns:
            ``logits [B, T, V]`` predicting ``captions[:, 1:]``, ``alphas [B, T, L]``, ``betas [B, T]``,
            and for a stochastic mixer ``log_probs [B, T]`` (log p(s_t)) and ``entropies [B, T]``.
        """
        feats, grid = self.encode(images)
        sample = self.training and self.mixer_info.stochastic
        mode = self.mixer if sample else self.eval_mode()
        proj = self.project(feats, grid, mode)
        state = self.init_state(feats)
        logits, alphas, infos = [], [], []
        for t in range(captions.shape[1] - 1):
            lg, state, alpha, info = self.step(captions[:, t], state, feats, proj, mode, sample, use_expected)
            logits.append(lg)
            alphas.append(alpha)
            infos.append(info)
        out = {"logits": torch.stack(logits, 1), "alphas": torch.stack(alphas, 1)}
        plural = {"beta": "betas", "log_prob": "log_probs", "entropy": "entropies"}
        for key, name in plural.items():
            if infos and key in infos[0]:
                out[name] = torch.stack([i[key] for i in infos], 1)
        return out

    # ------------------------------------------------------------------------------------------ decoding
    @torch.no_grad()
    def beam_search(
        self, images: Tensor, beam_size: int = 3, max_len: int = 20, length_norm: float = 0.0
    ) -> dict[str, Tensor]:
        """Beam search over all images of the batch at once (``beam_size=1`` is greedy decoding).

        ``<pad>`` and ``<start>`` are never generated. Finished beams (those that emitted ``<end>``) keep
        their slot with their score frozen (never pushed out by open beams that score higher for now), so
        the remaining slots carry the open beams. The answer per image is the best finished beam by
        ``score / length**length_norm`` (0: plain log-probability), or the best unfinished one when no beam
        emitted ``<end>`` within ``max_len`` words. An image leaves the batch once its answer is final (all
        its beams finished, or, with ``length_norm=0``, its best finished beam outscores every open one), so
        later steps run only on images still decoding; the answers are those of the full search.

        Args:
            images: normalised ``[B, C, H, W]``.

        Returns:
            ``tokens [B, T]`` (word ids without ``<start>``, ``<pad>`` after ``<end>``), ``lengths [B]``
            (words including ``<end>`` when emitted), ``alphas [B, T, L]`` (meaningful up to ``lengths``),
            ``scores [B]`` (summed log-probabilities), ``grid`` ``LongTensor[2]`` = (h, w) of the attention
            grid.
        """
        feats, grid = self.encode(images)
        b, n_loc, k, v = feats.shape[0], feats.shape[1], beam_size, len(self.vocab)
        dev = feats.device
        mode = self.eval_mode()
        # W_a a once per image; the K beams of an image share feats [B, L, D] and proj [B, L, A] (no copies)
        proj = self.project(feats, grid, mode)
        state = tuple(s.repeat_interleave(k, dim=0) for s in self.init_state(feats))  # [B*K, N] each
        scores = feats.new_full((b, k), float("-inf"))
        scores[:, 0] = 0.0  # all beams start equal: keep one so the first expansion has no duplicates
        words = torch.full((b * k,), self.start_id, dtype=torch.long, device=dev)
        finished = torch.zeros(b * k, dtype=torch.bool, device=dev)
        lengths = torch.zeros(b * k, dtype=torch.long, device=dev)
        hist = torch.zeros(b * k, 0, dtype=torch.long, device=dev)
        hist_alpha = feats.new_zeros(b * k, 0, n_loc)
        frozen_row = feats.new_full((v,), float("-inf"))
        frozen_row[self.pad_id] = 0.0  # a finished beam continues with <pad> at no cost
        logp_buf = feats.new_empty(b * k, v)
        # results of the images that left the batch (rows: image * K + beam)
        images_left = torch.arange(b, device=dev)  # the images still decoding, in row order
        out = {
            "tokens": torch.full((b * k, max_len), self.pad_id, dtype=torch.long, device=dev),
            "alphas": feats.new_zeros(b * k, max_len, n_loc),
            "lengths": torch.zeros(b * k, dtype=torch.long, device=dev),
            "finished": torch.zeros(b * k, dtype=torch.bool, device=dev),
            "scores": feats.new_empty(b, k),
        }

        def retire(done: Tensor) -> None:
            """Copy the rows of the images in ``done`` (bool over the images still decoding) into ``out``."""
            rows_done = done.repeat_interleave(k)
            rows_out = (images_left[done][:, None] * k + torch.arange(k, device=dev)).view(-1)
            out["tokens"][rows_out, : hist.shape[1]] = hist[rows_done]
            out["alphas"][rows_out, : hist.shape[1]] = hist_alpha[rows_done]
            out["lengths"][rows_out] = lengths[rows_done]
            out["finished"][rows_out] = finished[rows_done]
            out["scores"][images_left[done]] = scores[done]

        for _ in range(max_len):
            n = images_left.numel()
            logits, state, alpha, _ = self.step(words, state, feats, proj, mode)
            # [N*K, V] work in one reused buffer (a fresh multi-MiB tensor per op costs page faults)
            logp = torch.log_softmax(logits, dim=-1, out=logp_buf[: n * k])
            logp[:, self.pad_id] = float("-inf")  # never generated: padding and <start>
            logp[:, self.start_id] = float("-inf")
            any_finished = bool(finished.any())
            if any_finished:
                logp[finished] = frozen_row
            cand = logp.add_(scores.reshape(n * k, 1)).view(n, k * v)
            if any_finished:
                # a finished caption keeps its slot (set aside, as sgrvinod's and arctic's searches do): open
                # beams may outscore it now and fall below it later, so it is never pushed out
                ranked = cand.clone()
                ranked.view(n * k, v)[finished, self.pad_id] = float("inf")
                idx = ranked.topk(k, dim=1).indices
                scores = cand.gather(1, idx)
            else:
                scores, idx = cand.topk(k, dim=1)  # [N, K]
            beam_of = torch.div(idx, v, rounding_mode="floor")  # which beam each candidate extends
            src = (torch.arange(n, device=dev)[:, None] * k + beam_of).view(-1)
            words = (idx % v).view(-1)
            state = (state[0][src], state[1][src])
            hist = torch.cat([hist[src], words[:, None]], 1)
            hist_alpha = torch.cat([hist_alpha[src], alpha[src, None]], 1)
            was_finished = finished[src]
            lengths = lengths[src] + (~was_finished).long()
            finished = was_finished | (words == self.end_id)
            fin = finished.view(n, k)
            done = fin.all(1)
            if not length_norm:
                # log-probabilities are <= 0, so an open beam's score can only fall: once an image's best
                # finished beam scores at least as high as its open ones, no later step can change its answer
                best_fin = scores.masked_fill(~fin, float("-inf")).amax(1)
                best_open = scores.masked_fill(fin, float("-inf")).amax(1)
                done |= fin.any(1) & (best_fin >= best_open)
            if bool(done.any()):  # these images' answers are final
                retire(done)
                keep, rows_keep = ~done, (~done).repeat_interleave(k)
                images_left = images_left[keep]
                if images_left.numel() == 0:
                    break
                feats = feats[keep]
                proj = proj[keep] if proj is not None else None
                state = (state[0][rows_keep], state[1][rows_keep])
                scores, words, finished = scores[keep], words[rows_keep], finished[rows_keep]
                lengths, hist, hist_alpha = lengths[rows_keep], hist[rows_keep], hist_alpha[rows_keep]
        if images_left.numel():  # reached max_len
            retire(torch.ones(images_left.numel(), dtype=torch.bool, device=dev))
        steps = hist.shape[1]
        lengths_f = out["lengths"].view(b, k).clamp_min(1).to(feats.dtype)
        ranked = out["scores"] / lengths_f.pow(length_norm) if length_norm else out["scores"].clone()
        fin = out["finished"].view(b, k)
        # prefer finished beams; an image with none takes its best truncated beam (no crash)
        ranked = torch.where(fin | ~fin.any(1, keepdim=True), ranked, ranked.new_tensor(float("-inf")))
        best = torch.arange(b, device=dev) * k + ranked.argmax(1)
        return {
            "tokens": out["tokens"][best, :steps],
            "lengths": out["lengths"][best],
            "alphas": out["alphas"][best, :steps],
            "scores": out["scores"].view(-1)[best],
            "grid": torch.tensor(grid),
        }

    # ------------------------------------------------------------------------------------------ maps
    @torch.no_grad()
    def mixer_maps(self, images: Tensor, max_len: int = 20) -> dict[str, Tensor]:
        """Where the decoder looks over a whole caption: the greedy caption's ``alpha`` (Sec. 4, the
        weights of the context over the annotation grid) averaged over its words, ``<end>`` included:
        ``{"caption": [B, h, w]}`` for normalised ``images [B, C, H, W]``, each map summing to 1. Hard
        attention shows its evaluation read: alpha for the expected context (``hard_eval=expected``, the
        default), the one location it reads (a one-hot of argmax alpha) with ``hard_eval=argmax``. A mixer
        that does not read the grid (``none``) gives no map."""
        if not self.read_info[self.eval_mode()].reads_grid:
            return {}
        result = self.beam_search(images, beam_size=1, max_len=max_len)
        h, w = (int(v) for v in result["grid"])
        steps = torch.arange(result["alphas"].shape[1], device=images.device)
        used = (steps[None] < result["lengths"][:, None]).to(result["alphas"].dtype)  # [B, T]
        alphas = result["alphas"]
        if self.eval_mode() == "hard":  # argmax evaluation: each word reads one location
            alphas = F.one_hot(alphas.argmax(-1), alphas.shape[-1]).to(alphas.dtype)
        mean = (alphas * used[..., None]).sum(1) / used.sum(1, keepdim=True).clamp(min=1)
        return {"caption": mean.view(-1, h, w)}

    def mixer_map_legends(self) -> dict[str, tuple[str, str]]:
        """``{"caption": (what, unit)}`` for :meth:`mixer_maps` (none for a mixer that does not read the
        grid)."""
        if not self.read_info[self.eval_mode()].reads_grid:
            return {}
        if self.eval_mode() == "hard":
            return {"caption": ("hard attention's read location (argmax α) over the greedy caption", "share")}
        return {"caption": (f"{self.mixer} α averaged over the words of the greedy caption", "mean α")}

    def decode(self, tokens: Tensor, lengths: Tensor | None = None) -> list[list[str]]:
        """Word ids ``[B, T]`` -> lists of words, stopping at ``<end>`` (excluded) and skipping specials
        other than ``<unk>``."""
        words = []
        for row in tokens.tolist():
            out = []
            for i in row:
                if i == self.end_id:
                    break
                if i in (self.pad_id, self.start_id):
                    continue
                out.append(self.vocab[i])
            words.append(out)
        return words


@register_model
def show_attend_tell(**kwargs) -> ShowAttendTell:
    """Show, Attend and Tell captioner (Xu et al. 2015); see :class:`ShowAttendTell` for the arguments."""
    return ShowAttendTell(**kwargs)
