"""``python -m attnbench.eval ckpt_path=FILE [overrides]``: evaluate a checkpoint into ``outputs/eval/...``.

The entry point of lightning-hydra-template's ``eval.py``: ``train=false``, test only, ``ckpt_path``
required. A checkpoint inside a run folder (``<run>/checkpoints/*.ckpt``) is evaluated with that run's saved
configuration (``<run>/.hydra/config.yaml``: model, mixer, data, ...), so the command needs nothing else; the
command line's overrides apply on top (a beam size, a test split, a logger). Its own ``metrics.json`` and
``.hydra/`` go into the eval folder; the run folder is only read. ``python -m attnbench train=false
ckpt_path=FILE`` does the same with the command line's configuration alone.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from attnbench.__main__ import config_dir, run_app


def with_saved_run_config(cfg: DictConfig) -> DictConfig:
    """``cfg`` with the configuration of the run that wrote ``cfg.ckpt_path`` underneath, if there is one."""
    from attnbench.run_folder import RECORD_DIR, command_overrides, override_keys

    saved_file = Path(str(cfg.ckpt_path)).expanduser().resolve().parent.parent / RECORD_DIR / "config.yaml"
    from attnbench.saved_config import checked_saved_config, refuse_foreign_targets

    if saved_file.is_file():
        saved = checked_saved_config(saved_file.parent.parent)  # rebuilt from our configs and compared
    else:  # a checkpoint outside its run folder: the resolved config it carries (RunRecord), if any
        from attnbench.callbacks.run_record import saved_config

        saved = saved_config(str(cfg.ckpt_path))
        if saved is None:
            return cfg
        # a file from elsewhere too: it never decides what code runs
        refuse_foreign_targets(saved, f"the configuration carried by {cfg.ckpt_path}")
    with open_dict(saved):
        saved.paths = cfg.paths
        for key in ("task_name", "train", "test", "ckpt_path", "resume"):
            saved[key] = cfg.get(key)
    from attnbench.train import saved_choices

    run_groups = saved_choices(saved_file.parent.parent)
    own = {
        f"{g}={v}" for g, v in run_groups.items()
    }  # the run's own model / data options (with_saved_groups)
    for key in override_keys([o for o in command_overrides() if o.lstrip("+~") not in own]):
        OmegaConf.update(saved, key, OmegaConf.select(cfg, key), merge=False, force_add=True)
    return saved


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="eval")
def app(cfg: DictConfig) -> float | None:
    from attnbench.errors import ConfigError

    try:
        cfg = with_saved_run_config(cfg)
    except ConfigError as err:  # a damaged or edited run record: one message, nothing written
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    return run_app(cfg)


def with_saved_groups(argv: list[str]) -> list[str]:
    """``argv`` with the ``model=`` / ``data=`` options of the run that wrote ``ckpt_path`` added (unless the
    command gives them): the command's overrides are then checked against that model's and data set's keys
    (``model.task.beam_size=5`` on a captioner), not the default FocalNet's."""
    from attnbench.train import saved_choices

    given = {a.split("=", 1)[0].lstrip("+~") for a in argv[1:] if "=" in a and not a.startswith("-")}
    ckpt = next((a.split("=", 1)[1] for a in argv[1:] if a.startswith("ckpt_path=")), None)
    if not ckpt or "," in ckpt:
        return argv
    picked = saved_choices(Path(ckpt).expanduser().resolve().parent.parent)
    extra = [
        f"{group}={picked[group]}" for group in ("model", "data") if picked.get(group) and group not in given
    ]
    return [argv[0], *extra, *argv[1:]]


def main() -> None:
    from attnbench.__main__ import exit_with_failures, multirun_flag_first

    sys.argv = multirun_flag_first(with_saved_groups(sys.argv))
    app()
    exit_with_failures()


if __name__ == "__main__":
    sys.exit(main())
