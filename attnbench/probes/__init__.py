"""Inductive-bias probes of classifiers (``python -m attnbench.probe``; ``probes=true`` on a run).

Each probe is a function of plain callables on image batches ``x float[B, C, H, W] in [0, 1]`` (no
Lightning, no config), so it can be checked on models whose answer is known: ``shift`` (shift consistency),
``equivariance`` (per-stage equivariance error), ``erf`` (effective receptive field), ``corruption``
(robustness), ``twin`` (bits per sub-pixel against the distance to the copied pixel, Image Transformer on
twin_digits).
``adapter`` turns a task into those callables; ``runner`` runs them all into flat ``probe/...`` keys.
"""
