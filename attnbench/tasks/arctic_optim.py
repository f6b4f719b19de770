"""The update rules of the Show, Attend and Tell authors' code (arctic-captions, ``optimizers.py``) as torch
optimizers, so that the ``sat_*`` recipes step as that code stepped.

Both differ from torch's optimizers of the same name in ways that change the step size:

* :class:`ArcticRMSprop` is Graves' (2013, eq. 38-41) centred RMSProp with momentum, the constant inside the
  square root: ``n ← ρ n + (1−ρ) g²``, ``ḡ ← ρ ḡ + (1−ρ) g``, ``Δ ← μ Δ − lr · g / sqrt(n − ḡ² + ε)``,
  ``θ ← θ + Δ`` (arctic: ρ = 0.95, μ = 0.9, lr = 1e-4, ε = 1e-4). ``torch.optim.RMSprop(centered=True)``
  divides by ``sqrt(n − ḡ²) + ε`` instead: the same only where the variance is far above ε.
* :class:`ArcticAdam` keeps Adam's moments ``m ← β1 m + (1−β1) g``, ``v ← β2 v + (1−β2) g²`` but its "bias
  correction" raises the *decay rates' complements* to the power t: ``lr_t = lr · sqrt(1 − (1−β2)^t) /
  (1 − (1−β1)^t)`` (1.11 at t = 1, 1.0 from t ≈ 3 on), so in effect Adam without bias correction:
  ``θ ← θ − lr_t · m / (sqrt(v) + ε)``. arctic: lr = 2e-4 (hard-coded there), β = (0.9, 0.999), ε = 1e-8.

``weight_decay`` adds ``wd · θ`` to the gradient (arctic's ``decay_c`` L2 cost, whose gradient is
``2 decay_c θ``; arctic's recipes leave it at 0). Steps are applied to every parameter with a gradient.
"""

from __future__ import annotations

import torch


class ArcticRMSprop(torch.optim.Optimizer):
    """arctic-captions' ``rmsprop``: centred, momentum, ``sqrt(n − ḡ² + eps)`` (see the module docstring)."""

    def __init__(
        self, params, lr: float = 1e-4, alpha: float = 0.95, momentum: float = 0.9, eps: float = 1e-4,
        weight_decay: float = 0.0,
    ):  # fmt: skip
        if lr <= 0 or not 0.0 <= alpha < 1.0 or not 0.0 <= momentum < 1.0 or eps <= 0 or weight_decay < 0:
            raise ValueError(
                f"ArcticRMSprop(lr={lr}, alpha={alpha}, momentum={momentum}, eps={eps}, "
                f"weight_decay={weight_decay}): expected lr, eps > 0, alpha and momentum in [0, 1), "
                "weight_decay >= 0"
            )
        super().__init__(
            params, dict(lr=lr, alpha=alpha, momentum=momentum, eps=eps, weight_decay=weight_decay)
        )

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            rho, mu, lr, eps, wd = (
                group["alpha"],
                group["momentum"],
                group["lr"],
                group["eps"],
                group["weight_decay"],
            )
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad if not wd else p.grad.add(p, alpha=wd)
                state = self.state[p]
                if not state:
                    state["grad_avg"] = torch.zeros_like(p)
                    state["square_avg"] = torch.zeros_like(p)
                    state["update"] = torch.zeros_like(p)
                n, gbar, delta = state["square_avg"], state["grad_avg"], state["update"]
                n.mul_(rho).addcmul_(g, g, value=1 - rho)
                gbar.mul_(rho).add_(g, alpha=1 - rho)
                denom = (n - gbar * gbar).add_(eps).sqrt_()
                delta.mul_(mu).addcdiv_(g, denom, value=-lr)
                p.add_(delta)
        return loss


class ArcticAdam(torch.optim.Optimizer):
    """arctic-captions' ``adam``: lr_t = lr·sqrt(1 − (1−β2)^t) / (1 − (1−β1)^t) (see the module docstring)."""

    def __init__(
        self, params, lr: float = 2e-4, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):  # fmt: skip
        b1, b2 = float(betas[0]), float(betas[1])
        if lr <= 0 or not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0) or eps < 0 or weight_decay < 0:
            raise ValueError(f"ArcticAdam(lr={lr}, betas={betas}, eps={eps}, weight_decay={weight_decay})")
        super().__init__(params, dict(lr=lr, betas=(b1, b2), eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            (b1, b2), lr, eps, wd = group["betas"], group["lr"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad if not wd else p.grad.add(p, alpha=wd)
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                lr_t = lr * (1 - (1 - b2) ** t) ** 0.5 / (1 - (1 - b1) ** t)
                p.addcdiv_(m, v.sqrt().add_(eps), value=-lr_t)
        return loss
