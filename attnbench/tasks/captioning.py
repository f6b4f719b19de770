"""Image captioning (Show, Attend and Tell, Xu et al. 2015): training objectives, decoding and metrics.

Training (Sec. 4): the objective of eq. 14, per caption its *summed* word negative log-likelihood plus the
doubly stochastic regularisation λ Σ_i (1 − Σ_t α_ti)², summed over the batch and divided by the batch's
number of words (so ``train/ce`` stays the per-word cross-entropy and the learning rate and gradient
clipping keep their per-word scale, while the penalty keeps the paper's weight relative to the NLL: a
per-word CE + λ·penalty would weight it ~caption-length times more). Hard attention (Sec. 4.1) adds
REINFORCE on the sampled locations with reward log p(y | s, a), a moving-average baseline
(b ← 0.9 b + 0.1 log p(y | s, a)), an entropy bonus on the attention distributions, and per image a 0.5
chance of using the expected context instead of a sample (the same per-word normalisation). Where the authors'
code (arctic-captions) scales these differently, a knob names each choice (``penalty_norm``,
``reinforce_reward``, ``hard_reduction``, ``expected_coin``, ``baseline_init``, and its optimizers
``arctic_rmsprop`` / ``arctic_adam``); the ``sat_*`` recipes set arctic's values.

Evaluation: ``val/loss`` and ``test/loss`` (teacher-forced cross-entropy per word), captions by beam search.
Validation: ``val/bleu4`` (``val_beam_size``, the data set's own tokens; what early stopping and the
checkpoint watch). Test (``beam_size``): the test captions of all processes are gathered
(:class:`attnbench.metrics.coco_caption.CaptionCorpus`) and scored once with the COCO evaluation,
``test/bleu1..4``, ``test/meteor``, ``test/rouge_l``, ``test/cider`` (``caption_tokenizer``: PTB tokens, or
whitespace tokens without METEOR where Java/pycocoevalcap are missing; ``test/caption_tokenizer`` in
``metrics.json`` says which); global rank 0 writes ``test_captions.json`` (COCO results format) and
``test_captions_detail.json`` into the run folder. With object boxes in the batch (``data=digit_captions``)
also ``test/attn_grounding``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchmetrics import MeanMetric

from attnbench.errors import ConfigError
from attnbench.mechanisms.additive_attention import doubly_stochastic_penalty
from attnbench.metrics.bleu import CorpusBLEU
from attnbench.metrics.coco_caption import CaptionCorpus, check_tokenizer, score_corpus, write_caption_files
from attnbench.metrics.grounding import AttentionGrounding
from attnbench.tasks.arctic_optim import ArcticAdam, ArcticRMSprop
from attnbench.tasks.base import BaseTask
from attnbench.tasks.optim import param_groups, warmup_cosine

OPTIMIZERS = ("adamw", "adam", "rmsprop", "arctic_rmsprop", "arctic_adam")
PENALTY_NORMS = ("eq14", "arctic")
CHOICES = {  # knob -> its allowed values: the default first, arctic-captions' last
    "penalty_norm": PENALTY_NORMS,
    "reinforce_reward": ("caption", "step_mean"),
    "hard_reduction": ("mean", "sum"),
    "expected_coin": ("image", "batch"),
    "baseline_init": ("first", "zero"),
}


class CaptioningTask(BaseTask):
    """Trains a :class:`attnbench.models.show_attend_tell.ShowAttendTell` on ``(x, y)`` caption batches.

    Args:
        net: the captioner (``net.vocab``, ``net.mixer``, ``net.mixer_info`` (the context mixer's registry
            flags: ``stochastic``, ``attention_weights``), ``net.attention``, ``net(images, captions)``,
            ``net.beam_search``).
        mean, std: per-channel normalisation applied on-device to images in [0, 1].
        alpha_c: λ of the doubly stochastic regularisation with soft attention (Sec. 4.2.1), weighted as in
            eq. 14 against the caption's summed NLL (1 in the authors' arctic-captions release); it applies
            to every deterministic context mixer whose α are attention weights (registry flag
            ``attention_weights``), none to the others (``none``, focal modulation's gate mass).
        alpha_c_hard: the same λ with hard attention, i.e. a stochastic mixer with attention weights (the
            paper introduces the term for soft attention; on digit_captions any λ > 0 kept hard attention at
            uniform weights).
        reinforce_weight, entropy_weight: λ_r and λ_e of the hard-attention objective.
        baseline_decay: the moving-average baseline's decay (0.9 in the paper).
        expected_prob: hard attention: per-image chance of using the expected context (0.5 in the paper).
        beam_size, val_beam_size, max_len, length_norm: decoding for test / validation (1 = greedy).
        object_words: word of each object class (index = class), for ``attn_grounding``; None: no grounding.
        caption_tokenizer: test evaluation protocol, ``auto`` | ``ptb`` | ``whitespace`` (see
            :mod:`attnbench.metrics.coco_caption`); ``ptb`` refuses to start where it cannot run.
        grad_clip: clip the gradient norm to this value (None: no clipping).
        n_figures: images in the caption/attention figure.
        optimizer: ``adamw`` (default) | ``adam`` | ``rmsprop`` (torch's, with ``optimizer_kwargs``, e.g.
            ``{alpha: 0.95, momentum: 0.9, centered: true}``); the schedule is the shared warmup + cosine
            (``warmup_epochs=0, min_lr_ratio=1``: a constant learning rate).
        penalty_norm: how the doubly stochastic penalty is reduced over the batch and the L locations:
            ``eq14`` (default: Σ_i over locations, the batch mean, as eq. 14 is written) or ``arctic`` (the
            authors' capgen.py: the mean over locations, *summed* over the batch, i.e. eq. 14's λ times B/L;
            at batch 64 and 196 locations arctic's λ = 1 is eq. 14's λ ≈ 0.327).
        reinforce_reward: hard attention, the REINFORCE reward: ``caption`` (default: log p(y | s, a) of the
            whole caption) or ``step_mean`` (arctic: minus the caption's per-step average cost, its summed NLL
            divided by its word count; arctic's length-bucketed batches make that the batch's step count).
            The baseline is the moving average of the same quantity.
        hard_reduction: hard attention, how the REINFORCE and entropy terms are reduced over the batch:
            ``mean`` (default: like the NLL) or ``sum`` (arctic: its known gradients on α are per image, never
            divided by B, while its NLL is the batch mean).
        expected_coin: hard attention, the 0.5 "use the expected context" coin (``expected_prob``): flipped
            per ``image`` (default) or once per ``batch`` (arctic's h_sampling_mask).
        baseline_init: the REINFORCE baseline's start: ``first`` (default: the first batch's mean reward) or
            ``zero`` (arctic's shared variable starts at 0).
        loss_norm: what the optimised objective is divided by: ``word`` (default: the batch's word count W,
            so the scale of the loss, the gradient and ``grad_clip`` is per word) or ``caption`` (the batch
            size B: the batch mean of eq. 14 itself, as the arctic-captions release optimises it; the
            recipes use it so that its RMSProp step sizes mean what they meant there). Both weight the
            doubly stochastic term as ``penalty_norm`` says; ``train/ce`` and ``val/loss`` stay per word.
        optimizer ``arctic_rmsprop`` | ``arctic_adam``: the update rules of arctic-captions' optimizers.py
            (:mod:`attnbench.tasks.arctic_optim`), with ``lr`` and ``optimizer_kwargs``.
    """

    def __init__(
        self,
        net: nn.Module,
        mean: list[float],
        std: list[float],
        alpha_c: float = 1.0,
        alpha_c_hard: float = 0.0,
        reinforce_weight: float = 0.1,
        entropy_weight: float = 0.001,
        baseline_decay: float = 0.9,
        expected_prob: float = 0.5,
        beam_size: int = 3,
        val_beam_size: int = 1,
        max_len: int = 20,
        length_norm: float = 0.0,
        object_words: list[str] | None = None,
        caption_tokenizer: str = "auto",
        grad_clip: float | None = 5.0,
        n_figures: int = 4,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_epochs: float = 1.0,
        min_lr_ratio: float = 0.01,
        compile: bool = False,
        channels_last: bool = False,
        optimizer: str = "adamw",
        optimizer_kwargs: dict[str, Any] | None = None,
        loss_norm: str = "word",
        penalty_norm: str = "eq14",
        reinforce_reward: str = "caption",
        hard_reduction: str = "mean",
        expected_coin: str = "image",
        baseline_init: str = "first",
    ):
        check_tokenizer(caption_tokenizer)
        given = dict(
            penalty_norm=penalty_norm,
            reinforce_reward=reinforce_reward,
            hard_reduction=hard_reduction,
            expected_coin=expected_coin,
            baseline_init=baseline_init,
        )
        for knob, value in given.items():
            if value not in CHOICES[knob]:
                raise ConfigError(f"model.task.{knob}={value!r}; expected one of {', '.join(CHOICES[knob])}")
        if loss_norm not in ("word", "caption"):
            raise ConfigError(f"model.task.loss_norm={loss_norm!r}; expected word or caption")
        if optimizer not in OPTIMIZERS:
            raise ConfigError(f"model.task.optimizer={optimizer!r}; expected one of {', '.join(OPTIMIZERS)}")
        super().__init__(net, lr, weight_decay, betas, warmup_epochs, min_lr_ratio, compile, channels_last)
        self.save_hyperparameters(ignore=["net"], logger=False)  # loggers get the run config instead
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )
        self.register_buffer("baseline", torch.tensor(float("nan")))  # REINFORCE baseline (hard attention)
        self.vocab: list[str] = list(net.vocab)
        self.pad_id = net.pad_id
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_bleu = CorpusBLEU(4)
        self.test_corpus = CaptionCorpus()  # scored once over all processes in on_test_epoch_end
        self.protocol: dict[str, Any] = {}  # string fields for metrics.json (train.py reads them)
        self._unnamed_images = 0
        words = {w: i for i, w in enumerate(object_words or [])}
        self.val_grounding, self.test_grounding = AttentionGrounding(words), AttentionGrounding(words)

    # ------------------------------------------------------------------------------------------- helpers
    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def word_losses(self, logits: torch.Tensor, captions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-word cross-entropy ``[B, T]`` (0 on padding) and the mask of real words ``[B, T]``."""
        targets = captions[:, 1:]
        mask = targets != self.pad_id
        ce = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=self.pad_id, reduction="none")
        return ce * mask, mask

    def losses(
        self, out: dict[str, torch.Tensor], captions: torch.Tensor, use_expected: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """The terms of the objective (all to be minimised), their total under ``loss``, and
        ``loss_per_caption`` (not optimised; for logs): the same total per caption instead of per word.

        With B captions holding W words in all (``<end>`` included), L attention locations, per caption b the
        NLL_b = Σ_t −log p(y_t), n_b its words and P_b = Σ_i (1 − Σ_t α_ti)²::

            ce                = Σ_b NLL_b / W
            doubly_stochastic = λ Σ_b P_b / W                   (penalty_norm=eq14)
                              = λ (B / L) Σ_b P_b / W           (penalty_norm=arctic)
            loss              = ce + doubly_stochastic (+ the hard-attention terms, also divided by W)
                              = (W / B)⁻¹ · mean_b (NLL_b + λ P_b)        (eq. 14, batch mean)
            loss_per_caption  = loss · W / B

        so that with ``loss_norm=caption`` (loss_per_caption optimised) arctic's penalty is its capgen.py
        ``alpha_c * ((1 - alphas.sum(T))**2).sum(B).mean(L)`` exactly. Hard attention (per caption: r_b the
        reward, −NLL_b or −NLL_b / n_b; b̄ the baseline; log p_b = Σ_t log α_{t, s_t} of the sampled steps;
        H_b = Σ_t H[α_t]), in loss_per_caption units with k = 1 (``hard_reduction=mean``) or B (``sum``)::

            reinforce = −λ_r k mean_b (r_b − b̄) log p_b        entropy = −λ_e k mean_b H_b

        whose gradients with ``reinforce_reward=step_mean hard_reduction=sum`` are arctic's known gradients
        on α: (b̄_cost − cost_b)/10 · (−α_sample/α) + λ_e (log α + 1), summed over steps and images.
        """
        hp = self.hparams
        ce, mask = self.word_losses(out["logits"], captions)
        n_words = mask.sum().clamp_min(1)
        batch = max(1, len(captions))
        terms = {"ce": ce.sum() / n_words}
        info = self.net.mixer_info
        lam = (hp.alpha_c_hard if info.stochastic else hp.alpha_c) if info.attention_weights else 0.0
        if lam:
            penalty = doubly_stochastic_penalty(out["alphas"], mask)  # [B]
            if hp.get("penalty_norm", "eq14") == "arctic":  # mean over locations, summed over the batch
                penalty = penalty * (batch / out["alphas"].shape[-1])
            terms["doubly_stochastic"] = lam * penalty.sum() / n_words
        if "log_probs" in out and self.training:
            scale = batch if hp.get("hard_reduction", "mean") == "sum" else 1
            reward = -ce.sum(1).detach()  # log p(y | s, a) per caption
            if hp.get("reinforce_reward", "caption") == "step_mean":
                reward = reward / mask.sum(1).clamp_min(1)  # minus the per-step average cost
            if torch.isnan(self.baseline):
                first = hp.get("baseline_init", "first") == "first"
                self.baseline.fill_(float(reward.mean()) if first else 0.0)
            advantage = reward - self.baseline
            sampled = ~use_expected if use_expected is not None else torch.ones_like(reward, dtype=torch.bool)
            log_p = (out["log_probs"] * mask).sum(1)
            terms["reinforce"] = -hp.reinforce_weight * scale * (advantage * log_p * sampled).sum() / n_words
            terms["entropy"] = -hp.entropy_weight * scale * (out["entropies"] * mask).sum() / n_words
            d = hp.baseline_decay
            self.baseline.mul_(d).add_((1 - d) * reward.mean())
        terms["loss"] = sum(terms.values())
        per_caption = terms["loss"] * n_words / batch
        terms["loss_per_caption"] = per_caption.detach()
        if hp.get("loss_norm", "word") == "caption":
            terms["loss"] = per_caption  # eq. 14 averaged over the batch's captions
        return terms

    def words(self, tokens: torch.Tensor) -> list[list[str]]:
        return self.net.decode(tokens)

    def caption(self, x: torch.Tensor, beam_size: int) -> dict[str, Any]:
        """Beam-search captions of images ``x`` in [0, 1]."""
        hp = self.hparams
        return self.net.beam_search(
            self.normalise(x), beam_size=beam_size, max_len=hp.max_len, length_norm=hp.length_norm
        )

    def forward(self, images: torch.Tensor, captions: torch.Tensor) -> dict[str, torch.Tensor]:
        """Teacher-forced decoding of normalised ``images [B, C, H, W]`` with ``captions [B, T]``."""
        return self.net(images, captions)

    def example_input(self, batch_size: int):
        """One training image's shape (from the data module, once it is set up) and an 8-token caption."""
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        train_set = getattr(dm, "train_set", None)
        if train_set is None or len(train_set) == 0:
            return None
        image = train_set[0][0]
        return torch.zeros(batch_size, *image.shape), torch.zeros(batch_size, 8, dtype=torch.long)

    def expected_coins(self, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Hard attention: bool ``[n]``, True where an image uses the expected context this batch: a coin with
        ``expected_prob`` per image, or one for the whole batch (``expected_coin=batch``, arctic's)."""
        per_batch = self.hparams.get("expected_coin", "image") == "batch"
        coins = torch.rand(1 if per_batch else n, device=device)
        return (coins < self.hparams.expected_prob).expand(n)

    # ------------------------------------------------------------------------------------------- steps
    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        captions = y["captions"]
        use_expected = None
        if self.net.mixer_info.stochastic:  # hard attention: the per-image expected-context coins
            use_expected = self.expected_coins(len(captions), captions.device)
        out = self.forward_net(self.normalise(x), captions, use_expected)
        terms = self.losses(out, captions, use_expected)
        b = len(captions)
        for name, value in terms.items():
            self.log(
                f"train/{name}", value, prog_bar=name == "loss", on_step=True, on_epoch=True, batch_size=b
            )
        return terms["loss"]

    def _evaluate(self, batch, split: str) -> None:
        x, y = batch
        captions = y["captions"]
        out = self.forward_net(self.normalise(x), captions)
        ce, mask = self.word_losses(out["logits"], captions)
        loss_metric = self.val_loss if split == "val" else self.test_loss
        loss_metric.update(ce.sum() / mask.sum().clamp_min(1), weight=mask.sum())
        beam = self.hparams.val_beam_size if split == "val" else self.hparams.beam_size
        result = self.caption(x, beam)
        hyps = self.words(result["tokens"])
        if split == "val":
            self.val_bleu.update(hyps, y["refs"])
        else:
            refs_raw = y.get("refs_raw") or [[" ".join(r) for r in rs] for rs in y["refs"]]
            ids = y.get("image_id")
            if ids is None:  # a data set without ids: numbered in test order (one process only)
                ids = list(range(self._unnamed_images, self._unnamed_images + len(hyps)))
                self._unnamed_images += len(hyps)
            names = y.get("file_name")
            extra = [{"file_name": str(n)} for n in names] if names else None
            self.test_corpus.update(ids, hyps, y["refs"], refs_raw, result["scores"], extra)
        if "boxes" in y and self.val_grounding.word_labels:
            grounding = self.val_grounding if split == "val" else self.test_grounding
            grid = tuple(int(v) for v in result["grid"])
            grounding.update(hyps, result["alphas"], grid, tuple(x.shape[-2:]), y["labels"], y["boxes"])

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_validation_epoch_end(self) -> None:
        bleu = self.val_bleu.compute()
        self.log("val/loss", self.val_loss.compute(), prog_bar=True)
        self.log("val/bleu4", bleu[3].float(), prog_bar=True)
        self.log("val/bleu1", bleu[0].float())
        if self.val_grounding.total > 0:
            self.log("val/attn_grounding", self.val_grounding.compute().float())
        for m in (self.val_loss, self.val_bleu, self.val_grounding):
            m.reset()

    def on_test_epoch_end(self) -> None:
        """Score the gathered test captions once (on global rank 0, which also writes the caption files),
        broadcast the numbers, and log them on every process."""
        records = self.test_corpus.compute()  # collective: every process takes part
        trainer = self.trainer
        scores: dict[str, float] = {}
        protocol: dict[str, Any] = {}
        failure, error = "", None
        if trainer.is_global_zero:
            try:
                scores, protocol = score_corpus(records, self.hparams.caption_tokenizer)
                if trainer.default_root_dir:  # before the broadcast: a failure here stops every process
                    write_caption_files(trainer.default_root_dir, records, self.hparams.beam_size)
            except Exception as err:  # noqa: BLE001 - every process must reach the broadcast, then all raise
                failure, error = f"{type(err).__name__}: {err}", err
            protocol["test/beam_size"] = int(self.hparams.beam_size)
        scores, protocol, failure = trainer.strategy.broadcast((scores, protocol, failure), src=0)
        if error is not None:
            raise error
        if failure:
            raise RuntimeError(f"scoring the test captions failed on global rank 0: {failure}")
        self.protocol = dict(protocol)
        self.log("test/loss", self.test_loss.compute())
        for name, value in scores.items():
            self.log(name, float(value))
        if self.test_grounding.total > 0:
            self.log("test/attn_grounding", self.test_grounding.compute().float())
        for m in (self.test_loss, self.test_corpus, self.test_grounding):
            m.reset()
        self._unnamed_images = 0

    def configure_optimizers(self):
        hp = self.hparams
        if hp.optimizer == "adamw":
            return super().configure_optimizers()
        groups = param_groups(self.net, hp.weight_decay)
        extra = dict(hp.optimizer_kwargs or {})
        if hp.optimizer == "adam":
            optimizer = torch.optim.Adam(groups, lr=self.peak_lr(), betas=tuple(hp.betas), **extra)
        elif hp.optimizer == "arctic_adam":
            optimizer = ArcticAdam(groups, lr=self.peak_lr(), betas=tuple(hp.betas), **extra)
        elif hp.optimizer == "arctic_rmsprop":
            optimizer = ArcticRMSprop(groups, lr=self.peak_lr(), **extra)
        else:
            optimizer = torch.optim.RMSprop(groups, lr=self.peak_lr(), **extra)
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1))
        scheduler = warmup_cosine(optimizer, int(hp.warmup_epochs * per_epoch), total, hp.min_lr_ratio)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_before_optimizer_step(self, optimizer) -> None:
        if self.hparams.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.hparams.grad_clip)

    # ------------------------------------------------------------------------------------------- figures
    @torch.no_grad()
    def figures(self, batch) -> dict[str, Any]:
        """Captions of a few validation images with the attention map of each word overlaid."""
        from attnbench.callbacks.render import figure_title

        x, y = batch
        x = x[: self.hparams.n_figures]
        result = self.caption(x, self.hparams.beam_size)
        hyps = self.words(result["tokens"])
        grid = tuple(int(v) for v in result["grid"])
        # what α shows, as the mechanism names it (``map_legend``), else the attention weights of the mixer
        legend = getattr(self.net.attention, "map_legend", None)
        what, unit = legend or (f"{self.net.mixer} attention α per generated word", "attention weight α")
        title = figure_title(self, f"{what}, beam {self.hparams.beam_size}")
        fig, panels = attention_figure(x, hyps, result["alphas"], grid, y["refs"][: len(x)], title, unit)
        log_wandb_table(self, x, hyps, panels)
        return {"captions": fig}


def attention_figure(
    x: torch.Tensor,
    hyps: list[list[str]],
    alphas: torch.Tensor,
    grid: tuple[int, int],
    refs: list[list[list[str]]],
    title: str = "",
    value_label: str = "attention weight α",
):
    """A matplotlib Figure: per image a row with the image (title: caption and first reference), then one
    panel per generated word with its attention map (upsampled to the image) overlaid. One colour scale for
    the whole figure, 0 to the largest weight shown (per-panel scaling would make a near-uniform map look
    as confident as a peaked one), with a colour bar; a word's panel title gives its peak weight.

    Returns the figure and, per image, the list of ``uint8[H, W, 3]`` overlays (one per word).
    """
    from attnbench.callbacks.render import DPI, FONT, MIN_WIDTH_IN, _pyplot, suptitle

    plt = _pyplot()

    images = x.detach().float().cpu().clamp(0, 1)
    if images.shape[1] == 1:
        images = images.repeat(1, 3, 1, 1)
    h, w = images.shape[-2:]
    maps = alphas.detach().float().cpu().view(alphas.shape[0], alphas.shape[1], *grid)
    peaks = maps.flatten(2).max(-1).values  # [B, T] on the annotation grid
    maps = F.interpolate(maps, size=(h, w), mode="nearest")
    cols = 1 + max([len(c) for c in hyps] + [1])
    shown = [maps[i, t] for i, words in enumerate(hyps) for t in range(len(words))]
    vmax = max([float(m.max()) for m in shown] + [1e-8])
    aspect = w / h
    fig, axes = plt.subplots(
        len(images),
        cols,
        figsize=(max(MIN_WIDTH_IN, 1.6 * aspect * cols + 1.0), 1.9 * len(images) + 0.6),
        squeeze=False,
        dpi=DPI,
    )
    cmap = plt.get_cmap("magma")
    image = None
    panels: list[list[np.ndarray]] = []
    for i, img in enumerate(images):
        rgb = img[:3].permute(1, 2, 0).numpy()
        axes[i, 0].imshow(rgb)
        ref = " ".join(refs[i][0]) if refs and refs[i] else ""
        axes[i, 0].set_title(f"“{' '.join(hyps[i])}”\nref: {ref}", fontsize=FONT)
        row = []
        for t in range(cols - 1):
            ax = axes[i, t + 1]
            if t < len(hyps[i]):
                m = maps[i, t].numpy()
                ax.imshow(rgb.mean(-1), cmap="gray", vmin=0, vmax=1)
                image = ax.imshow(m, cmap=cmap, alpha=0.7, vmin=0, vmax=vmax, interpolation="nearest")
                ax.set_title(f"{hyps[i][t]} (max {float(peaks[i, t]):.2f})", fontsize=FONT)
                heat = cmap(m / vmax)[..., :3]
                row.append((255 * (0.3 * rgb + 0.7 * heat)).round().astype(np.uint8))
            else:
                ax.set_visible(False)  # a shorter caption: no empty frame
        panels.append(row)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[-1, 0].set_xlabel(f"{w}×{h} px, {grid[0]}×{grid[1]} annotation grid", fontsize=FONT)
    if image is not None:
        bar = fig.colorbar(image, ax=axes.ravel().tolist(), fraction=0.02, pad=0.01)
        bar.set_label(value_label, fontsize=FONT)
        bar.ax.tick_params(labelsize=FONT - 1)
    suptitle(fig, title)
    return fig, panels


def log_wandb_table(
    task: pl.LightningModule, x: torch.Tensor, hyps: list[list[str]], panels: list[list[np.ndarray]]
) -> None:
    """When a WandbLogger is attached: a table (epoch, image, caption, attention per word) of the figure."""
    from pytorch_lightning.loggers import WandbLogger

    loggers = [lg for lg in getattr(task, "loggers", []) if isinstance(lg, WandbLogger)]
    if not loggers:
        return
    import wandb

    images = x.detach().float().cpu().clamp(0, 1)
    rows = []
    for i, words in enumerate(hyps):
        img = (255 * images[i].permute(1, 2, 0).numpy()).round().astype(np.uint8).squeeze(-1)
        strip = np.concatenate(panels[i], axis=1) if panels[i] else np.zeros((8, 8, 3), np.uint8)
        rows.append(
            [
                task.current_epoch,
                wandb.Image(img),
                " ".join(words),
                wandb.Image(strip, caption=" | ".join(words)),
            ]
        )
    for lg in loggers:
        lg.log_table(
            key="captions",
            columns=["epoch", "image", "caption", "attention"],
            data=rows,
            step=task.global_step,
        )
