"""Reading a W&B offline run (``run-<id>.wandb``) with wandb's own protobuf schema (``wandb.proto``).

The file is W&B's transaction log: a 7-byte header (``:W&B``, magic 0xBEE1, version) followed by LevelDB
log records in 32 KiB blocks (4-byte checksum, 2-byte length, 1-byte type: full / first / middle / last),
each record's payload one ``wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32768
HEADER = 7


def records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", "not a W&B transaction log"
    out, pos, pending = [], HEADER, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # block trailer: zero padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        payload = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        pending = payload if kind in (1, 2) else pending + payload
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            out.append(record)
            pending = b""
    return out


def config_and_summary(run_dir: Path) -> tuple[dict, dict]:
    """The run's config (top-level keys, values JSON-decoded) and its summary, from the offline run file."""
    (file,) = Path(run_dir).glob("wandb/offline-run-*/run-*.wandb")
    config, summary = {}, {}
    for r in records(file):
        kind = r.WhichOneof("record_type")
        if kind == "config":
            for item in r.config.update:
                config[item.key] = json.loads(item.value_json)
        elif kind == "summary":
            for item in r.summary.update:
                key = item.key or "/".join(item.nested_key)
                summary[key] = json.loads(item.value_json)
        elif kind == "run":
            for item in r.run.config.update:
                config[item.key] = json.loads(item.value_json)
    return config, summary
