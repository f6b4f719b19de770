"""The resume command an interrupted run prints: in a multirun it must name the job's own folder through
``hydra.sweep.*`` too, since a multirun ignores ``hydra.run.dir`` (the study's experiment configs set
``hydra.mode: MULTIRUN``, so the old hint pointed at the committed study folder)."""

from __future__ import annotations

import shlex
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

import attnbench.run_folder as run_folder

CONF = Path(__file__).resolve().parents[1] / "conf"


def test_a_single_run_resumes_by_its_run_dir(monkeypatch, tmp_path):
    monkeypatch.setattr(run_folder, "hydra_runtime", lambda: None)
    assert run_folder.resume_command(tmp_path / "run") == f"resume=true hydra.run.dir={tmp_path / 'run'}"


def test_a_sweep_job_resumes_into_its_own_folder_whatever_the_mode(monkeypatch, tmp_path):
    folder = tmp_path / "sweep" / "global_attention_s0"
    job = ["seed=0", "model.mixer=global_attention", "experiment=mixer_study_sagan",
           "hydra.sweep.dir=/elsewhere"]  # fmt: skip
    fake = OmegaConf.create({"hydra": {"mode": "MULTIRUN", "overrides": {"task": job}}})
    monkeypatch.setattr(run_folder, "hydra_runtime", lambda: fake)
    overrides = shlex.split(run_folder.resume_command(folder))
    assert overrides[:3] == job[:3] and "hydra.sweep.dir=/elsewhere" not in overrides
    # composed as the app would compose them, the study config (hydra.mode: MULTIRUN) lands in the folder,
    # and so does a plain run of the same overrides
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    assert cfg.resume is True and cfg.seed == 0 and cfg.model.mixer == "global_attention"
    sweep = Path(cfg.hydra.sweep.dir) / cfg.hydra.sweep.subdir
    assert str(cfg.hydra.mode).endswith("MULTIRUN") and sweep == folder
    assert Path(cfg.hydra.run.dir) == folder
