"""``python -m attnbench.probe ckpt_path=FILE [overrides] [--baseline PATH]``: the inductive-bias probes of a
checkpoint (attnbench/probes/), written to ``probes.json`` (flat ``probe/...`` keys) and ``figures/`` in the
probe's own folder (``outputs/probe/runs/<date>_<time>`` or ``hydra.run.dir``), and to every configured
logger.

A checkpoint inside a run folder is probed with that run's saved configuration (model, mixer, data), as
``attnbench.eval`` does; the command line's overrides apply on top (``probe.num_images=512``, ``logger=csv``).
``--baseline PATH`` (= ``probe.baseline=PATH``): the probes.json of the run whose corruption errors normalise
mCE. The run folder is only read; a folder that already holds probes.json is refused.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, open_dict

from attnbench.__main__ import config_dir
from attnbench.errors import ConfigError


def probe_checkpoint(cfg: DictConfig) -> dict:
    """Probe ``cfg.ckpt_path`` with ``cfg``; returns the values written to probes.json."""
    import pytorch_lightning as pl

    from attnbench.probes.runner import run_probes, write_probes
    from attnbench.safe_files import load_torch_file
    from attnbench.train import build_loggers, build_task, instantiate, run_identity, saved_choices
    from attnbench.validate import validate_probe

    validate_probe(cfg)
    ckpt = Path(str(cfg.ckpt_path)).expanduser()
    if not ckpt.is_file():
        raise ConfigError(f"ckpt_path={str(cfg.ckpt_path)!r} is not a file; expected a checkpoint (.ckpt)")
    out = Path(str(cfg.paths.output_dir))
    if (out / "probes.json").exists():
        raise ConfigError(f"{out} already holds probes.json; probe into a new folder (hydra.run.dir=...)")
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    datamodule = instantiate(cfg.data)
    datamodule.setup("test")
    _, task = build_task(cfg, datamodule)
    state = load_torch_file(ckpt, what="checkpoint")
    task.load_state_dict(state["state_dict"])
    ident = run_identity(cfg, saved_choices(ckpt.resolve().parent.parent) or None)
    values = run_probes(task, datamodule, cfg.probe, out / "figures")
    record = {
        **{f"run/{k}": v for k, v in ident.items()},
        "probe/ckpt": str(ckpt.resolve()),
        **values,
    }
    write_probes(out, record)
    for lg in build_loggers(cfg, ident):
        lg.log_metrics(values, step=0)
        lg.finalize("success")
    return record


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="probe")
def app(cfg: DictConfig) -> None:
    from attnbench.__main__ import _report_failure
    from attnbench.eval import with_saved_run_config

    try:
        run_cfg = with_saved_run_config(cfg)
        with open_dict(run_cfg):
            run_cfg.probe = cfg.probe
            run_cfg.paths = cfg.paths
        record = probe_checkpoint(run_cfg)
    except ConfigError as err:
        _report_failure(f"error: {err}", cfg)
        sys.exit(2)
    for key, value in record.items():
        if key.startswith("probe/") and isinstance(value, float):
            print(f"{key:45s} {value:.4f}")
    print(f"probes: {Path(str(cfg.paths.output_dir)) / 'probes.json'}")


def baseline_flag(argv: list[str]) -> list[str]:
    """``--baseline PATH`` / ``--baseline=PATH`` → ``probe.baseline=PATH`` (Hydra takes only overrides)."""
    out, i = [argv[0]], 1
    while i < len(argv):
        a = argv[i]
        if a == "--baseline" and i + 1 < len(argv):
            out.append(f"probe.baseline={argv[i + 1]}")
            i += 2
            continue
        out.append(f"probe.baseline={a.split('=', 1)[1]}" if a.startswith("--baseline=") else a)
        i += 1
    return out


def main() -> None:
    from attnbench.eval import with_saved_groups

    sys.argv = with_saved_groups(baseline_flag(sys.argv))
    app()


if __name__ == "__main__":
    main()
