"""Provenance: who measured what, where, with which tool and command. Secrets redacted."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import socket
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from bench import __version__

_SECRET = re.compile(r"(sk-[A-Za-z0-9_-]{8,}|(?i:bearer)\s+\S+)")
_SECRET_FLAGS = ("key", "token", "secret", "password")


def redact(argv: list[str]) -> list[str]:
    """Drop values of flags that name a secret, and anything shaped like an API key."""
    out, hide_next = [], False
    for arg in argv:
        if hide_next:
            out.append("<redacted>")
            hide_next = False
            continue
        name, eq, _ = arg.partition("=")
        secret_flag = name.startswith("-") and any(s in name.lower() for s in _SECRET_FLAGS)
        if secret_flag and eq:
            out.append(f"{name}=<redacted>")
        else:
            out.append(_SECRET.sub("<redacted>", arg))
            hide_next = secret_flag and not eq
    return out


def git_sha() -> str | None:
    from bench.paths import ROOT as root

    if not (root / ".git").exists() or not shutil.which("git"):
        return None
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return f"{sha}{'-dirty' if dirty else ''}" if sha else None
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpus() -> list[dict]:
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = [[c.strip() for c in line.split(",")] for line in out.splitlines() if line.strip()]
    return [
        {"name": r[0], "driver": r[1], "memory_mib": int(r[2]) if r[2].isdigit() else r[2]} for r in rows if len(r) >= 3
    ]


def host() -> dict:
    return {
        "host": socket.gethostname(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def build(argv: list[str], t0: float, **sections) -> dict:
    """The manifest skeleton; `sections` (server, workload, load, ...) are merged in."""
    gpu_list = gpus()
    manifest = {
        "tool": {"name": "bench", "version": __version__, "git_sha": git_sha()},
        "command": redact(argv),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "clock": {"t0_perf_counter": t0},
        "client": host(),
        "gpus": gpu_list,
        "gpu_count": len(gpu_list) or None,
        "partial": False,
    }
    manifest.update(sections)
    return manifest


def write(path: Path, manifest: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(path)
