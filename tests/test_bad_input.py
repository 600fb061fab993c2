"""The README's table of wrong inputs, row by row: each command is run for real and must end with
the exact sentence the table gives, a non-zero exit and no traceback."""

from __future__ import annotations

import os
import re
import socket
import subprocess

import pytest

from bench.lab.calibration import start_server, stop_server
from conftest import ROOT, free_port

START, END = "<!-- bad-input:start -->", "<!-- bad-input:end -->"


def rows() -> list[tuple[str, str, str]]:
    text = (ROOT / "README.md").read_text()
    table = text[text.index(START) + len(START) : text.index(END)].strip().splitlines()[2:]
    out = []
    for line in table:
        what, command, message = (c.strip() for c in line.strip().strip("|").split(" | ", 2))
        out.append((what, command.strip("`"), message))
    return out


def test_the_table_covers_at_least_twenty_wrong_inputs():
    assert len(rows()) >= 20


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad-input")
    (tmp / "bad.jsonl").write_text("not json\n")
    (tmp / "full").mkdir()
    (tmp / "full" / "requests.jsonl").write_text("")
    (tmp / "empty").mkdir()
    (tmp / "corrupt" / "run").mkdir(parents=True)
    (tmp / "corrupt" / "run" / "summary.json").write_text("{not json")
    (tmp / "corrupt" / "run" / "manifest.json").write_text("{}")
    server = start_server(0, log=tmp / "server.jsonl", ttft_ms=1, itl_ms=1)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    yield {
        "calib": f"{server.base_url}/v1",
        "calib_root": server.base_url,
        "free": str(free_port()),
        "busy": str(busy.getsockname()[1]),
        "tmp": str(tmp),
        "tok": str(ROOT / "recipes" / "models" / "tiny-llama"),
        "run": str(tmp / "run"),
        "root": str(ROOT),
    }
    busy.close()
    stop_server(server)


def fill(text: str, places: dict) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: places.get(m[1], m[0]), text)


@pytest.mark.parametrize("what,command,message", rows(), ids=[r[0] for r in rows()])
def test_each_wrong_input_gets_its_sentence(places, what, command, message):
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}", "BENCH_RUN_DIR": places["run"]}
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "VLLM_VIA", "VLLM_VERSION", "MODEL", "PORT", "HOST"):
        env.pop(name, None)
    done = subprocess.run(
        ["bash", "-c", fill(command, places)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0, f"{what}: exit 0\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.strip().splitlines() if not line.startswith("error: recipe `")]  # just's own
    assert lines[-1] == fill(message, places)
