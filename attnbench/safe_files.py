"""Reading files from elsewhere without ever running their code.

Checkpoints, pretrained weights and data files are often downloaded from other people, and Python's pickle
runs whatever a file tells it to. Every file the project reads goes through one of these two readers:

- ``load_torch_file(path)``: ``torch.load(weights_only=True)`` — tensors, numbers, strings and builtin
  containers only — plus, per call, exactly the extra classes a real format needs (e.g. the yacs config
  object in the official FocalNet checkpoints, admitted as a plain ``dict`` stand-in, never imported).
- ``restricted_unpickle(path, allowed)``: a ``pickle.Unpickler`` whose ``find_class`` admits only the named
  globals (CIFAR's numpy arrays), for pickles that are not torch files.

Anything else is refused with ``UnsafeFileError`` naming the file and the refused class; a file that is not
a checkpoint at all, or is truncated, raises ``UnreadableFileError``. Both are ``ConfigError``: one clear
message, exit code 2.
"""

from __future__ import annotations

import pickle
import re
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from attnbench.errors import ConfigError


class UnsafeFileError(ConfigError):
    """The file asks to create an object of a class that its format does not need (it could run code)."""


class UnreadableFileError(ConfigError):
    """The file is not what it should be: not a torch/pickle file, truncated or corrupt."""


class PlainRecord:
    """Stand-in for a config object pickled next to weights (a ``dict`` subclass such as yacs'
    ``CfgNode``): it becomes a plain ``OrderedDict`` of its items; its real class is never imported."""

    def __new__(cls, *args: Any, **kwargs: Any) -> OrderedDict:  # type: ignore[misc]
        return OrderedDict()


# classes of real formats, admitted only where a caller names the format
YACS_CONFIG = ((PlainRecord, "yacs.config.CfgNode"),)


def _refused_class(message: str) -> str | None:
    m = re.search(r"GLOBAL ([\w.]+)", message) or re.search(r"global[: ]+([\w.]+)", message, re.I)
    return m.group(1) if m else None


def load_torch_file(path: str | Path, *, allow: Iterable[tuple[type, str]] = (), what: str = "file") -> Any:
    """``torch.load(path, weights_only=True)`` with ``allow``'s ``(stand-in class, "module.Class")`` pairs
    admitted as well. ``what`` names the file's role in error messages (e.g. ``"ckpt_path"``)."""
    import torch

    path = Path(path)
    try:
        with torch.serialization.safe_globals(list(allow)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        refused = _refused_class(str(err))
        if refused is not None and all(part.isidentifier() for part in refused.split(".")):
            raise UnsafeFileError(
                f"{what}={str(path)!r} was refused: it asks to create an object of class {refused}, which "
                "this format does not need (unpickling it could run code). Only tensors, numbers, strings "
                "and containers are loaded; re-save the file's weights alone (torch.save(state_dict))."
            ) from None
        detail = str(err).split("WeightsUnpickler error:")[-1].strip().splitlines()
        raise UnreadableFileError(
            f"{what}={str(path)!r} is not a readable torch checkpoint: truncated, corrupt or another "
            f"format ({detail[0][:200] if detail else 'unpickling failed'})"
        ) from None
    except Exception as err:  # noqa: BLE001 - any other failure of a damaged file (struct, zip, index)
        raise UnreadableFileError(
            f"{what}={str(path)!r} is not a readable torch checkpoint: truncated, corrupt or another "
            f"format ({type(err).__name__}: {_first_line(err)})"
        ) from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, allowed: frozenset[str], path: Path, **kwargs):
        super().__init__(file, **kwargs)
        self.allowed, self.path = allowed, path

    def find_class(self, module: str, name: str):
        qualified = f"{module}.{name}"
        if qualified not in self.allowed:
            raise UnsafeFileError(
                f"{str(self.path)!r} was refused: it asks to create an object of class {qualified}, which "
                "this data format does not need (unpickling it could run code)"
            )
        return super().find_class(module, name)


def restricted_unpickle(path: str | Path, allowed: Iterable[str], encoding: str = "ASCII") -> Any:
    """Unpickle ``path`` admitting only the fully qualified globals in ``allowed``."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, frozenset(allowed), path, encoding=encoding).load()
    except UnsafeFileError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise UnreadableFileError(
            f"{str(path)!r} is not a readable pickle: truncated or corrupt ({type(err).__name__}: "
            f"{_first_line(err)})"
        ) from None


def read_json_file(path: str | Path, what: str = "file") -> Any:
    """``json.loads`` of a file from elsewhere: invalid, non-UTF-8 or absurdly nested JSON (which makes
    Python's parser recurse out of its stack) is one ``UnreadableFileError`` naming the file."""
    import json

    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise UnreadableFileError(
            f"{what} {str(path)!r} is nested too deeply to be a record (more than Python's recursion limit)"
        ) from None
    except UnicodeDecodeError as err:
        raise UnreadableFileError(
            f"{what} {str(path)!r} is not UTF-8 text (byte {err.start}: {err.reason}); expected JSON"
        ) from None
    except json.JSONDecodeError as err:
        raise UnreadableFileError(
            f"{what} {str(path)!r} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno} "
            f"(character {err.pos}); the file is truncated or damaged"
        ) from None
