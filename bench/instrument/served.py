"""The record of what a serve recipe started, in the format the instrument owns.

A serve recipe leaves `.run/serve-<port>.json` (written by bench.serve.serverinfo) just before
it execs the engine; `bench run` reads it to put the engine, label, GPU count and the exact
serve command in manifest["server"]. The instrument owns the format, so it reads it without
importing the serve wing:
    engine, label, version, command (one shell line), model, gpus, started (UTC ISO time),
    pid (the server process: a record whose process is gone is ignored).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from bench import paths


def path(port: int) -> Path:
    return paths.RUN_DIR / f"serve-{int(port)}.json"


def write(
    *,
    port: int,
    engine: str,
    label: str,
    version: str | None,
    model: str | None,
    gpus: int | None,
    command: str,
    pid: int | None = None,
) -> Path:
    """Record a started server. `pid` is the server's process: read() forgets the record once it is gone."""
    paths.RUN_DIR.mkdir(parents=True, exist_ok=True)
    info = {
        "engine": engine,
        "label": label,
        "version": version,
        "command": command,
        "model": model,
        "gpus": gpus,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if pid is not None:
        info["pid"] = pid
    out = path(port)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    tmp.replace(out)  # a reader never sees half a file
    return out


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists (owned by anyone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def read(port: int) -> dict | None:
    """The record for `port`, or None when there is none, it is unreadable, or its server has exited."""
    try:
        info = json.loads(path(port).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict):
        return None
    # A record whose server process is gone describes some earlier server, not the one on the port now.
    if isinstance(info.get("pid"), int) and not process_alive(info["pid"]):
        return None
    return info
