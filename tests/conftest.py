"""Shared fixtures: real servers on 127.0.0.1, started here and stopped by PID."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.instrument.records import Record
from bench.lab.calibration import start_server, stop_server
from bench.serve.launcher import free_port

ROOT = Path(__file__).resolve().parents[1]
JUST = str(ROOT / ".venv" / "bin" / "just")
TOKENIZER = str(ROOT / "recipes" / "models" / "tiny-llama")


def bench_command(server, out: Path, *extra: str) -> list[str]:
    """`bench run` against a calibration server, as a new process: 16-token prompts, no scraping."""
    flags = ["--tokenizer", TOKENIZER, "--out", str(out), "--no-progress", "--scrape-interval", "0"]
    return [
        sys.executable,
        "-m",
        "bench",
        "run",
        "--base-url",
        f"{server.base_url}/v1",
        *flags,
        "--input-len",
        "16",
        *extra,
    ]


def synthetic_record(i: int, sent: float, chunks: list[float]) -> Record:
    """A successful request sent at `sent` whose one-token chunks arrived at `chunks` (for rules
    tested on made-up series)."""
    n = len(chunks)
    return Record(
        id=i,
        warmup=False,
        scheduled=sent,
        sent=sent,
        first=chunks[0],
        last=chunks[-1],
        chunk_times=chunks,
        chunk_tokens=[1] * n,
        completion_tokens=n,
        status=200,
    )


def bench_process(server, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """Run bench_command to its end, capturing its output."""
    return subprocess.run(bench_command(server, out, *extra), cwd=ROOT, capture_output=True, text=True, timeout=300)


def just(*args: str, timeout: float = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a recipe from the project's justfile, capturing its output; `env`: variables to add."""
    return subprocess.run(
        [JUST, "--justfile", str(ROOT / "justfile"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env} if env else None,
    )


def process_group_alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.fixture(scope="session")
def cpu_engine():
    """The embedded CPU engine, started with `just cpu-serve` on a free port for the session."""
    port = free_port()
    started = just("cpu-serve", str(port))
    assert started.returncode == 0, f"cpu-serve failed:\n{started.stdout}\n{started.stderr}"
    pid = int((ROOT / ".run" / f"cpu-engine-{port}.pid").read_text())
    yield {"port": port, "base_url": f"http://127.0.0.1:{port}/v1", "pid": pid}
    stopped = just("cpu-stop", str(port))
    assert stopped.returncode == 0, stopped.stderr
    assert not process_group_alive(pid), "the CPU engine left a process behind"


@pytest.fixture(scope="session")
def tf_engine():
    """Transformers' server on CPU (`just tf-serve`) on a free port for the session, its first (slow) answer
    already served, so each test measures a warm engine."""
    import urllib.request

    port = free_port()
    started = just("tf-serve", str(port))
    assert started.returncode == 0, f"tf-serve failed:\n{started.stdout}\n{started.stderr}"
    pid = int((ROOT / ".run" / f"tf-engine-{port}.pid").read_text())
    base = f"http://127.0.0.1:{port}/v1"
    body = b'{"model": "local/tiny-llama", "prompt": "warm up", "max_tokens": 2}'
    head = {"content-type": "application/json"}
    with urllib.request.urlopen(urllib.request.Request(f"{base}/completions", body, head), timeout=300) as r:
        assert r.status == 200
    yield {"port": port, "base_url": base, "pid": pid}
    stopped = just("tf-stop", str(port))
    assert stopped.returncode == 0, stopped.stderr
    assert not process_group_alive(pid), "the Transformers engine left a process behind"


@pytest.fixture
def calibration(tmp_path):
    """Start calibration servers with the given settings (logs in tmp_path/server-N.jsonl); all stopped at the end."""
    servers = []

    def start(**settings):
        proc = start_server(0, log=tmp_path / f"server-{len(servers)}.jsonl", **settings)
        servers.append(proc)
        return proc

    yield start
    for proc in servers:
        stop_server(proc)


@contextlib.contextmanager
def on_core(core: int):
    """This process on one core (the calibration server has the other), as the accuracy targets assume."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
