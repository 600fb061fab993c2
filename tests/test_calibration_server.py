"""The calibration server against an independent raw-socket client: shapes, counts and timing."""

from __future__ import annotations

import http.client
import json
import socket
import statistics
import time

import pytest

from bench.lab.calibration import (
    main,
    read_log,
    send_lag_stats,
    start_server,
    stop_server,
)

TTFT_MS, ITL_MS = 30.0, 5.0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("calib") / "calib.jsonl"
    proc = start_server(0, log=log, ttft_ms=TTFT_MS, itl_ms=ITL_MS, max_model_len=4096)
    proc.log = log
    yield proc
    stop_server(proc)


def logged(server) -> dict[str, dict]:
    """The log as far as this client saw: the server writes the lines of the responses that
    ended before it reads its next request, so one GET /health makes them all present."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port)
    conn.request("GET", "/health")
    assert conn.getresponse().status == 200
    conn.close()
    return read_log(server.log)


def stream(port: int, path: str, body: dict, rid: str) -> dict:
    """POST on a raw socket; return send time, headers and each SSE event with its arrival time."""
    raw = json.dumps(body).encode()
    req = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"X-Request-Id: {rid}\r\nContent-Length: {len(raw)}\r\n\r\n"
    ).encode() + raw
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    before = time.perf_counter()
    sock.sendall(req)
    sent = time.perf_counter()
    buf, events, head = b"", [], None
    while True:
        data = sock.recv(65536)
        now = time.perf_counter()
        assert data, "server closed the stream early"
        buf += data
        if head is None and b"\r\n\r\n" in buf:
            head, buf = buf.split(b"\r\n\r\n", 1)
        # De-chunk whatever is complete: "<hex size>\r\n<data>\r\n", ended by a zero-size chunk.
        while head is not None and b"\r\n" in buf:
            size_line, rest = buf.split(b"\r\n", 1)
            size = int(size_line, 16)
            if len(rest) < size + 2:
                break
            if size == 0:
                sock.close()
                return {"before": before, "sent": sent, "head": head.decode().lower(), "events": events}
            payload, buf = rest[:size], rest[size + 2 :]
            assert payload.startswith(b"data: ") and payload.endswith(b"\n\n")
            text = payload[6:-2].decode()
            events.append((now, text if text == "[DONE]" else json.loads(text)))


def texts(events, chat: bool) -> list[tuple[float, str]]:
    """(arrival, generated text) of each event that carries text."""
    out = []
    for t, e in events:
        if isinstance(e, dict) and e["choices"]:
            c = e["choices"][0]
            s = c["delta"].get("content") if chat else c["text"]
            if s:
                out.append((t, s))
    return out


def test_streaming_completions_with_usage(server):
    r = stream(
        server.port,
        "/v1/completions",
        {
            "model": "calibration",
            "prompt": "one two three four",
            "max_tokens": 7,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        "c1",
    )
    assert "transfer-encoding: chunked" in r["head"] and "text/event-stream" in r["head"]
    assert [s for _, s in texts(r["events"], False)] == [" tok"] * 7
    assert r["events"][-1][1] == "[DONE]"
    usage = r["events"][-2][1]["usage"]
    assert usage == {"prompt_tokens": 4, "completion_tokens": 7, "total_tokens": 11}
    assert r["events"][-3][1]["choices"][0]["finish_reason"] == "length"
    entry = logged(server)["c1"]
    assert entry["tokens"] == [1] * 7 and entry["completion_tokens"] == 7
    # received is the kernel's arrival stamp, taken while this client was still in sendall()
    assert r["before"] <= entry["received"] <= entry["parsed"]
    assert entry["received"] - r["sent"] < 1e-3
    assert entry["prompt_tokens"] == 4 and len(entry["sent"]) == len(entry["due"]) == 7


def test_streaming_chat_with_usage(server):
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there you"}]
    r = stream(
        server.port,
        "/v1/chat/completions",
        {
            "model": "calibration",
            "messages": msgs,
            "max_tokens": 4,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        "ch1",
    )
    first = r["events"][0][1]["choices"][0]["delta"]
    assert first == {"role": "assistant", "content": ""}
    assert [s for _, s in texts(r["events"], True)] == [" tok"] * 4
    assert r["events"][-2][1]["usage"]["prompt_tokens"] == 5
    assert r["events"][-2][1]["usage"]["completion_tokens"] == 4


def test_multi_token_chunks_and_continuous_usage(server):
    body = {
        "prompt": [5, 6, 7],
        "max_tokens": 10,
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        "calibration": {"tokens_per_chunk": 3},
    }
    r = stream(server.port, "/v1/completions", body, "m1")
    chunks = [s.count(" tok") for _, s in texts(r["events"], False)]
    assert chunks == [3, 3, 3, 1]
    cumulative = [e["usage"]["completion_tokens"] for _, e in r["events"][:4]]
    assert cumulative == [3, 6, 9, 10]
    entry = logged(server)["m1"]
    assert entry["tokens"] == [3, 3, 3, 1] and entry["prompt_tokens"] == 3


def test_per_request_timing_override(server):
    body = {"prompt": "x", "max_tokens": 4, "stream": True, "calibration": {"ttft_ms": 60, "itl_ms": 12}}
    r = stream(server.port, "/v1/completions", body, "o1")
    e = logged(server)["o1"]
    assert e["due"][0] - e["received"] == pytest.approx(0.060, abs=1e-9)
    assert [b - a for a, b in zip(e["due"], e["due"][1:])] == pytest.approx([0.012] * 3, abs=1e-9)
    arrivals = [t for t, _ in texts(r["events"], False)]
    assert arrivals[0] - r["sent"] > 0.055  # the default would be 30 ms
    assert e["ttft_ms"] == 60 and e["itl_ms"] == 12


def test_client_measurements_agree_with_log(server):
    """At low concurrency the server keeps its fixed schedule, and a client's TTFT/ITL match the
    log within 1 ms.

    Lateness is judged on its lower quartile and agreement on medians: on a busy 2-core machine
    any process, this one or the server, can lose the CPU for a few ms now and then.
    """
    ids = [f"t{i}" for i in range(5)]
    runs = {
        rid: stream(server.port, "/v1/completions", {"prompt": "a b", "max_tokens": 20, "stream": True}, rid)
        for rid in ids
    }
    log = logged(server)
    for rid in ids:  # a fixed schedule, not accumulated sleeps
        e = log[rid]
        planned = [e["received"] + (TTFT_MS + i * ITL_MS) / 1e3 for i in range(20)]
        assert e["due"] == pytest.approx(planned, abs=1e-9)
    lags = sorted(s - d for rid in ids for d, s in zip(log[rid]["due"], log[rid]["sent"]))
    assert lags[0] >= 0 and lags[len(lags) // 4] < 0.1e-3
    ttft_err, itl_err, arrival_err = [], [], []
    for rid in ids:
        e, arrivals = log[rid], [t for t, _ in texts(runs[rid]["events"], False)]
        assert len(arrivals) == len(e["sent"]) == 20
        ttft_err.append((arrivals[0] - runs[rid]["sent"]) - (e["sent"][0] - e["received"]))
        client_itl = [b - a for a, b in zip(arrivals, arrivals[1:])]
        true_itl = [b - a for a, b in zip(e["sent"], e["sent"][1:])]
        itl_err.append(statistics.mean(client_itl) - statistics.mean(true_itl))
        arrival_err += [t - s for t, s in zip(arrivals, e["sent"])]
    assert abs(statistics.median(ttft_err)) < 1e-3
    assert abs(statistics.median(itl_err)) < 1e-3
    assert 0 < statistics.median(arrival_err) < 1e-3


def test_non_streaming_completion_and_chat(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port)
    t0 = time.perf_counter()
    conn.request("POST", "/v1/completions", json.dumps({"prompt": "a b c", "max_tokens": 5}), {"X-Request-Id": "n1"})
    resp = conn.getresponse()
    body = json.loads(resp.read())
    elapsed = time.perf_counter() - t0
    assert resp.status == 200 and body["choices"][0]["text"] == " tok" * 5
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    assert elapsed >= (TTFT_MS + 4 * ITL_MS) / 1e3
    # Same connection (keep-alive), chat this time.
    conn.request(
        "POST", "/v1/chat/completions", json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    )
    resp = conn.getresponse()
    chat = json.loads(resp.read())
    assert chat["choices"][0]["message"] == {"role": "assistant", "content": " tok tok"}
    conn.close()
    assert logged(server)["n1"]["stream"] is False


def test_models_health_version_and_errors(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port)

    def call(method, path, body=None):
        conn.request(method, path, body)
        resp = conn.getresponse()
        return resp.status, resp.read()

    status, raw = call("GET", "/v1/models")
    models = [(m["id"], m["max_model_len"]) for m in json.loads(raw)["data"]]
    assert status == 200 and models == [("calibration", 4096)]
    assert call("GET", "/health")[0] == 200
    assert "version" in json.loads(call("GET", "/version")[1])
    assert call("POST", "/v1/completions", json.dumps({"model": "other", "prompt": "a"}))[0] == 404
    assert call("POST", "/v1/completions", json.dumps({"prompt": "a", "max_tokens": 0}))[0] == 400
    assert call("POST", "/v1/completions", "{not json")[0] == 400
    status, raw = call("POST", "/v1/completions", json.dumps({"prompt": "a", "max_tokens": 5000}))
    assert status == 400 and "maximum context length is 4096" in json.loads(raw)["error"]["message"]
    assert call("GET", "/nowhere")[0] == 404
    bad_key = {"prompt": "a", "calibration": {"itl": 5}}  # a typo must not pass silently
    assert call("POST", "/v1/completions", json.dumps(bad_key))[0] == 400
    conn.close()


def test_send_lag_stats_summarise_the_log(server):
    stats = send_lag_stats(server.log)
    chunks = sum(len(e["sent"]) for e in logged(server).values())
    assert stats["chunks"] == chunks > 0
    assert 0 <= stats["p50_ms"] <= stats["p99_ms"] <= stats["max_ms"]


def test_stop_logs_unfinished_streams_and_pins_cpu(tmp_path):
    log = tmp_path / "stop.jsonl"
    proc = start_server(0, log=log, ttft_ms=1, itl_ms=1000, cpu=0)
    with open(f"/proc/{proc.pid}/status") as f:
        assert "Cpus_allowed_list:\t0\n" in f.read()
    sock = socket.create_connection(("127.0.0.1", proc.port))
    body = json.dumps({"prompt": "a", "max_tokens": 50, "stream": True}).encode()
    sock.sendall(
        b"POST /v1/completions HTTP/1.1\r\nX-Request-Id: s1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    got = b""
    while b" tok" not in got:  # the first chunk is out; the other 49 are far away
        got += sock.recv(65536)
    assert stop_server(proc) == 0
    sock.close()
    entry = read_log(log)["s1"]
    assert entry["error"] == "server stopped" and len(entry["sent"]) == 1
    assert entry["tokens"] == [1] and len(entry["due"]) == 1


def test_port_in_use_is_one_sentence_and_exit_2(tmp_path, capsys):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    rc = main(["--port", str(port), "--log", str(tmp_path / "x.jsonl"), "--loop", "asyncio"])
    holder.close()
    err = capsys.readouterr().err
    assert rc == 2 and "already in use" in err and "--port" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_every_flag_has_help():
    import argparse

    from bench.lab.calibration import add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    assert all(a.help for a in p._actions)


def test_read_log_spells_out_due_and_reads_the_older_format(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text(
        '{"id": "new", "due_first": 10.0, "due_step": 0.02, "sent": [10.001, 10.0205, 10.041]}\n'
        '{"id": "old", "due": [5.0, 5.5], "sent": [5.001, 5.502]}\n'
    )
    entries = read_log(log)
    assert entries["new"]["due"] == [10.0, 10.0 + 0.02, 10.0 + 2 * 0.02]
    assert entries["old"]["due"] == [5.0, 5.5]
    assert send_lag_stats(log)["chunks"] == 5
