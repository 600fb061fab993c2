"""The embedded engine end to end: real vLLM CPU build, streamed usage, clean start/stop."""

from __future__ import annotations

import os
import socket
import subprocess

import openai
import pytest

from bench.instrument.workload import load_tokenizer
from conftest import ROOT, free_port, just

TOKENIZER = load_tokenizer(str(ROOT / "recipes" / "models" / "tiny-llama"))

pytestmark = pytest.mark.slow


def client(engine) -> openai.OpenAI:
    return openai.OpenAI(base_url=engine["base_url"], api_key="none", max_retries=0)


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_stream_reports_exact_usage(cpu_engine, api):
    c = client(cpu_engine)
    common = dict(
        model="tiny-llama",
        max_tokens=23,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    if api == "chat":
        stream = c.chat.completions.create(messages=[{"role": "user", "content": " alpha beta gamma"}], **common)
    else:
        stream = c.completions.create(prompt=" alpha beta gamma", **common)
    chunks = list(stream)
    usage = chunks[-1].usage
    assert usage is not None, "no usage chunk although include_usage was asked"
    assert usage.completion_tokens == 23  # ignore_eos forces exactly max_tokens
    words = len(TOKENIZER.encode(" alpha beta gamma", add_special_tokens=False).ids)
    if api == "completions":
        assert usage.prompt_tokens == words  # the committed tokenizer, no BOS added
    else:
        assert usage.prompt_tokens > words  # the chat template adds its own tokens
    assert sum(1 for ch in chunks if ch.choices) >= 2


def test_second_start_is_refused(cpu_engine):
    r = just("cpu-serve", str(cpu_engine["port"]))
    assert r.returncode != 0
    assert "already running" in r.stderr


def test_stop_without_engine_is_one_sentence():
    r = just("cpu-stop", str(free_port()))
    assert r.returncode != 0
    assert "is not running" in r.stderr
    assert "Traceback" not in r.stderr


def test_busy_port_is_refused():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = just("cpu-serve", str(port))
    assert r.returncode != 0
    assert f"port {port}" in r.stderr and "already in use" in r.stderr
    assert "Traceback" not in r.stderr


def test_just_list_is_a_table_of_contents():
    r = just("--list")
    assert r.returncode == 0
    assert "[cpu engine]" in r.stdout
    lines = [ln.strip() for ln in r.stdout.splitlines()[1:]]
    for previous, line in zip([""] + lines, lines):
        if line and not line.startswith(("[", "#")):
            # just prints a long doc comment on the line above the recipe
            assert "#" in line or previous.startswith("#"), f"recipe without a doc comment: {line}"


def test_cpu_cores_pins_every_engine_process():
    """CPU_CORES=0: the printed command starts with taskset, and the API server, EngineCore and worker
    (which binds its own threads) all stay on core 0, leaving the other core to a client."""
    port = free_port()
    env = {**os.environ, "CPU_CORES": "0"}
    cmd = [str(ROOT / ".venv" / "bin" / "just"), "--justfile", str(ROOT / "justfile"), "cpu-serve", str(port)]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    try:
        assert "+ taskset -c 0 " in r.stderr
        pid = int((ROOT / ".run" / f"cpu-engine-{port}.pid").read_text())
        group = [p for p in os.listdir("/proc") if p.isdigit() and _pgid(int(p)) == pid]
        assert len(group) >= 3  # API server, EngineCore, worker at least
        for p in group:
            for task in os.listdir(f"/proc/{p}/task"):
                assert _cores(int(task)) in ({0}, None), f"thread {task} of process {p} may leave core 0"
    finally:
        assert just("cpu-stop", str(port)).returncode == 0


def _cores(tid: int) -> set[int] | None:
    try:
        return os.sched_getaffinity(tid)
    except ProcessLookupError:  # a thread that ended since the listing
        return None


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None
