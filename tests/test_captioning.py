"""Show, Attend and Tell: additive attention, the doubly stochastic term, hard-attention training terms,
beam search (batched = per image, exact on a tiny vocabulary, no <end>), and training on digit_captions."""

from __future__ import annotations

import itertools
import json
import shutil

import pytest
import torch

from attnbench.mechanisms.additive_attention import AdditiveAttention, doubly_stochastic_penalty
from attnbench.metrics.bleu import CorpusBLEU
from attnbench.models.show_attend_tell import ShowAttendTell
from attnbench.tasks.captioning import CaptioningTask

SPECIALS = ["<pad>", "<start>", "<end>", "<unk>"]
DIGIT_VOCAB = SPECIALS + "zero one two three four five six seven eight nine".split()


def tiny_model(vocab=DIGIT_VOCAB, mixer="soft", seed=0, **kw) -> ShowAttendTell:
    torch.manual_seed(seed)
    kw = {
        "in_channels": 1,
        "cnn_channels": (8, 8, 16),
        "embed_dim": 16,
        "hidden_dim": 32,
        "attn_dim": 16,
        **kw,
    }
    return ShowAttendTell(vocab, mixer=mixer, **kw).double().eval()


# ----------------------------------------------------------------------------------------------- mechanism
def test_attention_weights_sum_to_one_and_context_is_their_expectation():
    torch.manual_seed(0)
    att = AdditiveAttention(feat_dim=6, hidden_dim=5, attn_dim=4, gate=False)
    feats, h = torch.randn(3, 7, 6), torch.randn(3, 5)
    z, alpha, _ = att(feats, h, mode="soft")
    assert torch.allclose(alpha.sum(-1), torch.ones(3), atol=1e-6)
    assert (alpha > 0).all()
    assert torch.allclose(z, (alpha[..., None] * feats).sum(1), atol=1e-6)
    # e_i = v^T tanh(W_a a_i + W_h h): recomputed by hand
    e = torch.tanh(
        feats @ att.feat_proj.weight.T + att.feat_proj.bias + (h @ att.hidden_proj.weight.T)[:, None]
    )
    e = e @ att.score.weight[0] + att.score.bias
    assert torch.allclose(alpha, torch.softmax(e, -1), atol=1e-6)


def test_cpu_inference_chunks_give_the_training_path_weights(monkeypatch):
    """Under no_grad on CPU the attention MLP runs in image chunks through one reused buffer, with
    tanh(u) = 2 sigmoid(2u) - 1: same alpha as the autograd path (1 or K rows per image), and the projected
    features are left untouched (they are reused at every step)."""
    import attnbench.mechanisms.additive_attention as additive

    torch.manual_seed(0)
    att = AdditiveAttention(feat_dim=6, hidden_dim=5, attn_dim=4, gate=False)
    proj = att.project(torch.randn(10, 7, 6)).detach()
    kept = proj.clone()
    monkeypatch.setattr(additive, "CPU_CHUNK_ELEMENTS", 3 * 7 * 4)  # 3 rows per chunk
    for k in (1, 3):  # 4 chunks of 3, 3, 3, 1 images; then 10 chunks of one image (3 rows each)
        h = torch.randn(10 * k, 5)
        reference = att.weights(proj.repeat_interleave(k, dim=0), h).detach()
        with torch.no_grad():
            chunked = att.weights(proj, h)
        assert torch.allclose(chunked, reference, atol=1e-6)
    assert torch.equal(proj, kept)


@pytest.mark.parametrize("mode", ["soft", "hard", "none"])
def test_beams_share_their_image_features_without_copies(mode):
    """K decoder rows per image (beam search) give what one copy of the features per row gives."""
    torch.manual_seed(0)
    att = AdditiveAttention(feat_dim=6, hidden_dim=5, attn_dim=4).double()
    feats, h = torch.randn(4, 7, 6, dtype=torch.float64), torch.randn(12, 5, dtype=torch.float64)
    with torch.no_grad():
        z, alpha, _ = att(feats, h, mode=mode, sample=False)
        z_ref, alpha_ref, _ = att(feats.repeat_interleave(3, dim=0), h, mode=mode, sample=False)
    assert torch.allclose(alpha, alpha_ref, atol=1e-12)
    assert torch.allclose(z, z_ref, atol=1e-12)
    with pytest.raises(ValueError, match="13 rows, not a multiple of the 4 images"):
        att(feats, torch.randn(13, 5, dtype=torch.float64), mode=mode)


def test_hard_attention_samples_follow_alpha_and_expected_context_is_used_when_asked():
    torch.manual_seed(0)
    att = AdditiveAttention(feat_dim=4, hidden_dim=3, attn_dim=8, gate=True)
    feats = torch.randn(1, 5, 4).expand(4000, 5, 4)
    h = torch.randn(1, 3).expand(4000, 3)
    z, alpha, info = att(feats, h, mode="hard", sample=True)
    freq = torch.bincount(info["location"], minlength=5).float() / 4000
    assert torch.allclose(freq, alpha[0], atol=0.03)
    beta = info["beta"][:, None]
    assert torch.allclose(z, beta * feats[torch.arange(4000), info["location"]], atol=1e-6)
    assert torch.allclose(info["log_prob"], alpha[0].log()[info["location"]], atol=1e-6)
    use_expected = torch.arange(4000) % 2 == 0
    z2, _, info2 = att(feats, h, mode="hard", sample=True, use_expected=use_expected)
    soft, _, _ = att(feats, h, mode="soft")
    assert torch.allclose(z2[use_expected], soft[use_expected], atol=1e-6)
    assert (info2["log_prob"][use_expected] == 0).all()
    _, alpha_none, _ = att(feats[:2], h[:2], mode="none")
    assert torch.allclose(alpha_none, torch.full((2, 5), 0.2))


def test_doubly_stochastic_term_matches_hand_computation():
    alphas = torch.tensor([[[0.5, 0.25, 0.25], [0.2, 0.3, 0.5], [0.9, 0.05, 0.05]]])
    mask = torch.tensor([[1, 1, 0]])  # the third step is padding
    # sums over t: [0.7, 0.55, 0.75] -> 0.3^2 + 0.45^2 + 0.25^2
    assert doubly_stochastic_penalty(alphas, mask).item() == pytest.approx(0.355)
    # all three steps: sums [1.6, 0.6, 0.8] -> 0.6^2 + 0.4^2 + 0.2^2
    assert doubly_stochastic_penalty(alphas).item() == pytest.approx(0.56)


def make_task(net, **kw) -> CaptioningTask:
    return CaptioningTask(net, mean=[0.0], std=[1.0], **kw)


def test_task_loss_weights_the_doubly_stochastic_term_as_eq_14():
    """Eq. 14: per caption the summed NLL + λ Σ_i (1 − Σ_t α_ti)², here divided by the batch's word count
    (= the batch mean of eq. 14 divided by the mean caption length). Hand computation: uniform logits over
    V = 14 words (NLL log 14 per word), captions of 3 and 2 words (with <end>), 2 locations."""
    import math

    from attnbench.errors import ConfigError

    task = make_task(tiny_model().float(), alpha_c=0.7)
    captions = torch.tensor([[1, 5, 6, 2, 0], [1, 7, 2, 0, 0]])
    alphas = torch.tensor(
        [
            [[0.5, 0.5], [1.0, 0.0], [0.0, 1.0], [0.3, 0.7]],  # sums over the 3 real steps: [1.5, 1.5]
            [[0.2, 0.8], [0.6, 0.4], [0.9, 0.1], [0.9, 0.1]],  # over 2 steps: [0.8, 1.2]
        ]
    )
    out = {"logits": torch.zeros(2, 4, len(DIGIT_VOCAB)), "alphas": alphas}
    terms = task.losses(out, captions)
    p0, p1 = 0.5**2 + 0.5**2, 0.2**2 + 0.2**2  # 0.5 and 0.08
    eq14 = ((3 * math.log(14) + 0.7 * p0) + (2 * math.log(14) + 0.7 * p1)) / 2  # batch mean of eq. 14
    assert terms["ce"].item() == pytest.approx(math.log(14), rel=1e-6)  # per word, as val/loss
    assert terms["doubly_stochastic"].item() == pytest.approx(0.7 * (p0 + p1) / 5, rel=1e-6)
    assert terms["loss"].item() == pytest.approx(eq14 / (5 / 2), rel=1e-6)
    assert terms["loss_per_caption"].item() == pytest.approx(eq14, rel=1e-6)
    # not the per-word CE + λ · mean penalty, which weights the penalty 2.5 times more here
    assert terms["loss"].item() != pytest.approx(math.log(14) + 0.7 * (p0 + p1) / 2, rel=1e-3)
    net = tiny_model().float()
    real = net(torch.rand(2, 1, 8, 32), captions)
    real_terms = make_task(net, alpha_c=1.0).losses(real, captions)
    mask = captions[:, 1:] != 0
    nll = torch.nn.functional.cross_entropy(real["logits"][mask], captions[:, 1:][mask], reduction="sum")
    penalty = ((1 - (real["alphas"] * mask[..., None]).sum(1)) ** 2).sum()
    assert real_terms["loss_per_caption"].item() == pytest.approx(((nll + penalty) / 2).item(), rel=1e-5)
    # loss_norm=caption optimises eq. 14's batch mean itself (the recipes'): the loss and its gradient are
    # W / B = 5 / 2 times the per-word objective's, the logged per-word CE unchanged
    per_caption = make_task(tiny_model().float(), alpha_c=0.7, loss_norm="caption").losses(out, captions)
    assert per_caption["loss"].item() == pytest.approx(eq14, rel=1e-6)
    assert per_caption["ce"].item() == pytest.approx(math.log(14), rel=1e-6)
    with pytest.raises(ConfigError, match="loss_norm='sentence'"):
        make_task(tiny_model().float(), loss_norm="sentence")


def test_hard_attention_reinforce_terms_and_moving_average_baseline():
    net = tiny_model(mixer="hard").float().train()
    task = make_task(net, alpha_c=0.0, reinforce_weight=1.0, entropy_weight=0.1, baseline_decay=0.9).train()
    captions = torch.tensor([[1, 5, 6, 2], [1, 7, 8, 2], [1, 4, 2, 0]])
    use_expected = torch.tensor([False, True, False])
    out = net(torch.rand(3, 1, 8, 32), captions, use_expected)
    task.baseline.fill_(-3.0)
    terms = task.losses(out, captions, use_expected)
    mask = (captions[:, 1:] != 0).float()
    ce = (
        torch.nn.functional.cross_entropy(out["logits"].transpose(1, 2), captions[:, 1:], reduction="none")
        * mask
    )
    reward = -ce.sum(1)
    n_words = mask.sum()
    expected_reinforce = -(((reward + 3.0) * (out["log_probs"] * mask).sum(1))[~use_expected]).sum() / n_words
    assert terms["reinforce"].item() == pytest.approx(expected_reinforce.item(), rel=1e-5)
    assert terms["entropy"].item() == pytest.approx((-0.1 * (out["entropies"] * mask).sum() / n_words).item())
    assert task.baseline.item() == pytest.approx(0.9 * -3.0 + 0.1 * reward.mean().item(), rel=1e-5)
    terms["loss"].backward()  # the location log-probabilities carry gradient to the attention MLP
    assert net.attention.score.weight.grad.abs().sum() > 0
    # the doubly stochastic term of hard attention has its own lambda (alpha_c applies to soft attention)
    assert "doubly_stochastic" not in make_task(net, alpha_c=1.0).losses(out, captions, use_expected)
    with_reg = make_task(net, alpha_c=0.0, alpha_c_hard=0.5).losses(out, captions, use_expected)
    penalty = doubly_stochastic_penalty(out["alphas"], captions[:, 1:] != 0).sum() / n_words  # eq. 14
    assert with_reg["doubly_stochastic"].item() == pytest.approx(0.5 * penalty.item(), rel=1e-5)


# --------------------------------------------------------------------------------------------- beam search
@pytest.mark.parametrize("mixer", ["soft", "focal_modulation"])
def test_batched_beam_search_returns_the_per_image_best_captions(mixer):
    net = tiny_model(mixer=mixer)
    images = torch.rand(5, 1, 8, 32, dtype=torch.float64)
    for beam in (1, 3):
        batched = net.beam_search(images, beam_size=beam, max_len=6, length_norm=0.7)
        for i in range(len(images)):
            single = net.beam_search(images[i : i + 1], beam_size=beam, max_len=6, length_norm=0.7)
            n = int(single["lengths"][0])
            assert batched["tokens"][i, :n].tolist() == single["tokens"][0, :n].tolist()
            assert batched["scores"][i].item() == pytest.approx(single["scores"][0].item(), abs=1e-9)
            assert torch.allclose(batched["alphas"][i, :n], single["alphas"][0, :n], atol=1e-9)


def test_images_with_a_final_answer_leave_the_batch_with_unchanged_results(monkeypatch):
    """Captions of different lengths in one batch: an image whose answer is final (its best finished beam
    outscores every open one) stops being decoded (fewer rows per step), and every image still gets exactly
    its one-image-at-a-time result and the result of the search run to max_len without leaving."""
    net = tiny_model()
    with torch.no_grad():
        net.out.bias[net.end_id] = 0.16  # <end> likely for some images, not for others (fixed seeds)
    g = torch.Generator().manual_seed(0)
    scale = torch.logspace(-1, 1.3, 8, dtype=torch.float64)[:, None, None, None]
    images = torch.randn(8, 1, 8, 32, dtype=torch.float64, generator=g) * scale
    rows_per_step = []
    step = net.step
    monkeypatch.setattr(
        net, "step", lambda words, *a, **kw: rows_per_step.append(len(words)) or step(words, *a, **kw)
    )
    batched = net.beam_search(images, beam_size=3, max_len=8, length_norm=0.0)
    assert len(set(batched["lengths"].tolist())) > 1  # the batch mixes caption lengths
    assert rows_per_step[0] == 8 * 3 and rows_per_step[-1] < rows_per_step[0]  # finished images left
    assert batched["tokens"].shape[1] == len(rows_per_step)
    # the search that keeps every image to the end: length_norm -> 0+ ranks alike but never leaves early
    rows_per_step.clear()
    full = net.beam_search(images, beam_size=3, max_len=8, length_norm=1e-12)
    assert rows_per_step == [8 * 3] * 8
    assert torch.equal(batched["lengths"], full["lengths"])
    assert torch.allclose(batched["scores"], full["scores"], atol=1e-9)
    for i, n in enumerate(full["lengths"].tolist()):
        assert batched["tokens"][i, :n].tolist() == full["tokens"][i, :n].tolist()
    for i in range(len(images)):
        single = net.beam_search(images[i : i + 1], beam_size=3, max_len=8, length_norm=0.0)
        t = single["tokens"].shape[1]
        assert batched["tokens"][i, :t].tolist() == single["tokens"][0].tolist()
        assert (batched["tokens"][i, t:] == net.pad_id).all()
        assert batched["lengths"][i] == single["lengths"][0]
        assert batched["scores"][i].item() == pytest.approx(single["scores"][0].item(), abs=1e-9)
        n = int(single["lengths"][0])
        assert torch.allclose(batched["alphas"][i, :n], single["alphas"][0, :n], atol=1e-9)


@torch.no_grad()
def sequence_logprob(net, image, words) -> float:
    captions = torch.tensor([[net.start_id, *words]])
    logits = net(image, captions)["logits"].log_softmax(-1)[0]
    return float(logits.gather(1, captions[:, 1:].T).sum())


@pytest.mark.parametrize("mixer", ["soft", "focal_modulation"])
def test_greedy_is_beam_one_and_wide_beam_finds_the_exhaustive_best_caption(mixer):
    vocab = SPECIALS + ["cat", "dog"]
    net = tiny_model(vocab, mixer=mixer, seed=3)
    image = torch.rand(1, 1, 8, 32, dtype=torch.float64)
    # greedy by hand
    words = []
    for _ in range(4):
        logits = net(image, torch.tensor([[net.start_id, *words, 0]]))["logits"][0, len(words)]
        logits[[net.pad_id, net.start_id]] = float("-inf")  # never generated
        words.append(int(logits.argmax()))
        if words[-1] == net.end_id:
            break
    greedy = net.beam_search(image, beam_size=1, max_len=4)
    assert greedy["tokens"][0, : len(words)].tolist() == words
    # exhaustive: every caption of up to 3 words then <end>; words are <unk>, cat, dog (never <pad>, <start>)
    ids = [net.unk_id, 4, 5]
    best = max(
        (sequence_logprob(net, image, [*c, net.end_id]), [*c, net.end_id])
        for n in range(0, 4)
        for c in itertools.product(ids, repeat=n)
    )
    beam = net.beam_search(image, beam_size=len(vocab) ** 3, max_len=4)
    n = int(beam["lengths"][0])
    assert beam["tokens"][0, :n].tolist() == best[1]
    assert beam["scores"][0].item() == pytest.approx(best[0], abs=1e-9)


def test_beam_search_without_any_end_returns_max_len_words():
    net = tiny_model()
    with torch.no_grad():
        net.out.bias[net.end_id] = -1e4  # <end> is never chosen
    out = net.beam_search(
        torch.rand(3, 1, 8, 32, dtype=torch.float64), beam_size=3, max_len=5, length_norm=1.0
    )
    assert out["lengths"].tolist() == [5, 5, 5]
    assert (out["tokens"] != net.end_id).all()
    assert all(len(c) == 5 for c in net.decode(out["tokens"]))


# --------------------------------------------------------------------------------------------- training
def train_digit_captions(tmp_path, attention: str) -> dict:
    """~150 optimiser steps on digit_captions (the test canvases decoded greedily)."""
    from conftest import compose_cfg, run_cfg

    cfg = compose_cfg(
        [
            "model=show_attend_tell",
            "data=digit_captions",
            f"model.mixer={attention}",
            "seed=0",
            "trainer.max_epochs=4",
            "data.train_size=2400",
            "data.val_size=100",
            "data.test_size=300",
            "model.task.beam_size=1",
        ],
        tmp_path / attention,
    )
    return run_cfg(cfg)


@pytest.mark.slow
def test_no_attention_is_measurably_worse_than_soft_attention(tmp_path):
    soft = train_digit_captions(tmp_path, "soft")
    none = train_digit_captions(tmp_path, "none")
    assert soft["status"] == "ok" and none["status"] == "ok"
    assert soft["test/loss"] < 0.8 * none["test/loss"]
    assert soft["test/bleu4"] > none["test/bleu4"] + 0.1
    assert soft["test/attn_grounding"] > 0.5


# ----------------------------------------------------------------------------------------------- encoders
def test_torchvision_trunk_loads_local_weights_and_stays_frozen(tmp_path):
    import torchvision

    from attnbench.errors import ConfigError

    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None)
    torch.save({"state_dict": reference.state_dict()}, tmp_path / "r18.pth")
    net = ShowAttendTell(
        DIGIT_VOCAB,
        encoder="resnet18",
        encoder_weights=str(tmp_path / "r18.pth"),
        encoder_grid=2,
        embed_dim=8,
        hidden_dim=8,
        attn_dim=8,
    ).train()
    assert torch.equal(net.encoder[0].weight, reference.conv1.weight)
    assert not net.encoder.training and not any(p.requires_grad for p in net.encoder.parameters())
    images = torch.rand(2, 3, 64, 64)
    feats, grid = net.encode(images)
    assert grid == (2, 2) and feats.shape == (2, 4, 512)
    reference.eval()
    trunk = torch.nn.Sequential(*list(reference.children())[:-2])
    expected = torch.nn.functional.adaptive_avg_pool2d(trunk(images), 2).flatten(2).transpose(1, 2)
    assert torch.allclose(feats, expected, atol=1e-5)
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ConfigError, match="bad.pth"):
        ShowAttendTell(DIGIT_VOCAB, encoder="resnet18", encoder_weights=str(tmp_path / "bad.pth"))


def test_vgg19_trunk_is_conv5_4_before_the_last_pool_a_14x14x512_grid_at_224_px(tmp_path):
    """The paper's annotation vectors: VGG-19's conv5_4 (+ ReLU), before the 5th max-pool, at 224 x 224:
    196 vectors of 512, taken as they are (no adaptive pooling). Weights from a local state dict of a
    randomly initialised VGG-19 (its convolutional part; the classifier head may be absent)."""
    import torchvision

    torch.manual_seed(0)
    reference = torchvision.models.vgg19(weights=None).eval()
    state = {k: v for k, v in reference.state_dict().items() if k.startswith("features.")}
    torch.save(state, tmp_path / "vgg19.pth")
    net = ShowAttendTell(
        DIGIT_VOCAB, encoder="vgg19", encoder_weights=str(tmp_path / "vgg19.pth"), embed_dim=8, hidden_dim=8
    )
    assert isinstance(net.pool, torch.nn.Identity) and net.feat_dim == 512
    layers = list(net.encoder)
    convs = [m for m in layers if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 16 and sum(isinstance(m, torch.nn.MaxPool2d) for m in layers) == 4
    assert isinstance(layers[-1], torch.nn.ReLU) and layers[-2] is convs[-1]  # ends at conv5_4 + ReLU
    assert isinstance(reference.features[len(layers)], torch.nn.MaxPool2d)  # the pool that is left out
    images = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        feats, grid = net.encode(images)
        expected = reference.features[: len(layers)](images)
    assert grid == (14, 14) and feats.shape == (1, 196, 512)
    assert torch.allclose(feats, expected.flatten(2).transpose(1, 2), atol=1e-5)


def test_optimizer_choice_builds_rmsprop_and_adam_with_their_arguments():
    from types import SimpleNamespace

    from attnbench.errors import ConfigError

    for name, kwargs, cls in (
        ("rmsprop", {"alpha": 0.95, "momentum": 0.9, "centered": True, "eps": 1e-2}, torch.optim.RMSprop),
        ("adam", None, torch.optim.Adam),
    ):
        task = make_task(tiny_model().float(), optimizer=name, optimizer_kwargs=kwargs, lr=1e-4,
                         warmup_epochs=0, min_lr_ratio=1.0)  # fmt: skip
        task._trainer = SimpleNamespace(estimated_stepping_batches=10, max_epochs=2)
        built = task.configure_optimizers()
        opt = built["optimizer"]
        assert type(opt) is cls and opt.param_groups[0]["lr"] == pytest.approx(1e-4)
        for key, value in (kwargs or {}).items():
            assert opt.param_groups[0][key] == value
        sched = built["lr_scheduler"]["scheduler"]
        for _ in range(5):
            opt.step()
            sched.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(1e-4)  # constant: no warmup, no decay
    with pytest.raises(ConfigError, match="model.task.optimizer='sgd'"):
        make_task(tiny_model().float(), optimizer="sgd")


# ------------------------------------------------------------------------------------------- test outputs
QUICK = [
    "model=show_attend_tell",
    "data=digit_captions",
    "seed=0",
    "trainer.max_epochs=1",
    "data.train_size=64",
    "data.val_size=16",
    "data.test_size=21",
    "model.hidden_dim=32",
    "model.embed_dim=16",
    "model.attn_dim=16",
    "model.task.beam_size=2",
]


def quick_captioning_run(folder, *extra) -> dict:
    from conftest import compose_cfg, run_cfg

    return run_cfg(compose_cfg([*QUICK, *extra], folder))


def image_dependent_test_captions(monkeypatch) -> None:
    """Make the test captions of a one-epoch model informative: each image's caption is a prefix of its own
    first reference (of a length that varies with the image), so BLEU/METEOR/CIDEr are far from 0 and a
    caption filed under another image's id would be caught."""
    original = CaptioningTask._evaluate

    def evaluate(self, batch, split):
        self._test_refs = batch[1]["refs"] if split == "test" else None
        return original(self, batch, split)

    def words(self, tokens):
        refs = getattr(self, "_test_refs", None)
        if refs is None:
            return self.net.decode(tokens)
        return [r[0][: 1 + i % len(r[0])] for i, r in enumerate(refs)]

    monkeypatch.setattr(CaptioningTask, "_evaluate", evaluate)
    monkeypatch.setattr(CaptioningTask, "words", words)


@pytest.mark.slow  # ~20 s on 2 busy cores (METEOR's Java start and 4 PTB tokeniser runs)
@pytest.mark.skipif(shutil.which("java") is None, reason="the COCO protocol needs a Java runtime")
def test_test_captions_are_written_in_coco_format_and_scored_as_pycocoevalcap_scores_them(
    tmp_path, monkeypatch
):
    pytest.importorskip("pycocoevalcap")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    image_dependent_test_captions(monkeypatch)
    metrics = quick_captioning_run(tmp_path)
    assert metrics["status"] == "ok" and metrics["test/caption_tokenizer"] == "ptb"
    assert metrics["test/beam_size"] == 2 and "test/caption_note" not in metrics
    results = json.loads((tmp_path / "test_captions.json").read_text())
    assert [r["image_id"] for r in results] == list(range(21))  # the canvases' indices, each once
    assert all(set(r) == {"image_id", "caption"} and isinstance(r["caption"], str) for r in results)
    detail = json.loads((tmp_path / "test_captions_detail.json").read_text())
    assert [d["caption"] for d in detail] == [r["caption"] for r in results]
    assert all(d["beam_size"] == 2 and d["log_prob"] <= 0 and len(d["references"]) == 1 for d in detail)
    from attnbench.data.digit_captions import DigitCaptionsDataModule

    data = DigitCaptionsDataModule(image_size=8, test_size=21)
    data.setup("test")
    assert detail[5]["references"] == [" ".join(data.test_set[5][1]["refs"][0])]
    for r in results:  # each caption filed under its own image: a prefix of that image's reference
        reference = " ".join(data.test_set[r["image_id"]][1]["refs"][0])
        assert reference.startswith(r["caption"]) and r["caption"], r
    assert len({r["caption"] for r in results}) > 5 and metrics["test/bleu1"] > 0.3
    # the COCO evaluation, run by pycocoevalcap itself on the files the run wrote
    tok = PTBTokenizer()
    gts = tok.tokenize({d["image_id"]: [{"caption": c} for c in d["references"]] for d in detail})
    res = tok.tokenize({r["image_id"]: [{"caption": r["caption"]}] for r in results})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    expected = {f"test/bleu{n + 1}": b for n, b in enumerate(bleu)}
    import attnbench.metrics.coco_caption as coco

    meteor = coco._meteor or Meteor()  # the run's METEOR process (one Java start), else a new one
    expected["test/meteor"] = meteor.compute_score(gts, res)[0]
    expected["test/rouge_l"] = Rouge().compute_score(gts, res)[0]
    expected["test/cider"] = Cider().compute_score(gts, res)[0]
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(float(value), rel=1e-6, abs=1e-7), key  # logged as float32


def test_without_java_the_run_reports_bleu_rouge_cider_and_records_the_whitespace_protocol(
    tmp_path, monkeypatch, caplog
):
    import attnbench.metrics.coco_caption as coco

    monkeypatch.setattr(coco.shutil, "which", lambda name: None)
    monkeypatch.setattr(coco, "_warned", set())
    image_dependent_test_captions(monkeypatch)
    with caplog.at_level("WARNING", logger="attnbench"):
        metrics = quick_captioning_run(tmp_path)
    assert metrics["status"] == "ok" and metrics["test/caption_tokenizer"] == "whitespace"
    assert "no Java" in metrics["test/caption_note"] and caplog.text.count("no Java (") == 1
    assert "test/meteor" not in metrics
    assert {f"test/bleu{n}" for n in range(1, 5)} | {"test/rouge_l", "test/cider"} <= set(metrics)
    recorded = json.loads((tmp_path / "metrics.json").read_text())
    assert recorded["test/caption_tokenizer"] == "whitespace"
    results = json.loads((tmp_path / "test_captions.json").read_text())
    hyps = [r["caption"].split() for r in results]
    detail = json.loads((tmp_path / "test_captions_detail.json").read_text())
    refs = [[c.split() for c in d["references"]] for d in detail]
    bleu = CorpusBLEU()
    bleu.update(hyps, refs)
    for n in range(4):
        assert metrics[f"test/bleu{n + 1}"] == pytest.approx(bleu.compute()[n].item(), rel=1e-6, abs=1e-7)
    assert metrics["test/bleu1"] > 0.3 and metrics["test/cider"] > 0.1  # informative captions


def test_figures_show_each_generated_word_with_its_attention_map():
    from attnbench.callbacks.visualisation import _as_array

    task = make_task(tiny_model().float(), n_figures=2, beam_size=2, max_len=3).eval()
    x = torch.rand(3, 1, 8, 32)
    refs = [[["one", "two"]], [["three", "four"]], [["five"]]]
    figures = task.figures((x, {"refs": refs}))
    image = _as_array(figures["captions"])
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype.name == "uint8"
    assert image.shape[1] > 2 * image.shape[0]  # one wide panel per word next to the image


def test_beam_search_never_drops_a_finished_caption_that_outscores_its_answer():
    """A hand-built bigram table (p(next | previous word)), beam 2. Step 2 keeps "a x" (-0.02) and the
    finished "c <end>" (-4.6); at step 3 both continuations of "a x" (-0.71 each) outscore "c <end>", then
    they fall apart over 20 equally likely words (-3 per step) and never end. The answer must be "c <end>"."""
    words = ["a", "c", "x", "y"] + [f"w{i}" for i in range(20)]
    vocab = SPECIALS + words
    net = tiny_model(vocab)
    ids = {w: i for i, w in enumerate(vocab)}
    table = torch.full((len(vocab), len(vocab)), 1e-9, dtype=torch.float64)

    def row(prev, probs):
        for w, p in probs.items():
            table[ids[prev] if prev in ids else prev, ids[w] if w in ids else w] = p

    row(net.start_id, {"a": 0.99, "c": 0.01})
    row("a", {"x": 0.99, "y": 0.005})
    row("c", {net.end_id: 0.99})
    row("x", {"y": 0.5, "a": 0.5})
    for prev in ["y", *words[4:]]:
        row(prev, {w: 1 / 20 for w in words[4:]})
    log_table = (table / table.sum(1, keepdim=True)).log()

    def bigram_step(prev, state, feats, proj, mode, *args, **kw):
        return log_table[prev], state, feats.new_zeros(len(prev), feats.shape[1]), {}

    net.step = bigram_step
    out = net.beam_search(torch.rand(1, 1, 8, 32, dtype=torch.float64), beam_size=2, max_len=5)
    assert net.decode(out["tokens"])[0] == ["c"] and int(out["lengths"][0]) == 2
    expected = log_table[net.start_id, ids["c"]] + log_table[ids["c"], net.end_id]
    assert out["scores"][0].item() == pytest.approx(expected.item())
