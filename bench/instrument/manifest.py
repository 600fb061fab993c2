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

# Flags whose value is a secret, by exact name (engines' and ours): a substring such as "token"
# would also hide --tokenizer and --max-tokens, which a reader needs to see.
SECRET_FLAGS = {
    "--api-key",
    "--api_key",
    "--openai-api-key",
    "--hf-token",
    "--hf_token",
    "--token",
    "--auth-token",
    "--password",
    "--secret",
    "--authorization",
    "--admin-api-key",
}
_SECRET_VALUE = re.compile(r"(sk-[A-Za-z0-9_-]{8,}|(?i:bearer)\s+\S+|hf_[A-Za-z0-9]{8,})")
_URL_USER = re.compile(r"(?<=://)[^/@\s]+@")  # user:password@ in a URL
_FLAG_VALUE = re.compile(r"(?i)(?<!\S)(" + "|".join(map(re.escape, sorted(SECRET_FLAGS))) + r")(=|\s+)(\S+)")
_URL_PARAM = re.compile(r"(?i)([?&](?:api[_-]?key|key|token|access_token|auth|password|secret)=)[^&\s]+")


def redact_text(text: str) -> str:
    """A text (a message, a shell line) with secret flags' values, API keys, bearer tokens and URL
    credentials replaced by <redacted>."""
    text = _FLAG_VALUE.sub(r"\1\2<redacted>", text)
    text = _SECRET_VALUE.sub("<redacted>", text)
    text = _URL_USER.sub("<redacted>@", text)
    return _URL_PARAM.sub(r"\1<redacted>", text)


def redact(argv: list[str]) -> list[str]:
    """A command line with the values of secret-bearing flags and anything shaped like a key hidden."""
    out, hide_next = [], False
    for arg in argv:
        if hide_next:
            out.append("<redacted>")
            hide_next = False
            continue
        name, eq, _ = arg.partition("=")
        secret = name.lower() in SECRET_FLAGS
        if secret and eq:
            out.append(f"{name}=<redacted>")
        else:
            out.append(redact_text(arg))
            hide_next = secret and not eq
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
