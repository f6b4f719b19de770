"""Image files from real-world folders: walked without following symlink loops, and an image that cannot be
decoded (zero bytes, truncated, not an image despite its extension) is skipped with a warning naming it,
never a crash in the middle of an epoch."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("attnbench")

MAX_CONSECUTIVE_BROKEN = 32


def folder_id(path: str | os.PathLike) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def walk_files(top: str | os.PathLike, outside: set[tuple[int, int]] | None = None) -> Iterator[str]:
    """Every file under ``top`` (sorted, symlinks followed), each real folder visited once: a symlink loop
    (a link to a parent folder) ends the walk of that branch instead of recursing forever. Folders in
    ``outside`` (e.g. the split root and the other classes' folders) are never entered, so a link out of a
    class folder cannot relabel another class's images."""
    seen: set[tuple[int, int]] = set(outside or ())
    for folder, dirs, files in os.walk(top, followlinks=True):
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs.sort()
        for name in sorted(files):
            yield os.path.join(folder, name)


def nonempty(paths: list[str], where: str) -> list[str]:
    """``paths`` without zero-byte files and dangling links (found at scan time, named in one warning)."""
    empty = []
    for p in paths:
        try:
            if os.path.getsize(p) == 0:
                empty.append(p)
        except OSError:  # a dangling symlink
            empty.append(p)
    if empty:
        shown = ", ".join(empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        log.warning("%s: skipping %d empty or unreadable image file(s): %s", where, len(empty), shown)
    gone = set(empty)
    return [p for p in paths if p not in gone]


def to_rgb(img):
    """A PIL image as 8-bit RGB. 16- and 32-bit integer greyscale (``I;16*``, ``I``: 16-bit PNGs) is scaled
    to 0..255 first; PIL's own ``convert`` clips those values at 255 (a 16-bit image comes out white)."""
    import numpy as np
    from PIL import Image

    if img.mode.startswith("I;16") or img.mode == "I":
        values = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        img = Image.fromarray(np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8), mode="L")
    elif img.mode == "F":  # floating-point greyscale: PIL's conversion assumes 0..255 as well
        values = np.nan_to_num(np.asarray(img, dtype=np.float64))
        img = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")
    return img.convert("RGB")  # also for RGB: a loaded copy (the file may be closed next)


class SkipsBrokenImages:
    """Mixin for a map-style data set of image files: ``load_robust(i, load, path_of)`` returns ``load(i)``,
    or, when item ``i``'s file cannot be decoded, warns once naming the file and returns the next decodable
    item (so the epoch keeps its length and never crashes)."""

    _broken: set[str]

    def load_robust(self, i: int, load: Callable[[int], Any], path_of: Callable[[int], str]) -> Any:
        from PIL import Image

        if not hasattr(self, "_broken"):
            self._broken = set()
        n = len(self)  # type: ignore[arg-type]
        for step in range(min(n, MAX_CONSECUTIVE_BROKEN)):
            j = (i + step) % n
            try:
                return load(j)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
                path = str(path_of(j))
                if path not in self._broken:
                    self._broken.add(path)
                    message = f"skipping unreadable image {path} ({type(err).__name__}: {err})"
                    warnings.warn(message, stacklevel=2)
        raise RuntimeError(
            f"{MAX_CONSECUTIVE_BROKEN} consecutive images from {Path(str(path_of(i))).parent} could not be "
            "decoded; check the data set's files"
        )
