"""Which BatchNorm statistics the sampling generator uses (issue 23, item 6) and the SAGAN release recipe
(item 7). References: BigGAN's standing statistics (the mean over passes of each BatchNorm input's batch
mean / unbiased batch variance), torch's own cumulative-average BatchNorm as a second implementation."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from attnbench.models import create_model
from attnbench.tasks.gan import GANTask


def tiny_task(**kw) -> GANTask:
    torch.manual_seed(0)
    net = create_model("sagan", image_size=16, channels=1, num_classes=10, ch=8, attn_res_g=8, attn_res_d=8)
    return GANTask(net, eval_batch_size=12, standing_batches=3, **kw)


def norms(g):
    return [m for m in g.modules() if isinstance(m, _BatchNorm)]


def drift(task):
    """Make the EMA generator's weights differ from the raw generator's, and give the raw one trained-looking
    running statistics, as after training (the EMA copies them with the buffers)."""
    with torch.no_grad():
        for p in task.g_ema.parameters():
            p.add_(0.3 * torch.randn_like(p))
        for bn in norms(task.net.generator):
            bn.running_mean.normal_(0, 2)
            bn.running_var.uniform_(0.5, 4)
    for b_ema, b in zip(task.g_ema.buffers(), task.net.generator.buffers()):
        b_ema.copy_(b)


def test_standing_statistics_are_the_ema_generators_own():
    task = tiny_task(sample_bn="standing")
    drift(task)
    g = task.g_ema
    raw = [bn.running_mean.clone() for bn in norms(task.net.generator)]
    # reference 1, re-typed for the first BatchNorm (its input, linear(z), precedes every BatchNorm): the mean
    # over the standing batches of the per-channel batch mean and unbiased batch variance
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(3 * 12, task.z_dim, generator=gen)
    with torch.no_grad():
        h = g.linear(z).view(len(z), g.bottom_channels, 4, 4)
    chunks = h.split(12)
    want_mean = torch.stack([c.mean((0, 2, 3)) for c in chunks]).mean(0)
    want_var = torch.stack([c.var((0, 2, 3), correction=1) for c in chunks]).mean(0)
    # reference 2: torch's train-mode BatchNorm, a cumulative average, BatchNorm layers alone in train mode
    twin = copy.deepcopy(g).eval()
    for bn in norms(twin):
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    y = torch.arange(36) % 10
    with torch.no_grad():
        for zc, yc in zip(z.split(12), y.split(12)):
            twin(zc, yc)
    with task._sampling(g):
        pass
    first = norms(g)[0]
    assert torch.allclose(first.running_mean, want_mean, atol=1e-5)
    assert torch.allclose(first.running_var, want_var, atol=1e-5)
    for ours, theirs, copied in zip(norms(g), norms(twin), raw):
        assert torch.allclose(ours.running_mean, theirs.running_mean, atol=1e-5)
        assert torch.allclose(ours.running_var, theirs.running_var, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(ours.running_mean, copied)  # not the raw generator's statistics
    assert g.training is task.net.generator.training  # modes restored
    assert task._standing_at == task.g_steps  # computed once per G update


def test_running_uses_the_copied_statistics_and_batch_normalises_each_batch():
    task = tiny_task(sample_bn="batch")
    drift(task)
    g = task.g_ema
    before = [b.clone() for b in g.buffers()]
    z, y = torch.randn(12, task.z_dim), torch.arange(12) % 10
    twin = copy.deepcopy(g).eval()
    for bn in norms(twin):
        bn.train()
    with torch.no_grad():
        want = twin(z, y)
        with task._sampling(g) as gen:
            got = gen(z, y)
    assert torch.allclose(got, want, atol=1e-6)  # each batch by its own statistics
    assert all(torch.equal(a, b) for a, b in zip(before, g.buffers()))  # running buffers untouched
    running = tiny_task(sample_bn="running")
    drift(running)
    with torch.no_grad():  # e.g. a checkpoint saved after a standing evaluation: other statistics in the EMA
        for bn in norms(running.g_ema):
            bn.running_mean.add_(1.0)
    with torch.no_grad(), running._sampling(running.g_ema) as gen:
        eval_out = gen(z, y)
    ref = copy.deepcopy(running.g_ema).eval()
    for a, b in zip(norms(ref), norms(running.net.generator)):
        assert torch.equal(a.running_mean, b.running_mean) and torch.equal(a.running_var, b.running_var)
    with torch.no_grad():
        assert torch.allclose(eval_out, ref(z, y))  # eval mode with the raw generator's running statistics


def test_sample_bn_is_validated():
    from attnbench.errors import ConfigError

    with pytest.raises(ConfigError, match="sample_bn='ema'"):
        tiny_task(sample_bn="ema")


def test_release_recipe_holds_the_release_values_and_the_paper_recipe_the_papers():
    from test_imagenet_recipes import composed

    from attnbench.train import instantiate

    paper, release = (
        composed("experiment=sagan_imagenet128"),
        composed("experiment=sagan_imagenet128_release"),
    )
    pt, rt = paper.model.task, release.model.task
    assert (pt.lr_g, pt.lr_d, tuple(pt.betas), paper.data.batch_size) == (1e-4, 4e-4, (0.0, 0.9), 256)
    assert pt.ema is True and pt.sample_bn == "standing" and paper.model.init == "orthogonal"
    assert (rt.lr_g, rt.lr_d, tuple(rt.betas)) == (1e-4, 4e-4, (0.0, 0.999))
    assert rt.max_g_steps == 2_000_000 and rt.ema is False and rt.sample_bn == "running"
    assert release.data.batch_size == 64 and release.trainer.devices == 4  # 4 GPUs x 64, per-GPU statistics
    assert release.trainer.sync_batchnorm is False
    net = instantiate(release.model.net, _convert_="all")
    g = net.generator
    assert g.blocks[0].bn1.bn.momentum == pytest.approx(1e-3) and g.out_bn.momentum == pytest.approx(1e-4)


def test_xavier_init_is_glorot_uniform():
    net = create_model("sagan", image_size=16, channels=1, num_classes=10, ch=8, attn_res_g=0, attn_res_d=0,
                       init="xavier")  # fmt: skip
    w = net.generator.out_conv.parametrizations.weight.original.detach()
    fan_in, fan_out = w.shape[1] * 9, w.shape[0] * 9
    bound = (6 / (fan_in + fan_out)) ** 0.5
    assert float(w.abs().max()) <= bound and float(w.abs().max()) > 0.8 * bound
    assert float(w.std()) == pytest.approx(bound / 3**0.5, rel=0.25)  # a uniform's std


# ------------------------------------------------------------------------------------------------- item 9
@pytest.mark.parametrize("shuffle", [False, True])
def test_is_shuffle_equals_torch_fidelity_with_its_seed_or_keeps_the_order(shuffle):
    """torch-fidelity's isc_features_to_metric (its default: shuffled with seed 2020) is the reference for
    ``shuffle=True``; ``shuffle=False`` equals it with samples_shuffle=False (the improved-GAN order)."""
    from torch_fidelity.metric_isc import isc_features_to_metric

    from attnbench.metrics import gan as gm

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 10, generator=g) * 3
    logits[:100, :3] += 4  # the first half concentrated on 3 classes: the split order matters
    metric = gm.inception_score(10, shuffle=shuffle)
    metric.update(logits)
    mean, std = metric.compute()
    ref = isc_features_to_metric(logits, 10, shuffle, 2020)
    assert float(mean) == pytest.approx(ref["inception_score_mean"], rel=1e-5)
    assert float(std) == pytest.approx(ref["inception_score_std"], rel=1e-4)
    other = gm.inception_score(10, shuffle=not shuffle)
    other.update(logits)
    assert float(other.compute()[1]) != pytest.approx(float(std), rel=1e-2)  # the protocols differ here
    assert gm.IS_PROTOCOLS[shuffle] == ("shuffled_splits_seed2020" if shuffle else "ordered_splits")
