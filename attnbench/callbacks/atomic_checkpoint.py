"""Checkpoints are written to a temporary file and renamed into place, so a run killed while saving never
leaves a truncated ``last.ckpt`` behind; a full disk (ENOSPC) or any other write error removes the temporary
file, leaves the previous checkpoint intact and stops the run with one clear message."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO


class CheckpointWriteError(OSError):
    pass


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
            os.replace(tmp, path)
        except (OSError, RuntimeError) as err:
            tmp.unlink(missing_ok=True)
            full = getattr(err, "errno", None) == errno.ENOSPC or "No space left" in str(err)
            reason = "the disk is full (no space left on device)" if full else f"{type(err).__name__}: {err}"
            kept = f"the previous {path.name} is intact" if path.exists() else f"no {path.name} was written"
            raise CheckpointWriteError(
                getattr(err, "errno", None) or errno.EIO,
                f"could not write checkpoint {path}: {reason}; {kept}. Free space (or choose another "
                "hydra.run.dir) and continue with resume=true",
            ) from err
