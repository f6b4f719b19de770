"""Class-conditional GAN training (SAGAN recipe) with IS / FID evaluation.

Zhang et al. 2019 (SAGAN), Sec. 4-5: hinge loss, spectral norm in G and D (in the model), two-timescale
update rule (G 1e-4, D 4e-4, Adam betas (0, 0.9)); ``n_dis`` D steps per G step; ``max_g_steps`` ends
training after that many G updates (the papers' "iterations"; Lightning's ``trainer.max_steps`` counts the
optimiser steps of G and D together); an exponential moving average of G's weights evaluates the model
(BigGAN, Brock et al. 2019), on by default.

Manual optimisation: each optimiser steps once per its own update. Under DDP every backward must reach every
parameter unless the strategy was built with ``find_unused_parameters=True``; the D step then computes its
fakes *with* G's graph (G receives gradients that are discarded by the G step's ``zero_grad``) so
plain ``strategy=ddp`` stays correct.

Evaluation (``val/*`` each epoch with ``val_samples``, ``test/*`` with ``test_samples``): class-balanced
samples from fixed noise, scored by the FID Inception v3 when ``inception_weights`` is a local file, else by
a domain classifier trained on the data set's training split ("domain IS/FID", not comparable with papers;
see ``attnbench.metrics.domain_scorer``). FID's reference statistics come from ``fid_reference`` (a real
split); ``test/is_real`` scores the real test images, the ceiling for ``test/is``.
"""

from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchmetrics import SumMetric
from torchmetrics.classification import MulticlassAccuracy

from attnbench.errors import ConfigError
from attnbench.metrics import gan as gm
from attnbench.tasks import gan_bn

FID_REFERENCES = ("train", "val", "test")


class GANTask(pl.LightningModule):
    """Trains ``net`` (``.generator(z, y) -> [B, C, S, S]`` in [-1, 1], ``.discriminator(x, y) -> [B]``,
    ``.z_dim``, ``.num_classes``) on batches ``(x in [0, 1], y)``.

    Logs ``train/d_loss``, ``train/g_loss``, ``train/d_real``, ``train/d_fake``; ``val/loss`` and
    ``test/loss`` (D's hinge loss on held-out real images against fresh samples), ``val/is``, ``val/fid``;
    ``test/is``, ``test/is_std``, ``test/fid``, ``test/is_real``, ``test/is_real_std`` and the protocol:
    ``test/num_samples``, ``test/is_splits``, ``test/fid_ref_samples``, ``test/is_real_samples``,
    ``test/is_real_splits``, ``test/scorer_val_acc`` (domain scorer only); ``val/cond_acc`` and
    ``test/cond_acc`` (domain scorer: the fraction of samples classified as the class they were generated
    for). ``self.protocol`` holds the string fields (scorer kind, reference split).
    """

    def __init__(
        self,
        net: nn.Module,
        lr_g: float = 1e-4,
        lr_d: float = 4e-4,
        betas: tuple[float, float] = (0.0, 0.9),
        n_dis: int = 1,
        max_g_steps: int | None = None,
        ema: bool = True,
        ema_decay: float = 0.999,
        ema_start: int = 0,
        inception_weights: str | None = None,
        inception_sha256: str | None = None,
        inception_resize: str = "torch_fidelity",
        cache_dir: str = ".cache/attnbench",
        scorer_seed: int = 0,
        scorer_epochs: int = 15,
        val_samples: int = 1000,
        val_splits: int = 5,
        test_samples: int = 10000,
        test_splits: int = 10,
        fid_reference: str = "train",
        eval_batch_size: int = 250,
        grid_columns: int = 8,
        attn_queries: int = 4,
        channels_last: bool = False,
        sample_bn: str = "standing",
        standing_batches: int = 16,
        is_shuffle: bool = False,
    ):
        super().__init__()
        if sample_bn not in gan_bn.SAMPLE_BN:
            choices = ", ".join(gan_bn.SAMPLE_BN)
            raise ConfigError(f"model.task.sample_bn={sample_bn!r}: expected one of {choices}")
        if int(standing_batches) < 1:
            raise ConfigError(f"model.task.standing_batches={standing_batches}: expected at least 1")
        if fid_reference not in FID_REFERENCES:
            raise ConfigError(f"fid_reference={fid_reference!r}: expected one of {', '.join(FID_REFERENCES)}")
        if n_dis < 1:
            raise ConfigError(f"n_dis={n_dis}: expected at least one D step per G step")
        if max_g_steps is not None and int(max_g_steps) < 1:
            raise ConfigError(f"model.task.max_g_steps={max_g_steps}: expected a positive count or null")
        if not 0.0 <= ema_decay < 1.0:
            raise ConfigError(f"ema_decay={ema_decay}: expected a value in [0, 1)")
        if (
            val_splits < 1
            or test_splits < 1
            or val_samples < 2 * val_splits
            or test_samples < 2 * test_splits
        ):
            raise ConfigError(
                f"val/test samples ({val_samples}, {test_samples}) must be at least twice the "
                f"number of IS splits ({val_splits}, {test_splits}), and splits >= 1"
            )
        for stage, n, k in (("val", val_samples, val_splits), ("test", test_samples, test_splits)):
            if n % k:
                raise ConfigError(
                    f"model.task.{stage}_samples={n} is not a multiple of model.task.{stage}_splits={k}: the "
                    "Inception Score needs that many equal splits (e.g. 50000 samples and 10 splits)"
                )
        self.save_hyperparameters(ignore=["net"], logger=False)  # loggers get the run config instead
        self.automatic_optimization = False
        self.net = net
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        # the EMA generator is only ever run inside _sampling(), which puts it in eval mode with the BatchNorm
        # statistics sample_bn names for that call; otherwise it follows the module's mode like every other
        # submodule
        self.g_ema = copy.deepcopy(net.generator).requires_grad_(False) if ema else None
        self.z_dim, self.num_classes = int(net.z_dim), int(net.num_classes)
        self.d_steps = 0
        self.g_steps = 0
        self.scorer: nn.Module | None = None  # set in setup(); kept out of the module tree and checkpoints
        self.scorer_info: dict = {}
        self.protocol: dict = {}
        self.flops_per_sample: float | None = None
        self._standing_at: int | None = None  # g_steps at which standing statistics were last computed

    # ------------------------------------------------------------------------------------------ helpers
    @property
    def eval_generator(self) -> nn.Module:
        """The generator used for samples and metrics: the EMA copy when enabled."""
        return self.g_ema if self.g_ema is not None else self.net.generator

    def _to_net(self, x01: torch.Tensor) -> torch.Tensor:
        x = x01 * 2 - 1
        return x.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else x

    def _g_grads_in_d_step(self) -> bool:
        """True under DDP without ``find_unused_parameters``: every backward must then reach G too."""
        from pytorch_lightning.strategies import DDPStrategy

        strategy = self.trainer.strategy if self._trainer is not None else None
        return isinstance(strategy, DDPStrategy) and not strategy._ddp_kwargs.get(
            "find_unused_parameters", False
        )

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``G(z, y)``: images in [-1, 1] (the model summary counts FLOPs with ``example_input_array``)."""
        return self.net.generator(z, y if self.num_classes else None)

    @property
    def example_input_array(self):
        y = torch.zeros(1, dtype=torch.long) if self.num_classes else None
        return (torch.zeros(1, self.z_dim), y)

    @example_input_array.setter
    def example_input_array(self, value) -> None:
        pass

    @contextmanager
    def _sampling(self, generator: nn.Module):
        """Eval mode for the call, with the BatchNorm statistics ``sample_bn`` names (see
        :mod:`attnbench.tasks.gan_bn`); ``standing`` statistics are recomputed once per G update."""
        mode = self.hparams.get("sample_bn", "standing")
        if mode == "standing" and self._standing_at != self.g_steps:
            self.standing_statistics(generator)
        elif mode == "running" and generator is self.g_ema:
            self._copy_running_statistics()
        with gan_bn.sampling_mode(generator, mode):
            yield generator

    @torch.no_grad()
    def _copy_running_statistics(self) -> None:
        """``running`` for the EMA generator: the raw generator's BatchNorm running averages (what the EMA
        copies each G update; copied again here, since a checkpoint may hold standing statistics instead)."""
        for dst, src in zip(gan_bn.batch_norms(self.g_ema), gan_bn.batch_norms(self.net.generator)):
            dst.running_mean.copy_(src.running_mean)
            dst.running_var.copy_(src.running_var)
        self._standing_at = None

    def standing_statistics(self, generator: nn.Module) -> None:
        """BigGAN's standing statistics of ``generator``: ``standing_batches`` batches of ``eval_batch_size``
        from fixed noise (seed 0; classes in turn), so every rank and every call compute the same."""
        n, bs = int(self.hparams.get("standing_batches", 16)), int(self.hparams.eval_batch_size)
        gen = torch.Generator().manual_seed(0)
        z_all = torch.randn(n * bs, self.z_dim, generator=gen)
        y_all = torch.arange(n * bs) % max(1, self.num_classes)

        def draw(i: int) -> tuple:
            z, y = z_all[i * bs : (i + 1) * bs].to(self.device), y_all[i * bs : (i + 1) * bs].to(self.device)
            return z, (y if self.num_classes else None)

        gan_bn.standing_statistics(generator, draw, n)
        self._standing_at = self.g_steps

    @torch.no_grad()
    def sample(self, n: int, seed: int, rank: int = 0, world: int = 1, labels: torch.Tensor | None = None):
        """Yield ``(images in [0, 1], labels)`` chunks of this rank's share of ``n`` class-balanced samples
        (sample i has class ``i % num_classes``) from noise fixed by ``seed``."""
        idx = torch.arange(rank, n, world)
        gen = torch.Generator().manual_seed(int(seed))
        z_all = torch.randn(n, self.z_dim, generator=gen)[idx]
        y_all = (idx % max(1, self.num_classes)) if labels is None else labels[idx]
        with self._sampling(self.eval_generator) as g:
            for z, y in zip(
                z_all.split(self.hparams.eval_batch_size), y_all.split(self.hparams.eval_batch_size)
            ):
                y = y.to(self.device)
                yield (g(z.to(self.device), y if self.num_classes else None).float() + 1) / 2, y

    # --------------------------------------------------------------------------------------------- setup
    def setup(self, stage: str) -> None:
        if self.scorer is None:
            # a plain attribute, not a submodule: the scorer stays out of checkpoints and optimisers
            object.__setattr__(self, "scorer", self._build_scorer())
            nf = int(self.scorer.num_features)
            self.fid = gm.frechet_distance(nf)
            self.kid = gm.kernel_distance(nf, subset_size=min(1000, self.hparams.test_samples))
            shuffle = bool(self.hparams.get("is_shuffle", False))
            self.val_is = gm.inception_score(self.hparams.val_splits, shuffle=shuffle)
            self.test_is = gm.inception_score(self.hparams.test_splits, shuffle=shuffle)
            # the real test images: a data-given count, so no strict split size
            self.real_is = gm.inception_score(self.real_splits(), strict=False, shuffle=shuffle)
            self.real_count = SumMetric()
            # class agreement: the scorer's prediction equals the conditioning label (domain scorer only)
            self.cond_acc = (
                MulticlassAccuracy(self.num_classes, average="micro") if self._scorer_labels() else None
            )
            self.protocol = {
                "test/scorer": self.scorer.kind,
                "test/fid_reference": self.hparams.fid_reference,
                "test/sample_bn": self.hparams.get("sample_bn", "standing"),
                "test/is_protocol": gm.IS_PROTOCOLS[shuffle],
                "test/eval_generator": "ema" if self.g_ema is not None else "raw",
                **({"test/inception_resize": self.scorer.resize} if self.scorer.kind == "inception" else {}),
                **({"test/scorer_key": self.scorer_info["key"]} if "key" in self.scorer_info else {}),
            }

    def _scorer_labels(self) -> bool:
        """True when the scorer's classes are the data set's classes (the domain scorer)."""
        return (
            self.num_classes > 1
            and getattr(self.scorer, "kind", "") == "domain"
            and int(self.scorer.num_classes) == self.num_classes
        )

    def real_splits(self) -> int:
        """IS splits for the real test images: as for samples, but at least 100 images per split (a split's
        class marginal estimated from fewer images biases the score low)."""
        dm = self.trainer.datamodule if self._trainer is not None else None
        test_set = getattr(dm, "test_set", None)
        n = len(test_set) if test_set is not None else 100 * self.hparams.test_splits
        return max(1, min(self.hparams.test_splits, n // 100))

    def _build_scorer(self) -> nn.Module:
        hp = self.hparams
        if hp.inception_weights:
            from attnbench.metrics.inception import load_fid_inception

            return load_fid_inception(
                hp.inception_weights, hp.get("inception_sha256"), hp.get("inception_resize", "torch_fidelity")
            )
        from attnbench.metrics import domain_scorer as ds

        dm = self.trainer.datamodule if self._trainer is not None else None
        if dm is None or not hasattr(dm, "train_dataloader"):
            raise ConfigError(
                "GAN metrics without metrics.inception_weights need a data module whose training "
                "split trains the domain scorer"
            )
        if getattr(dm, "train_set", None) is None:
            dm.setup("fit")
        channels = int(getattr(dm, "channels", None) or 3)
        classes = int(getattr(dm, "num_classes", None) or self.num_classes)  # also for unconditional nets
        model, info = ds.cached_domain_scorer(
            dm, self.trainer, hp.cache_dir, channels, classes, seed=hp.scorer_seed, epochs=hp.scorer_epochs
        )
        self.scorer_info = info
        return model

    def on_fit_start(self) -> None:
        if self.flops_per_sample is None:
            from attnbench.metrics.flops import forward_flops

            z = torch.zeros(2, self.z_dim, device=self.device)
            y = torch.zeros(2, dtype=torch.long, device=self.device)
            self.flops_per_sample = forward_flops(self.net.generator, z, y) / 2  # G forward per sample

    def _scorer_to_device(self) -> nn.Module:
        if next(self.scorer.parameters()).device != self.device:
            self.scorer.to(self.device)
        return self.scorer

    # ------------------------------------------------------------------------------------------ training
    def configure_optimizers(self):
        hp = self.hparams
        betas = (float(hp.betas[0]), float(hp.betas[1]))
        opt_g = torch.optim.Adam(self.net.generator.parameters(), lr=hp.lr_g, betas=betas)
        opt_d = torch.optim.Adam(self.net.discriminator.parameters(), lr=hp.lr_d, betas=betas)
        return [opt_g, opt_d]

    def _random_labels(self, n: int) -> torch.Tensor | None:
        return torch.randint(0, self.num_classes, (n,), device=self.device) if self.num_classes else None

    def training_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        x = self._to_net(x)
        y = y if self.num_classes else None
        b = x.shape[0]
        G, D = self.net.generator, self.net.discriminator
        opt_g, opt_d = self.optimizers()

        # D step: hinge loss on real and fake in one forward (one power iteration per spectral norm)
        z, y_fake = torch.randn(b, self.z_dim, device=self.device), self._random_labels(b)
        if self._g_grads_in_d_step():
            fake = G(z, y_fake)
        else:
            with torch.no_grad():
                fake = G(z, y_fake)
        scores = D(torch.cat([x, fake]), None if y is None else torch.cat([y, y_fake]))
        d_real, d_fake = scores[:b], scores[b:]
        d_loss = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        opt_d.step()
        self.d_steps += 1
        self.log_dict(
            {
                "train/d_loss": d_loss.detach(),
                "train/d_real": d_real.detach().mean(),
                "train/d_fake": d_fake.detach().mean(),
            },
            on_step=True,
            on_epoch=True,
            batch_size=b,
            sync_dist=True,
            prog_bar=False,
        )

        # G step after every n_dis D steps
        if self.d_steps % self.hparams.n_dis == 0:
            z, y_fake = torch.randn(b, self.z_dim, device=self.device), self._random_labels(b)
            g_loss = -D(G(z, y_fake), y_fake).mean()
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(g_loss)
            opt_g.step()
            self.g_steps += 1
            self._update_ema()
            if self.hparams.get("max_g_steps") and self.g_steps >= self.hparams.max_g_steps:
                self.trainer.should_stop = True  # the papers count iterations as G updates
            self.log(
                "train/g_loss",
                g_loss.detach(),
                on_step=True,
                on_epoch=True,
                batch_size=b,
                sync_dist=True,
                prog_bar=True,
            )

    @torch.no_grad()
    def _update_ema(self) -> None:
        """``ema <- decay * ema + (1 - decay) * G`` on parameters, with decay warmed up as
        ``min(decay, (1 + t) / (10 + t))``; buffers (BatchNorm statistics, spectral-norm vectors) are
        copied."""
        if self.g_ema is None:
            return
        t = self.g_steps - self.hparams.ema_start
        decay = 0.0 if t <= 0 else min(self.hparams.ema_decay, (1 + t) / (10 + t))
        src, dst = list(self.net.generator.parameters()), list(self.g_ema.parameters())
        torch._foreach_lerp_(dst, src, 1.0 - decay)
        for b_ema, b in zip(self.g_ema.buffers(), self.net.generator.buffers()):
            b_ema.copy_(b)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["gan_steps"] = {"d": self.d_steps, "g": self.g_steps}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        steps = checkpoint.get("gan_steps", {})
        self.d_steps, self.g_steps = int(steps.get("d", 0)), int(steps.get("g", 0))
        self._standing_at = None  # new weights: their standing statistics are not known yet

    # ---------------------------------------------------------------------------------------- evaluation
    def _d_loss_on(self, x01: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """D's hinge loss on held-out real images against samples of the evaluation generator."""
        x = self._to_net(x01)
        y = y if self.num_classes else None
        z = torch.randn(x.shape[0], self.z_dim, device=self.device)
        with self._sampling(self.eval_generator) as g:
            fake = g(z, y)
        s = self.net.discriminator(torch.cat([x, fake]), None if y is None else torch.cat([y, y]))
        return F.relu(1 - s[: x.shape[0]]).mean() + F.relu(1 + s[x.shape[0] :]).mean()

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        self.log("val/loss", self._d_loss_on(x, y), on_epoch=True, batch_size=len(y), sync_dist=True)

    def test_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        self.log("test/loss", self._d_loss_on(x, y), on_epoch=True, batch_size=len(y), sync_dist=True)
        _, logits = gm.score(self._scorer_to_device(), x, self.hparams.eval_batch_size)
        self.real_is.update(logits)
        self.real_count.update(torch.tensor(float(len(y)), device=self.device))

    def _ensure_fid_reference(self) -> None:
        """Add the real reference split's features to the FID state once (this rank's share of batches)."""
        if int(self.fid.real_features_num_samples) > 0:
            return
        dm = self.trainer.datamodule
        name = self.hparams.fid_reference
        reference = getattr(dm, "reference_dataloader", None)  # the full, un-augmented split where one exists
        loader = reference(name) if reference is not None else getattr(dm, f"{name}_dataloader")()
        rank, world = self.global_rank, self.trainer.world_size
        sampler, own = getattr(loader, "sampler", None), None
        if isinstance(sampler, torch.utils.data.DistributedSampler):
            rank, world = 0, 1  # the loader already gives this rank its share
            # ... padded to equal shares by repeats: read only this rank's own samples (they come first)
            own = len(range(sampler.rank, len(sampler.dataset), sampler.num_replicas))
        # KID keeps every feature it is given (torchmetrics): a seeded random subset of about test_samples
        # reference images (all of CIFAR's 50k; ~50k of ImageNet's 1.28M instead of 10 GB of features)
        total = len(getattr(loader, "dataset", [])) or 1
        keep = min(1.0, self.hparams.test_samples / total)
        pick = torch.Generator().manual_seed(self.hparams.scorer_seed + 1000003 * rank)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.hparams.scorer_seed)  # a fixed pass over an augmented training split
            for i, (x, _) in enumerate(loader):
                if own is not None:
                    if own <= 0:
                        break
                    x, own = x[:own], own - len(x)
                if i % world == rank:
                    feats, _ = gm.score(
                        self._scorer_to_device(), x.to(self.device), self.hparams.eval_batch_size
                    )
                    self.fid.update(feats, real=True)
                    if keep < 1.0:
                        feats = feats[(torch.rand(len(feats), generator=pick) < keep).to(feats.device)]
                    if len(feats):
                        self.kid.update(feats, real=True)

    def _generated_scores(self, n: int, seed: int, is_metric, kid: bool = False) -> None:
        scorer = self._scorer_to_device()
        rank, world = self.global_rank, self.trainer.world_size
        indices = torch.arange(rank, n, world).split(self.hparams.eval_batch_size)  # sample()'s chunks
        for (x01, y), index in zip(self.sample(n, seed, rank, world), indices):
            feats, logits = gm.score(scorer, x01, self.hparams.eval_batch_size)
            self.fid.update(feats, real=False)
            if kid:
                self.kid.update(feats, real=False)
            is_metric.update(logits, index.to(logits.device))  # global order: the same splits under DDP
            if self.cond_acc is not None:
                self.cond_acc.update(logits, y)

    def _cond_acc(self) -> dict:
        if self.cond_acc is None:
            return {}
        value = self.cond_acc.compute()
        self.cond_acc.reset()
        return {"cond_acc": value}

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self._ensure_fid_reference()
        self._generated_scores(self.hparams.val_samples, seed=1234, is_metric=self.val_is)
        is_mean, _ = self.val_is.compute()
        fid = self.fid.compute()
        extra = {f"val/{k}": v for k, v in self._cond_acc().items()}
        self.log_dict({"val/is": is_mean, "val/fid": fid, **extra}, sync_dist=True, prog_bar=True)
        self.val_is.reset()
        self.fid.reset()

    def on_test_epoch_end(self) -> None:
        hp = self.hparams
        self._ensure_fid_reference()
        self._generated_scores(hp.test_samples, seed=4321, is_metric=self.test_is, kid=True)
        is_mean, is_std = self.test_is.compute()
        fid = self.fid.compute()
        n_kid_real = float(
            self.all_gather(
                torch.tensor(float(sum(len(f) for f in self.kid.real_features)), device=self.device)
            ).sum()
        )
        self.kid.subset_size = int(min(self.kid.subset_size, n_kid_real, hp.test_samples))
        with torch.random.fork_rng(devices=[]):  # KID's random subsets: the same for every run
            torch.manual_seed(0)
            kid_mean, kid_std = self.kid.compute()
        real_mean, real_std = self.real_is.compute()
        n_real = self.real_count.compute()
        values = {
            "test/is": is_mean,
            "test/is_std": is_std,
            "test/fid": fid,
            "test/kid": kid_mean,  # kernel distance: unbiased MMD^2 over subsets (Binkowski et al. 2018)
            "test/kid_std": kid_std,
            "test/kid_n_real": n_kid_real,
            "test/is_real": real_mean,
            "test/is_real_std": real_std,
            "test/num_samples": float(hp.test_samples),
            "test/is_splits": float(hp.test_splits),
            "test/fid_ref_samples": float(self.all_gather(self.fid.real_features_num_samples).sum()),
            "test/fid_n_real": float(self.all_gather(self.fid.real_features_num_samples).sum()),
            "test/fid_n_fake": float(self.all_gather(self.fid.fake_features_num_samples).sum()),
            "test/is_real_samples": float(n_real),
            "test/is_real_splits": float(self.real_is.splits),
        }
        values.update({f"test/{k}": float(v) for k, v in self._cond_acc().items()})
        if "val_acc" in self.scorer_info:
            values["test/scorer_val_acc"] = float(self.scorer_info["val_acc"])
        values.update(self._twin_values())  # data=twin_digits only (attnbench.metrics.twin)
        self.log_dict(
            {k: torch.as_tensor(v, dtype=torch.float32, device=self.device) for k, v in values.items()},
            sync_dist=True,
        )
        for m in (self.test_is, self.real_is, self.real_count, self.fid, self.kid):
            m.reset()

    def _twin_values(self) -> dict:
        from attnbench.metrics.twin import gan_twin_values

        return gan_twin_values(self, int(self.hparams.test_samples))

    # ------------------------------------------------------------------------------------------- figures
    @torch.no_grad()
    def figures(self, batch) -> dict:
        """``samples``: fixed noise, one row per class (at most 10), ``grid_columns`` columns; ``attention``
        (self-attention mixer): the generator's map for a few query positions; ``modulator`` (focal
        modulation mixer): ``|h(ctx)|`` over the samples."""
        from attnbench.callbacks.render import figure_title, image_panels

        cols, rows = self.hparams.grid_columns, max(1, min(10, self.num_classes))
        gen = torch.Generator().manual_seed(777)
        z = torch.randn(cols, self.z_dim, generator=gen).repeat(rows, 1).to(self.device)
        y = torch.arange(rows).repeat_interleave(cols).to(self.device)
        out = {}
        with self._sampling(self.eval_generator) as g:
            x = (g(z, y if self.num_classes else None) + 1) / 2
            labels = [f"class {k}" for k in range(rows)] if self.num_classes else None
            which = "EMA generator" if self.g_ema is not None else "generator"
            what = f"samples of the {which}, fixed noise per column" + (
                ", one class per row" if labels else ""
            )
            out["samples"] = image_panels(x.cpu(), figure_title(self, what), cols=cols, row_labels=labels)
            maps = self._mixer_figure(g, z[:: cols + 1][: min(4, rows)], y[:: cols + 1][: min(4, rows)])
        out.update(maps)
        return out

    @torch.no_grad()
    def generated_maps(
        self, n: int, seed: int = 0
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, tuple[str, str]]]:
        """What ``python -m attnbench.compare_maps`` draws of a generator: ``n`` samples ``[n, C, S, S]`` in
        [0, 1] of the generator the run's scores measured (the EMA copy when enabled, in its sampling mode)
        from latents drawn with ``seed`` and classes 0, 1, ... in turn (the same inputs for every run), its
        mixer maps ``{name: [n, r, r]}`` of those samples (:meth:`Generator.mixer_maps`) and their legends."""
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.z_dim, generator=gen).to(self.device)
        y = (torch.arange(n) % self.num_classes).to(self.device) if self.num_classes else None
        with self._sampling(self.eval_generator) as g:
            x = (g(z, y) + 1) / 2
            maps = g.mixer_maps(z, y)
            legends = g.mixer_map_legends()
        return x.float().cpu(), {k: v.detach().float().cpu() for k, v in maps.items()}, legends

    def _mixer_figure(self, g: nn.Module, z: torch.Tensor, y: torch.Tensor) -> dict:
        from attnbench.callbacks.render import figure_title
        from attnbench.mechanisms.non_local import SelfAttention2d

        attn = [m for m in g.modules() if isinstance(m, SelfAttention2d)]
        if attn:
            block = attn[0]
            block.store_attention = True
            try:
                x = (g(z, y if self.num_classes else None) + 1) / 2
                beta = block.last_attention
            finally:
                block.store_attention, block.last_attention = False, None
            title = figure_title(
                self, f"generator self-attention β at {int(math.isqrt(beta.shape[1]))}² queries"
            )
            return {"attention": attention_figure(x, beta, self.hparams.attn_queries, title)}
        mods = [m for name, m in g.named_modules() if name.endswith("modulation.modulator")]
        if mods:
            from attnbench.callbacks.render import overlay_panels

            captured = []
            handle = mods[0].register_forward_hook(lambda m, i, o: captured.append(o.detach()))
            try:
                x = (g(z, y if self.num_classes else None) + 1) / 2
            finally:
                handle.remove()
            title = figure_title(self, "generator focal modulator |h(ctx)|")
            return {
                "modulator": overlay_panels(
                    x.cpu(), captured[0].abs().mean(1), title, "|h(ctx)|, mean over channels"
                )
            }
        return {}


def attention_figure(x01: torch.Tensor, beta: torch.Tensor, n_queries: int = 4, title: str = "") -> Any:
    """Rows: samples ``[B, C, S, S]``; columns: the sample with its query points (one colour each), then for
    each query the attention over key positions (``beta: [B, N_q, N_k]``, square grids) on the sample, with
    that query marked; one colour scale for the whole figure (the weights compare across panels)."""
    from attnbench.callbacks.render import DPI, FONT, MIN_WIDTH_IN, _pyplot, suptitle

    plt = _pyplot()
    b, nq, nk = beta.shape
    hq, hk = int(math.isqrt(nq)), int(math.isqrt(nk))
    s = x01.shape[-1]
    # queries spread over the map: centre, then points a quarter of the way in from each corner
    picks = [
        (hq // 2, hq // 2),
        (hq // 4, hq // 4),
        (hq // 4, 3 * hq // 4),
        (3 * hq // 4, hq // 4),
        (3 * hq // 4, 3 * hq // 4),
    ][: max(1, n_queries)]
    grey = x01.float().cpu().mean(1).numpy()
    colours = ["lime", "cyan", "magenta", "dodgerblue", "white"]
    maps = [beta[:, r * hq + c].float().cpu().view(b, hk, hk) for r, c in picks]
    vmax = max(float(m.max()) for m in maps)
    cols = 1 + len(picks)
    width = max(MIN_WIDTH_IN, 1.3 * cols + 1.2)
    fig, axes = plt.subplots(b, cols, figsize=(width, 1.3 * b + 0.9), squeeze=False, dpi=DPI)
    cell = s / hq
    shown = None
    for i in range(b):
        axes[i, 0].imshow(grey[i], cmap="gray", interpolation="nearest")
        for q, (r, c) in enumerate(picks):
            centre = ((c + 0.5) * cell - 0.5, (r + 0.5) * cell - 0.5)
            axes[i, 0].scatter(*centre, s=30, c=colours[q], marker="s", edgecolors="black", linewidths=0.5)
            ax = axes[i, q + 1]
            ax.imshow(grey[i], cmap="gray", interpolation="nearest")
            shown = ax.imshow(
                maps[q][i].numpy(),
                cmap="magma",
                alpha=0.7,
                vmin=0,
                vmax=vmax,
                extent=(-0.5, s - 0.5, s - 0.5, -0.5),
                interpolation="nearest",
            )
            ax.scatter(*centre, s=30, c=colours[q], marker="s", edgecolors="black", linewidths=0.5)
            if i == 0:
                ax.set_title(f"query {q + 1} ({r},{c})", fontsize=FONT, color="black")
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i, 0].set_ylabel(f"sample {i + 1}", fontsize=FONT)
    axes[0, 0].set_title("sample, queries", fontsize=FONT)
    bar = fig.colorbar(shown, ax=axes.ravel().tolist(), fraction=0.03, pad=0.02)
    bar.set_label(f"attention weight β over {hk}×{hk} keys", fontsize=FONT)
    bar.ax.tick_params(labelsize=FONT - 1)
    suptitle(fig, title)
    return fig
