"""Show, Attend and Tell trained as arctic-captions trains it (issue 23, items 1-5): the penalty's reduction,
the REINFORCE estimator's scale, arctic's optimizers step by step, and the hard model's decoding/dropout.
Each check compares with a formula re-typed from arctic-captions' capgen.py / optimizers.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attnbench.models.show_attend_tell import ShowAttendTell
from attnbench.tasks.arctic_optim import ArcticAdam, ArcticRMSprop
from attnbench.tasks.captioning import CaptioningTask

VOCAB = ["<pad>", "<start>", "<end>", "<unk>", *[str(i) for i in range(10)]]


def tiny(mixer="soft", **kw) -> ShowAttendTell:
    torch.manual_seed(0)
    kw = {
        "in_channels": 1,
        "cnn_channels": (8, 8, 16),
        "embed_dim": 16,
        "hidden_dim": 32,
        "attn_dim": 16,
        **kw,
    }
    return ShowAttendTell(VOCAB, mixer=mixer, **kw)


def task_for(net, **kw) -> CaptioningTask:
    return CaptioningTask(net, mean=[0.0], std=[1.0], loss_norm="caption", **kw)


def fixed_alphas(t=16, b=64, n_loc=196, seed=0) -> torch.Tensor:
    """Attention weights ``[B, T, L]`` (softmax of seeded normal scores, scale 2)."""
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(2 * torch.randn(b, t, n_loc, generator=g, dtype=torch.float64), dim=-1)


# -------------------------------------------------------------------------------------------- item 1
def test_penalty_norm_eq14_and_arctic_match_their_formulas_on_fixed_weights():
    """eq. 14: Σ_L (1 − Σ_T α)², batch mean; arctic (capgen.py):
    alpha_c * ((1 - alphas.sum(0))**2).sum(0).mean() over alphas[T, B, L].
    Batch 64, 196 locations, 16 steps, λ = 1: arctic's term is B/L = 0.327 of eq. 14's."""
    alphas = fixed_alphas()
    b, t, n_loc = alphas.shape
    captions = torch.randint(4, 14, (b, t + 1), generator=torch.Generator().manual_seed(1))
    out = {"logits": torch.zeros(b, t, len(VOCAB), dtype=torch.float64), "alphas": alphas}
    a_tbl = alphas.transpose(0, 1)  # arctic's layout [T, B, L]
    arctic = float(((1.0 - a_tbl.sum(0)) ** 2).sum(0).mean())
    eq14 = float(((1.0 - a_tbl.sum(0)) ** 2).sum(1).mean())
    nll = math.log(len(VOCAB)) * t  # uniform logits: per caption
    values = {}
    for norm, ref in (("eq14", eq14), ("arctic", arctic)):
        task = task_for(tiny().double(), alpha_c=1.0, penalty_norm=norm)
        terms = task.losses(out, captions)
        penalty = float(terms["loss"]) - nll  # loss_norm=caption: the batch mean of the per-caption cost
        assert penalty == pytest.approx(ref, rel=1e-9)
        values[norm] = penalty
    assert values["arctic"] / values["eq14"] == pytest.approx(b / n_loc, rel=1e-12)
    assert (round(eq14, 2), round(arctic, 2)) == (166.65, 54.42)  # this example's reference values
    print(
        f"\ndoubly stochastic term, lambda=1, B={b}, L={n_loc}, T={t}: eq14 {eq14:.2f}, arctic {arctic:.2f}"
    )


def test_sat_recipes_use_arctics_penalty_optimizers_and_hard_attention_knobs():
    from test_caption_recipes import composed

    soft, hard, coco = (
        composed(f"experiment={n}") for n in ("sat_flickr8k_soft", "sat_flickr8k_hard", "sat_coco_soft")
    )
    assert soft.model.task.penalty_norm == "arctic" and soft.model.task.alpha_c == 1.0
    assert soft.model.task.optimizer == "arctic_rmsprop" and coco.model.task.optimizer == "arctic_adam"
    assert dict(soft.model.task.optimizer_kwargs) == {"alpha": 0.95, "momentum": 0.9, "eps": 1e-4}
    t = hard.model.task
    assert (t.reinforce_reward, t.hard_reduction, t.expected_coin, t.baseline_init) == (
        "step_mean",
        "sum",
        "batch",
        "zero",
    )
    assert hard.model.hard_eval == "expected" and hard.model.net.dropout_h is True
    for cfg in (soft, hard, coco):  # item 4: patience in updates, NLL monitored
        assert (cfg.trainer.val_check_interval, cfg.trainer.check_val_every_n_epoch) == (1000, None)
        assert cfg.trainer.min_steps == 21000 and cfg.callbacks.early_stopping.patience == 11
        assert cfg.callbacks.early_stopping.monitor == cfg.model.monitor.metric == "val/loss"


# -------------------------------------------------------------------------------------------- item 2
def hard_example(b=4, t=5):
    """A fixed hard-attention output: B = 4 captions of T = 5 words (no padding), half of them sampled."""
    g = torch.Generator().manual_seed(3)
    captions = torch.cat([torch.ones(b, 1, dtype=torch.long), torch.randint(4, 14, (b, t), generator=g)], 1)
    logits = torch.randn(b, t, len(VOCAB), generator=g, dtype=torch.float64)
    log_probs = torch.log(torch.rand(b, t, generator=g, dtype=torch.float64)).requires_grad_()
    entropies = (3 * torch.rand(b, t, generator=g, dtype=torch.float64)).requires_grad_()
    alphas = torch.full((b, t, 6), 1 / 6, dtype=torch.float64)
    use_expected = torch.arange(b) % 2 == 1
    out = {"logits": logits, "alphas": alphas, "log_probs": log_probs, "entropies": entropies}
    return out, captions, use_expected


@pytest.mark.parametrize("arctic", [False, True])
def test_reinforce_and_entropy_gradients_have_the_references_scale(arctic):
    """arctic (RL_sumCost): known_grads on α = (b − cost_b)/10 · (−α_sample/α) + λ_e (log α + 1), cost_b =
    masked_cost.mean(0) (per-step mean NLL), NLL the batch *mean*: so d loss / d log α_{b,t,s} =
    (cost_b − b)/10 for sampled images, d loss / d H_bt = −λ_e. The default (eq. 12 as written, batch mean):
    d/d log p = −λ_r (r_b − b)/B with r_b = log p(y), d/d H = −λ_e/B."""
    out, captions, use_expected = hard_example()
    knobs = dict(reinforce_reward="step_mean", hard_reduction="sum", baseline_init="zero") if arctic else {}
    task = task_for(
        tiny("hard").double(), alpha_c_hard=0.0, reinforce_weight=0.1, entropy_weight=0.002, **knobs
    ).train()
    task.baseline.fill_(-0.7 if arctic else -14.0)  # a running baseline of each reward
    base = float(task.baseline)
    terms = task.losses(out, captions, use_expected)
    terms["loss"].backward()
    b, t = captions.shape[0], captions.shape[1] - 1
    nll = F.cross_entropy(out["logits"].transpose(1, 2), captions[:, 1:], reduction="none").sum(1).detach()
    sampled = (~use_expected).double()
    if arctic:
        cost = nll / t  # masked_cost.mean(0)
        want_lp = (cost - (-base)) / 10 * sampled  # baseline of the cost = −(baseline of the reward)
        want_h = torch.full((b, t), -0.002, dtype=torch.float64)
        assert float(task.baseline) == pytest.approx(0.9 * base + 0.1 * float(-cost.mean()))
    else:
        want_lp = -0.1 * (-nll - base) * sampled / b
        want_h = torch.full((b, t), -0.002 / b, dtype=torch.float64)
    assert torch.allclose(out["log_probs"].grad, want_lp[:, None].expand(b, t), rtol=1e-10)
    assert torch.allclose(out["entropies"].grad, want_h, rtol=1e-10)
    term = float(terms["reinforce"].detach()) * t  # per word x W/B: in the optimised (per-caption) units
    print(
        f"\nREINFORCE arctic={arctic}: term {term:.4f}, sum |d loss/d log p| "
        f"{float(out['log_probs'].grad.abs().sum()):.4f}, "
        f"entropy term {float(terms['entropy'].detach()) * t:.4f}"
    )


@pytest.mark.parametrize(("b", "t"), [(4, 5), (64, 12)])
def test_arctic_scale_is_b_over_t_times_the_eq12_scale_at_equal_advantage(b, t):
    """The issue's factors: with the same advantage per step, arctic's REINFORCE gradient is B/T times the
    batch-mean whole-caption one (5.33 at B = 64, T = 12), its entropy gradient B times (64)."""
    out, captions, use_expected = hard_example(b, t)
    grads = {}
    for name, knobs, base in (
        ("ours", {}, 0.0),
        ("arctic", dict(reinforce_reward="step_mean", hard_reduction="sum"), 0.0),
    ):
        for k in ("log_probs", "entropies"):
            out[k].grad = None
        task = task_for(tiny("hard").double(), reinforce_weight=0.1, entropy_weight=0.002, **knobs).train()
        task.baseline.fill_(base)
        task.losses(out, captions, use_expected)["loss"].backward()
        grads[name] = (out["log_probs"].grad.clone(), out["entropies"].grad.clone())
    ratio = grads["arctic"][0].abs().sum() / grads["ours"][0].abs().sum()
    assert float(ratio) == pytest.approx(b / t, rel=1e-10)
    assert float(grads["arctic"][1].sum() / grads["ours"][1].sum()) == pytest.approx(b, rel=1e-10)


def test_expected_context_coin_per_batch_or_per_image():
    torch.manual_seed(0)
    per_batch = task_for(tiny("hard"), expected_coin="batch")
    per_image = task_for(tiny("hard"))
    batches = [per_batch.expected_coins(64) for _ in range(200)]
    assert all(bool(c.all()) or not bool(c.any()) for c in batches)  # one coin for the whole batch
    assert 0.35 < float(np.mean([float(c[0]) for c in batches])) < 0.65
    mixed = [per_image.expected_coins(64) for _ in range(20)]
    assert all(0 < int(c.sum()) < 64 for c in mixed)  # a coin per image
    with pytest.raises(Exception, match="expected_coin='minibatch'"):
        task_for(tiny("hard"), expected_coin="minibatch")


# -------------------------------------------------------------------------------------------- item 3
def arctic_rmsprop_numpy(p, grads, lr=1e-4, rho=0.95, mu=0.9, eps=1e-4):
    """optimizers.py rmsprop, re-typed: running averages rg, rg2;
    updir = 0.9 updir - 1e-4 g / sqrt(rg2 - rg^2 + 1e-4)."""
    rg, rg2, ud, out = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p), []
    for g in grads:
        rg = rho * rg + (1 - rho) * g
        rg2 = rho * rg2 + (1 - rho) * g**2
        ud = mu * ud - lr * g / np.sqrt(rg2 - rg**2 + eps)
        p = p + ud
        out.append(p.copy())
    return out


def arctic_adam_numpy(p, grads, lr0=2e-4, b1=0.1, b2=0.001, e=1e-8):
    """optimizers.py adam, re-typed (b1, b2 there are 1 − β): lr_t = lr0 sqrt(1 − b2^t) / (1 − b1^t)."""
    m, v, out = np.zeros_like(p), np.zeros_like(p), []
    for i, g in enumerate(grads, start=1):
        lr_t = lr0 * (np.sqrt(1.0 - b2**i) / (1.0 - b1**i))
        m = b1 * g + (1.0 - b1) * m
        v = b2 * g**2 + (1.0 - b2) * v
        p = p - lr_t * m / (np.sqrt(v) + e)
        out.append(p.copy())
    return out


@pytest.mark.parametrize("which", ["rmsprop", "adam"])
def test_arctic_optimizers_follow_optimizers_py_step_by_step(which):
    rng = np.random.default_rng(0)
    p0 = rng.normal(size=(5, 3))
    grads = [rng.normal(scale=s, size=(5, 3)) for s in np.geomspace(1.0, 1e-3, 12)]  # small ones: ε matters
    ref = (arctic_rmsprop_numpy if which == "rmsprop" else arctic_adam_numpy)(p0, grads)
    p = torch.nn.Parameter(torch.tensor(p0))
    opt = (
        ArcticRMSprop([p], lr=1e-4, alpha=0.95, momentum=0.9, eps=1e-4)
        if which == "rmsprop"
        else ArcticAdam([p])
    )
    for g, want in zip(grads, ref):
        p.grad = torch.tensor(g)
        opt.step()
        np.testing.assert_allclose(p.detach().numpy(), want, rtol=1e-12, atol=1e-15)


def test_arctic_steps_differ_from_torchs_as_the_issue_measured():
    """Adam: at step 1 arctic's step is 0.1/sqrt(0.001) · sqrt(0.999)/0.9 = 3.51 times torch's; RMSProp with
    the same constant outside the root (torch) takes larger steps where the gradient variance is small."""
    g = torch.tensor([0.3, -2.0, 0.05], dtype=torch.float64)
    steps = {}
    for name, cls, kw in (("arctic", ArcticAdam, {}), ("torch", torch.optim.Adam, {"eps": 1e-8})):
        p = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
        opt = cls([p], lr=2e-4, betas=(0.9, 0.999), **kw)
        p.grad = g.clone()
        opt.step()
        steps[name] = p.detach().abs()
    assert torch.allclose(
        steps["arctic"] / steps["torch"],
        torch.tensor(0.1 / math.sqrt(1e-3) * math.sqrt(0.999) / 0.9, dtype=torch.float64),
        rtol=1e-4,
    )
    p, q = (torch.nn.Parameter(torch.zeros(1, dtype=torch.float64)) for _ in range(2))
    ours = ArcticRMSprop([p], lr=1e-4, alpha=0.95, momentum=0.0, eps=1e-4)
    theirs = torch.optim.RMSprop([q], lr=1e-4, alpha=0.95, momentum=0.0, centered=True, eps=1e-2)
    p.grad = q.grad = torch.tensor([1e-2], dtype=torch.float64)
    ours.step()
    theirs.step()
    # n − ḡ² = 0.05e-4 − 0.0025e-4 = 4.75e-6: sqrt(4.75e-6 + 1e-4) vs sqrt(4.75e-6) + 1e-2
    ratio = float(q.detach().abs() / p.detach().abs())
    assert ratio == pytest.approx(math.sqrt(4.75e-6 + 1e-4) / (math.sqrt(4.75e-6) + 1e-2), rel=1e-6)


def test_captioning_task_builds_arctics_optimizers():
    from types import SimpleNamespace

    for name, cls, kw in (
        ("arctic_rmsprop", ArcticRMSprop, {"alpha": 0.95, "momentum": 0.9, "eps": 1e-4}),
        ("arctic_adam", ArcticAdam, {"eps": 1e-8}),
    ):
        task = task_for(
            tiny(), optimizer=name, optimizer_kwargs=kw, lr=1e-4, warmup_epochs=0, min_lr_ratio=1.0
        )
        task._trainer = SimpleNamespace(estimated_stepping_batches=10, max_epochs=2)
        opt = task.configure_optimizers()["optimizer"]
        assert type(opt) is cls and opt.param_groups[0]["lr"] == pytest.approx(1e-4)
        assert all(opt.param_groups[0][k] == v for k, v in kw.items())


# -------------------------------------------------------------------------------------------- item 5
def test_hard_models_decode_with_the_expected_context_by_default():
    assert tiny("hard").eval_mode() == "soft" and tiny("hard", hard_eval="argmax").eval_mode() == "hard"


def test_dropout_h_drops_h_on_the_output_path_as_arctic():
    """p(y_t) ∝ exp(L_o drop(tanh(E y + L_h drop(h_t) + L_z z_t))), the recurrent state untouched."""
    net = tiny("soft", dropout=0.5, dropout_h=True).double().train()
    feats = torch.randn(3, 6, net.feat_dim, dtype=torch.float64)
    state = net.init_state(feats)
    proj = net.attention.project(feats)
    y = torch.tensor([1, 5, 7])
    torch.manual_seed(11)
    logits, (h, c), alpha, info = net.step(y, state, feats, proj, "soft")
    z = info["beta"][:, None] * torch.einsum("bl,bld->bd", alpha, feats)
    h2, c2 = net.lstm(torch.cat([net.embed(y), z], -1), state)
    assert torch.allclose(h, h2) and torch.allclose(c, c2)  # no dropout inside the recurrence
    torch.manual_seed(11)
    dh = F.dropout(h2, 0.5, True)
    want = net.out(F.dropout(torch.tanh(net.embed(y) + net.out_h(dh) + net.out_z(z)), 0.5, True))
    assert torch.allclose(logits, want)
    off = tiny("soft", dropout=0.5).double().train()
    off.load_state_dict(net.state_dict())
    torch.manual_seed(11)
    plain, *_ = off.step(y, state, feats, proj, "soft")
    assert not torch.allclose(plain, logits)
