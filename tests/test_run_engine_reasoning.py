"""The CPU engine as a reasoning model: records split reasoning from answer as the engine labels it.

The engine runs vLLM's DeepSeek-R1 reasoning parser on the tiny model, whose tokenizer has
`<think>`/`</think>` and whose R1-style chat template opens the thinking in the prompt, so the
engine labels everything until `</think>` reasoning. The model's vocabulary is widened to
hold the two think tokens (the plain engine's stops before them); random weights would write
them now and then, so every request biases both away, and a request's `thinking_token_budget`
(vLLM's own) makes the engine write `</think>` after that many reasoning tokens (it forces the
token past any bias).
"""

from __future__ import annotations

import itertools
import json
import urllib.request
from pathlib import Path

import pytest

from bench.cli import main
from bench.instrument.reader import ResponseReader
from bench.instrument.records import Record, read_records
from bench.instrument.stream import StreamParser
from conftest import ROOT, free_port, just, process_group_alive

pytestmark = pytest.mark.slow

MODEL = ROOT / "recipes" / "models" / "tiny-llama"
BUDGET = 6
NO_STRAY_TAGS = {"logit_bias": {"4096": -100, "4097": -100}, "thinking_token_budget": BUDGET}


@pytest.fixture(scope="module")
def r1_engine():
    """The CPU engine with --reasoning-parser deepseek_r1 and the R1-style template, on a free port."""
    port = free_port()
    template = str(MODEL / "chat_template_think.jinja")
    flags = ["--reasoning-parser", "deepseek_r1", "--chat-template", template, "--hf-overrides.vocab_size", "4098"]
    started = just("cpu-serve", str(port), *flags)
    assert started.returncode == 0, f"cpu-serve failed:\n{started.stdout}\n{started.stderr}"
    pid = int((ROOT / ".run" / f"cpu-engine-{port}.pid").read_text())
    yield {"port": port, "base_url": f"http://127.0.0.1:{port}/v1"}
    stopped = just("cpu-stop", str(port))
    assert stopped.returncode == 0, stopped.stderr
    assert not process_group_alive(pid), "the CPU engine left a process behind"


def raw_stream(base_url: str, max_tokens: int) -> bytes:
    """One streamed chat answer's body, as the engine sent it."""
    body = {
        "model": "tiny-llama",
        "messages": [{"role": "user", "content": " alpha beta gamma"}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
        **NO_STRAY_TAGS,
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }
    req = urllib.request.Request(
        f"{base_url}/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=120) as resp:
        return resp.read()


def engine_labels(body: bytes) -> tuple[list[set], list[int], int]:
    """Per event that advanced the token count: the delta fields the engine filled with a string
    ("reasoning", "content"; both in a chunk that joins the end of one and the start of the
    other) and its tokens; and the engine's reasoning_tokens figure."""
    labels, tokens, seen, told = [], [], 0, None
    for line in body.decode().splitlines():
        if not line.startswith("data: {"):
            continue
        event = json.loads(line[6:])
        usage = event.get("usage") or {}
        told = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens", told)
        if event["choices"] and usage.get("completion_tokens", 0) > seen:
            delta = event["choices"][0]["delta"]
            labels.append({k for k in ("reasoning", "content") if isinstance(delta.get(k), str)})
            tokens.append(usage["completion_tokens"] - seen)
            seen = usage["completion_tokens"]
    return labels, tokens, told


def test_the_records_split_the_engines_bytes_where_the_engine_labels_them(r1_engine):
    body = raw_stream(r1_engine["base_url"], 12)
    labels, tokens, told = engine_labels(body)
    first_content = next(i for i, fields in enumerate(labels) if "content" in fields)
    assert first_content > 0 and all(fields == {"reasoning"} for fields in labels[:first_content]), labels
    # reasoning, then </think> (in the last reasoning chunk, or no chunk of its own), then the answer
    assert sum(tokens[:first_content]) <= BUDGET + 1 < sum(tokens[: first_content + 1]), (labels, tokens, body)
    assert told == 0  # vLLM 0.32 counts only tokens between tags in the output; the prompt opened these
    # The same bytes through the client's fast path (an event per read) and its general parser.
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    events = [e + b"\n\n" for e in body.split(b"\n\n") if e.strip()]
    frames = [b"%x\r\n%s\r\n" % (len(e), e) for e in events]
    reader, parser = ResponseReader("chat"), StreamParser("chat")
    for n, data in enumerate([head + frames[0], *frames[1:], b"0\r\n\r\n"]):
        reader.feed(data, float(n))
        parser.feed(data, float(n))
    assert reader.general is None, "vLLM's stream should stay on the fast path"
    for result in (reader.result(), parser):
        rec = Record(id=0, warmup=False, scheduled=0.0, sent=0.0)
        result.fill(rec)
        assert rec.error == "" and rec.completion_tokens == 12 and rec.chunk_tokens == tokens
        assert rec.first_reasoning == rec.chunk_times[0] and rec.first_answer == rec.chunk_times[first_content]
        assert (rec.reasoning_tokens, rec.reasoning_source) == (sum(tokens[:first_content]), "counted")


def test_bench_run_reports_ttfo_and_the_reasoning_split(r1_engine, tmp_path: Path):
    out = tmp_path / "run"
    argv = ["run", "--base-url", r1_engine["base_url"], "--tokenizer", str(MODEL), "--out", str(out), "--no-progress"]
    argv += ["--api", "chat", "--concurrency", "2", "--num-prompts", "4", "--input-len", "24", "--output-len", "16"]
    argv += ["--extra-body", json.dumps(NO_STRAY_TAGS)]
    assert main(argv) == 0
    recs = [r for r in read_records(out / "requests.jsonl") if not r.warmup]
    assert len(recs) == 4
    for r in recs:
        assert r.completion_tokens == 16 and r.reasoning_source == "counted"  # vLLM said 0
        # <=, not <: on a starved client the whole answer can arrive in one read, and chunks read
        # together share a time (CI saw it); the token check below still pins the first answer.
        assert r.first_reasoning == r.first <= r.first_answer
        # Tokens 1..BUDGET are reasoning, BUDGET + 1 is </think> (no chunk of its own), the answer
        # follows. A loaded engine joins tokens into one chunk, so the first answer chunk may hold
        # the last reasoning tokens too; the count is then the tokens of the chunks before it.
        # (Chunks read together share a time, so the first answer chunk is found by its tokens.)
        prefix = list(itertools.accumulate(r.chunk_tokens, initial=0))
        a = prefix.index(r.reasoning_tokens)
        assert r.chunk_times[a] == r.first_answer and r.reasoning_tokens <= BUDGET + 1 < prefix[a + 1]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["requests_with_reasoning"] == 4 and summary["requests_without_answer"] == 0
    reasoning = sum(r.reasoning_tokens for r in recs)
    assert summary["total_reasoning_tokens"] == reasoning and summary["total_answer_tokens"] == 4 * 16 - reasoning
    assert summary["mean_ttfo_ms"] >= summary["mean_ttft_ms"]
    assert summary["reasoning_tokens_source"] == {"counted": 4}
