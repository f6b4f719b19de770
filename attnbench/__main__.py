"""``python -m attnbench [hydra overrides]``: the Hydra app (train, test, write metrics.json).

Bad input (ConfigError) is printed as one message without a traceback and exits with code 2. In a multirun,
a failing job is recorded in its metrics.json and the sweep goes on; the exit code is then the number of
failed jobs. SIGTERM/SIGINT save a checkpoint, record ``status: interrupted`` and exit with 128 + the signal
number (143, 130), also stopping a sweep.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from attnbench.errors import ConfigError


def config_dir() -> str:
    """``attnbench/conf`` in an installed package, else the repository's top-level ``conf/``."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"attnbench configs not found next to {here}")


_failed_jobs: list[str] = []


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def app(cfg: DictConfig) -> float | None:
    return run_app(cfg)


def run_app(cfg: DictConfig) -> float | None:
    """Run one job; bad input exits 2, an interrupted run 128 + signal; returns the optimised metric."""
    from attnbench.callbacks.atomic_checkpoint import CheckpointWriteError
    from attnbench.callbacks.interrupt import RunInterrupted
    from attnbench.summary import print_summary
    from attnbench.train import _is_multirun, is_global_zero, run

    try:
        metrics = run(cfg)
    except RunInterrupted as err:  # recorded as "interrupted"; a sweep stops too
        saved = f"checkpoint saved to {err.saved}" if err.saved else "no new checkpoint"
        from attnbench.run_folder import resume_command

        print(f"{err}: {saved}; continue with {resume_command(cfg.paths.output_dir)}", file=sys.stderr)
        sys.exit(err.exit_code)
    except CheckpointWriteError as err:  # a full disk: recorded in metrics.json; one message, no traceback
        _report_failure(f"error: {err}", cfg)
        if not _is_multirun():
            sys.exit(1)
        return None
    except ConfigError as err:
        _report_failure(f"error: {err}", cfg)
        if not _is_multirun():
            sys.exit(2)
        return None
    except Exception as err:  # noqa: BLE001
        if not _is_multirun():
            recorded = recorded_failure(cfg, err)
            if recorded is None:  # failed before its record existed (a bug): the whole traceback
                raise
            print(
                f"error: {type(err).__name__}: {_first_line(err)}\n  recorded in {recorded}", file=sys.stderr
            )
            log_traceback_to_file(err)
            sys.exit(1)
        logging.getLogger("attnbench").exception("job failed; the sweep goes on")
        _report_failure(f"job failed: {type(err).__name__}: {err}", cfg)
        return None
    if is_global_zero():
        print_summary(metrics, cfg)
    value = metrics.get(str(cfg.get("optimized_metric")))
    return float(value) if isinstance(value, (int, float)) else None


def recorded_failure(cfg: DictConfig, err: BaseException) -> Path | None:
    """The run's ``metrics.json`` when it records this failure (``status: failed``), else None."""
    from attnbench.run_folder import saved_record

    out = Path(str(cfg.paths.get("output_dir", "")))
    record = saved_record(out)
    ours = record.get("status") == "failed" and str(record.get("error", "")).startswith(type(err).__name__)
    return out / "metrics.json" if ours else None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:500] if text else ""


def log_traceback_to_file(err: BaseException) -> None:
    """The traceback of ``err`` into the run's log file(s) (``train.log``), not the terminal."""
    import traceback

    handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    record = logging.LogRecord(
        "attnbench",
        logging.ERROR,
        __file__,
        0,
        "run failed:\n%s",
        ("".join(traceback.format_exception(err)),),
        None,
    )
    for handler in handlers:
        handler.handle(record)
    if handlers:
        print(f"  traceback in {handlers[0].baseFilename}", file=sys.stderr)


def _report_failure(message: str, cfg: DictConfig) -> None:
    print(message, file=sys.stderr)
    _failed_jobs.append(str(cfg.paths.get("output_dir", "?")))


MULTIRUN_FLAGS = ("-m", "--multirun")


def multirun_flag_first(argv: list[str]) -> list[str]:
    """``argv`` with Hydra's ``-m`` / ``--multirun`` moved before the overrides: Hydra's argument parser takes
    the overrides as one positional list, so ``a=1 -m b=2,3`` (the flag between overrides) would otherwise
    be refused with "unrecognized arguments"."""
    if not any(a in MULTIRUN_FLAGS for a in argv[1:]):
        return argv
    return [argv[0], "--multirun", *(a for a in argv[1:] if a not in MULTIRUN_FLAGS)]


def main() -> None:
    sys.argv = multirun_flag_first(sys.argv)
    refuse_unknown_keys(sys.argv[1:], "config")
    app()
    exit_with_failures()


def refuse_unknown_keys(argv: list[str], config_name: str) -> None:
    """A key the config does not have (``trainer.max_epoch=2``) exits 2 naming the nearest valid key."""
    from attnbench.overrides import check_override_keys

    overrides = [a for a in argv if not a.startswith("-") and "=" in a]
    try:
        check_override_keys(overrides, config_dir(), config_name)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def exit_with_failures() -> None:
    if _failed_jobs:
        print(f"{len(_failed_jobs)} job(s) failed: {', '.join(_failed_jobs)}", file=sys.stderr)
        sys.exit(min(len(_failed_jobs), 125))


if __name__ == "__main__":
    main()
