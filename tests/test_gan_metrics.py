"""IS / FID through torchmetrics with precomputed scorer outputs, the FID Inception weights file, and the
domain scorer (training, cache)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import linalg
from torch.utils.data import DataLoader, TensorDataset

from attnbench.errors import ConfigError
from attnbench.metrics import domain_scorer as ds
from attnbench.metrics import gan as gm
from attnbench.metrics.inception import FIDInceptionV3, load_fid_inception


def test_fid_of_identical_sets_is_zero_and_of_shifted_sets_is_the_shift():
    torch.manual_seed(0)
    feats = torch.randn(500, 8) @ torch.randn(8, 8)
    fid = gm.frechet_distance(8)
    fid.update(feats, real=True)
    fid.update(feats, real=False)
    assert fid.compute().item() == pytest.approx(0.0, abs=1e-3)
    fid.reset()  # keeps the real statistics, drops the generated ones
    fid.update(feats + torch.tensor([3.0] + [0.0] * 7), real=False)  # same covariance, mean moved by 3
    assert fid.compute().item() == pytest.approx(9.0, rel=1e-3)


def test_fid_matches_closed_form_for_gaussians():
    rng = np.random.default_rng(0)
    d, n = 4, 40000
    a, b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    cov1, cov2 = a @ a.T / d + np.eye(d), b @ b.T / d + 0.5 * np.eye(d)
    mu1, mu2 = np.zeros(d), rng.normal(size=d)
    x1 = rng.multivariate_normal(mu1, cov1, size=n)
    x2 = rng.multivariate_normal(mu2, cov2, size=n)
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(cov1 + cov2 - 2 * linalg.sqrtm(cov1 @ cov2).real)
    fid = gm.frechet_distance(d)
    fid.update(torch.from_numpy(x1).float(), real=True)
    fid.update(torch.from_numpy(x2).float(), real=False)
    assert fid.compute().item() == pytest.approx(expected, rel=0.03)


def test_inception_score_values():
    k, n = 10, 1000
    uniform = gm.inception_score(splits=5)
    uniform.update(torch.zeros(n, k))  # a classifier that cannot tell: p(y|x) = p(y) -> IS = 1
    mean, std = uniform.compute()
    assert mean.item() == pytest.approx(1.0, abs=1e-6) and std.item() == pytest.approx(0.0, abs=1e-6)
    logits = torch.full((n, k), -30.0)
    logits[torch.arange(n), torch.arange(n) % k] = 30.0  # certain, and every class equally often -> IS = K
    confident = gm.inception_score(splits=1)
    confident.update(logits)
    assert confident.compute()[0].item() == pytest.approx(k, rel=1e-4)
    # splits in order (no shuffle): 5 consecutive parts of 200, each holding every class equally often
    confident5 = gm.inception_score(splits=5)
    confident5.update(logits)
    assert confident5.compute()[0].item() == pytest.approx(k, rel=1e-4)
    # one split equals the formula exp(E_x KL(p(y|x) || p(y)))
    torch.manual_seed(0)
    logits = torch.randn(300, k) * 2
    p = logits.softmax(1)
    expected = math.exp((p * (p.log() - p.mean(0, keepdim=True).log())).sum(1).mean().item())
    single = gm.inception_score(splits=1)
    single.update(logits)
    assert single.compute()[0].item() == pytest.approx(expected, rel=1e-5)


def test_quantize_and_score_chunks():
    x = torch.tensor([0.0, 0.5, 1.2, 0.2501]).view(1, 1, 2, 2)
    q = gm.quantize(x)
    assert torch.allclose(q * 255, torch.round(q * 255)) and q.max() == 1.0
    model = ds.DomainClassifier(1, 3, width=4).eval()
    xs = torch.rand(7, 1, 8, 8)
    f1, l1 = gm.score(model, xs, batch_size=3)
    f2, l2 = model.features_and_logits(gm.quantize(xs))
    torch.testing.assert_close(f1, f2)
    torch.testing.assert_close(l1, l2)


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    """A weights file in the layout of pt_inception-2015-12-05 (torchvision Inception3 names, 1008 classes,
    no AuxLogits), with random values, saved as a plain state dict without num_batches_tracked."""
    torch.manual_seed(0)
    net = FIDInceptionV3()
    state = {
        k: (torch.randn_like(v) * 0.05 if v.is_floating_point() and "running_var" not in k else v)
        for k, v in net.net.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    path = tmp_path_factory.mktemp("inception") / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    return path, state


def test_inception_weights_load_from_local_file(inception_file):
    path, state = inception_file
    net = load_fid_inception(path)
    loaded = net.net.state_dict()
    for k, v in state.items():
        assert torch.equal(loaded[k], v), k
    assert not any(p.requires_grad for p in net.parameters()) and not net.training
    x = torch.rand(1, 1, 16, 16)  # grey, small: repeated to RGB and resized to 299 inside
    feats, logits = net.features_and_logits(x)
    assert feats.shape == (1, 2048) and logits.shape == (1, 1008)
    torch.testing.assert_close(logits, feats @ state["fc.weight"].t())  # IS logits: fc without its bias
    # the reference graph's pooling differs from torchvision's ImageNet Inception v3
    assert net.net.Mixed_7c.max_pool and not net.net.Mixed_7b.max_pool


@pytest.mark.parametrize("size", [(32, 32), (8, 8), (64, 48), (375, 500)])
def test_tf1_bilinear_resize_equals_torch_fidelity(size):
    tf = pytest.importorskip("torch_fidelity.interpolate_compat_tensorflow")
    from attnbench.metrics.inception import resize_bilinear_tf1

    torch.manual_seed(0)
    x = torch.rand(2, 3, *size) * 255
    ref = tf.interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False)
    torch.testing.assert_close(resize_bilinear_tf1(x, (299, 299)), ref, atol=1e-4, rtol=0)
    # not what torch's half-pixel bilinear gives (the pytorch-fid path): the two protocols differ
    half_pixel = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    assert (half_pixel - ref).abs().max() > 1.0


def he_initialised_inception_state() -> dict:
    """Random weights that keep the signal alive through the 94 conv layers (He-scaled convs, identity
    BatchNorm), so features depend on the input's details and protocols can be told apart."""
    torch.manual_seed(1)
    state = {}
    for k, v in FIDInceptionV3().net.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        if k.endswith("conv.weight"):
            v = torch.randn_like(v) * math.sqrt(2.0 / v[0].numel())
        elif k.endswith("fc.weight"):
            v = torch.randn_like(v) * 0.05
        state[k] = v
    return state


def test_inception_features_equal_torch_fidelity_with_the_same_weights(tmp_path, monkeypatch):
    """The default resize protocol gives torch-fidelity's pool3 features and unbiased logits (the IS/FID
    inputs of torch-fidelity and torchmetrics) for the same weights, on 8-bit images."""
    fe = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    state = he_initialised_inception_state()
    path = tmp_path / "inception.pth"
    torch.save(state, path)
    monkeypatch.setattr(fe, "load_state_dict_from_url", lambda *a, **k: dict(state))
    ref = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"]).eval()
    ours = load_fid_inception(path, sha256=None)
    assert ours.resize == "torch_fidelity"
    torch.manual_seed(0)
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        ref_feats, ref_logits = ref(images)
        feats, logits = ours.features_and_logits(images.float() / 255)  # the tasks' images are in [0, 1]
    torch.testing.assert_close(feats, ref_feats, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logits, ref_logits, atol=1e-3, rtol=1e-4)
    other = load_fid_inception(path, sha256=None, resize="pytorch_fid")
    with torch.no_grad():
        other_feats = other.features_and_logits(images.float() / 255)[0]
    assert (other_feats - ref_feats).abs().max() > 100 * (feats - ref_feats).abs().max()
    with pytest.raises(ConfigError, match="inception_resize='bicubic'"):
        FIDInceptionV3("bicubic")


def test_inception_weights_bad_files_are_config_errors(inception_file, tmp_path):
    path, state = inception_file
    with pytest.raises(ConfigError, match="is not a file"):
        load_fid_inception(tmp_path / "missing.pth")
    wrong = tmp_path / "wrong.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("Mixed_7c")}, wrong)
    with pytest.raises(ConfigError, match="missing"):
        load_fid_inception(wrong)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="garbage.pth.*not a readable torch checkpoint"):
        load_fid_inception(garbage)


def test_inception_weights_path_reaches_the_task(inception_file, cfg_factory):
    """``metrics.inception_weights=/path`` on the command line makes the GAN task score with that file."""
    from attnbench.train import instantiate

    path, state = inception_file
    cfg = cfg_factory(
        "model=sagan",
        f"metrics.inception_weights={path}",
        "metrics.inception_sha256=null",  # the fixture is not the published file
        "model.ch=8",
        "data.image_size=16",
        "model.attn_res_g=8",
        "model.attn_res_d=8",
    )
    assert cfg.model.task.inception_weights == str(path)
    net = instantiate(cfg.model.net, _convert_="all")
    task = instantiate(cfg.model.task, net=net, _convert_="all")
    task.setup("test")
    assert isinstance(task.scorer, FIDInceptionV3) and task.cond_acc is None  # ImageNet classes: no agreement
    torch.testing.assert_close(task.scorer.net.fc.weight, state["fc.weight"])
    assert not any(k.startswith("scorer.") for k in task.state_dict())  # the scorer stays out of checkpoints
    assert task.protocol["test/scorer"] == "inception"
    assert task.protocol["test/inception_resize"] == "torch_fidelity"  # the protocol is in metrics.json


def _toy_data(n: int, seed: int):
    """Two classes of 8x8 images: a bright left half or a bright right half, plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.rand(n, 1, 8, 8, generator=g) * 0.3
    x[y == 0, :, :, :4] += 0.6
    x[y == 1, :, :, 4:] += 0.6
    return TensorDataset(x.clamp(0, 1), y)


def test_domain_scorer_learns_and_cache_roundtrip(tmp_path):
    train = DataLoader(_toy_data(256, 0), batch_size=32, shuffle=True)
    val = DataLoader(_toy_data(64, 1), batch_size=64)
    state = torch.random.get_rng_state()
    model, info = ds.train_domain_classifier(
        train, val, in_channels=1, num_classes=2, epochs=3, seed=0, width=4
    )
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's random stream is untouched
    assert info["val_acc"] >= 0.95
    key = ds.cache_key("ToyData", 8, 1, 2, 256, seed=0)
    assert (
        key == "ToyData-8px-1ch-2cls-n256-s0-v3"
    )  # v3: scorer-seeded batches of 64 (v2 files are not reused)
    assert (
        ds.cache_key("ToyData", 8, 1, 2, 256, seed=0, epochs=4, augment=False)
        == "ToyData-8px-1ch-2cls-n256-noaug-s0-e4-v3"
    )
    path = tmp_path / f"{key}.pt"
    ds.save_scorer(path, model, info)
    loaded, info2 = ds.load_scorer(path)
    x = next(iter(val))[0]
    torch.testing.assert_close(loaded(x), model(x))
    assert info2["val_acc"] == info["val_acc"]
    # the same seed trains the same scorer
    again, _ = ds.train_domain_classifier(
        train, None, in_channels=1, num_classes=2, epochs=3, seed=0, width=4
    )
    torch.testing.assert_close(again(x), model(x))


def test_cached_domain_scorer_is_the_same_whichever_run_trains_it(tmp_path, monkeypatch):
    """The first run to need a scorer trains and caches it for every later run: its weights must not depend on
    that run's seed or data.batch_size (before v3 they did: IS/FID depended on which test or run came first).
    """
    from types import SimpleNamespace

    from attnbench.data.digits import DigitsDataModule

    trainer = SimpleNamespace(is_global_zero=True, strategy=SimpleNamespace(barrier=lambda name: None))
    models = []
    for run_seed, batch_size in ((0, 16), (7, 100)):
        monkeypatch.setenv("PL_GLOBAL_SEED", str(run_seed))  # what pl.seed_everything sets for the run
        dm = DigitsDataModule(image_size=16, batch_size=batch_size, num_workers=0)
        cache = tmp_path / f"cache_s{run_seed}"
        model, info = ds.cached_domain_scorer(dm, trainer, str(cache), 1, 10, seed=0, epochs=1)
        assert info["batch_size"] == ds.SCORER_BATCH_SIZE and [
            p.name for p in (cache / "domain_scorer").iterdir()
        ]
        models.append(model)
    for a, b in zip(models[0].state_dict().values(), models[1].state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # and the run's own loaders are left as they were
    assert dm.train_dataloader().batch_size == 100 and dm.train_dataloader().sampler.seed == 7


def test_domain_scorer_passes_follow_the_samplers_epoch():
    """The training loader of a run orders (and augments) by epoch: each pass of the scorer is a new epoch."""
    from attnbench.data.sampling import EpochShuffle, SeededSamples

    class Recorded(torch.utils.data.Dataset):
        def __init__(self, data):
            self.data, self.seen = data, []

        def __len__(self):
            return len(self.data)

        def __getitem__(self, i):
            self.seen.append(int(i))
            return self.data[i]

    data = Recorded(_toy_data(64, 0))
    sampler = EpochShuffle(len(data), torch.Generator(), seed=3)
    train = DataLoader(SeededSamples(data), batch_size=16, sampler=sampler)
    ds.train_domain_classifier(train, None, in_channels=1, num_classes=2, epochs=3, seed=0, width=4)
    passes = [data.seen[i : i + 64] for i in range(0, 3 * 64, 64)]
    assert len(data.seen) == 3 * 64 and all(sorted(p) == list(range(64)) for p in passes)
    assert passes[0] != passes[1] != passes[2] != passes[0]
    assert passes[1] == [i for i, _ in sampler.epoch_items(1)]  # exactly the sampler's epoch 1


def test_inception_score_follows_the_reference_tf_code():
    """openai/improved-gan's get_inception_score in numpy: parts in order, np.std (ddof 0); the sample
    order comes from the indices (as under DDP, where each rank holds interleaved samples)."""
    import numpy as np

    torch.manual_seed(0)
    logits = torch.randn(1000, 10) * 3
    preds = torch.softmax(logits.double(), 1).numpy()
    scores = []
    for i in range(10):
        part = preds[i * 1000 // 10 : (i + 1) * 1000 // 10]
        kl = part * (np.log(part) - np.log(np.expand_dims(np.mean(part, 0), 0)))
        scores.append(np.exp(np.mean(np.sum(kl, 1))))
    metric = gm.inception_score(splits=10)
    perm = torch.randperm(1000)
    for chunk in perm.split(128):  # arriving out of order, with their indices
        metric.update(logits[chunk], chunk)
    mean, std = metric.compute()
    assert mean.item() == pytest.approx(np.mean(scores), rel=1e-6)
    assert std.item() == pytest.approx(np.std(scores), rel=1e-5)
    uneven = gm.inception_score(splits=3)
    uneven.update(logits[:1000])
    with pytest.raises(ValueError, match="1000 samples cannot be cut into 3 equal"):
        uneven.compute()
    from attnbench.errors import ConfigError
    from attnbench.models import create_model
    from attnbench.tasks.gan import GANTask

    net = create_model("sagan", image_size=16, channels=1, num_classes=10, ch=8, attn_res_g=8, attn_res_d=8)
    with pytest.raises(ConfigError, match="test_samples=1000 is not a multiple of model.task.test_splits=3"):
        GANTask(net, test_samples=1000, test_splits=3)


def test_kernel_distance_over_precomputed_features():
    torch.manual_seed(0)
    real = torch.randn(400, 8)
    kid_same, kid_far = gm.kernel_distance(8, subset_size=100), gm.kernel_distance(8, subset_size=100)
    for kid, fake in ((kid_same, torch.randn(400, 8)), (kid_far, torch.randn(400, 8) + 1.0)):
        kid.update(real, real=True)
        kid.update(fake, real=False)
    same, far = kid_same.compute()[0].item(), kid_far.compute()[0].item()
    assert abs(same) < 0.02 and far > 10 * max(abs(same), 1e-3)


def test_inception_weights_checksum_and_a_torchvision_file_are_clear_errors(inception_file, tmp_path):
    from torchvision.models import inception_v3

    from attnbench.errors import ConfigError
    from attnbench.metrics.inception import WEIGHTS_SHA256_PREFIX, sha256_of

    path, _ = inception_file
    with pytest.raises(ConfigError, match="not the published pt_inception-2015-12-05-6726825d.pth"):
        load_fid_inception(path, sha256=WEIGHTS_SHA256_PREFIX)  # random weights under the published name
    assert load_fid_inception(path, sha256=sha256_of(path)[:8]) is not None  # a matching checksum loads
    imagenet = tmp_path / "inception_v3_google-0cc3c7bd.pth"
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), imagenet)
    with pytest.raises(ConfigError, match="torchvision's ImageNet Inception v3"):
        load_fid_inception(imagenet)
