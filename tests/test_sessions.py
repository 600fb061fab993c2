"""Session workloads against the calibration server (it counts a chat prompt's words, so a turn's
prompt_tokens say exactly what history it carried), the answer taken from a stream without its
reasoning, the synthetic generator, the deliberate fault, and what bad session flags say."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from bench.cli import main
from bench.instrument import answer, sessions, workload
from bench.instrument.records import Record, read_records
from bench.instrument.session_metrics import summarise
from bench.lab.calibration import start_server, stop_server

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = str(ROOT / "recipes" / "models" / "tiny-llama")
SHAREGPT = ROOT / "tests" / "data" / "sharegpt-sessions.json"


@pytest.fixture
def calib(tmp_path):
    server = start_server(0, log=tmp_path / "calib.jsonl", ttft_ms=5, itl_ms=2)
    yield f"{server.base_url}/v1"
    stop_server(server)


def run(url: str, out: Path, *flags: str) -> int:
    base = ["run", "--base-url", url, "--tokenizer", TOKENIZER, "--out", str(out), "--no-progress", "--api", "chat"]
    return main(base + list(flags))


def by_session(out: Path) -> dict[int, list[Record]]:
    convs: dict[int, list[Record]] = {}
    for r in read_records(out / "requests.jsonl"):
        convs.setdefault(r.session, []).append(r)
    return {k: sorted(v, key=lambda r: r.turn) for k, v in convs.items()}


def test_every_turn_sends_the_whole_history_with_the_servers_answers(calib, tmp_path, capsys):
    out = tmp_path / "run"
    flags = ["--dataset", "sessions", "--concurrency", "2", "--num-prompts", "5", "--turns", "3"]
    assert run(calib, out, *flags, "--input-len", "20", "--output-len", "6", "--think-time", "0.03") == 0
    convs = by_session(out)
    assert sorted(convs) == [0, 1, 2, 3, 4]
    for turns in convs.values():
        assert [r.turn for r in turns] == [0, 1, 2]
        # Turn k carries k + 1 user messages of 20 words and the k answers of 6 the server gave.
        assert [r.prompt_tokens for r in turns] == [20, 46, 72]
        for before, after in zip(turns, turns[1:]):
            assert after.scheduled - before.last == pytest.approx(0.03, abs=2e-3)  # think time after the answer
            assert after.sent >= after.scheduled
    summary = json.loads((out / "summary.json").read_text())
    assert summary["conversations"] == 5 and summary["sessions_cut_short"] == 0
    assert [t["turn"] for t in summary["per_turn"]] == [0, 1, 2]
    assert [t["completed"] for t in summary["per_turn"]] == [5, 5, 5]
    assert [t["mean_prompt_tokens"] for t in summary["per_turn"]] == [20, 46, 72]
    assert all(t["mean_ttft_ms"] >= 5 for t in summary["per_turn"])
    assert summary["theoretical_prefix_hit_rate"] == pytest.approx((20 + 46) / (20 + 46 + 72))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["workload"]["conversations"] == 5 and manifest["workload"]["turns_total"] == 15
    printed = capsys.readouterr().out  # bench run's per-turn table
    assert "5 conversations, 0 cut short; the workload repeats 47.8% of its prompt tokens" in printed
    assert [line.split()[:3] for line in printed.splitlines() if line[:2] in ("0 ", "1 ", "2 ")] == [
        ["0", "5/5", "20.00"],
        ["1", "5/5", "46.00"],
        ["2", "5/5", "72.00"],
    ]


def test_users_arriving_at_a_rate_start_their_conversations_on_schedule(calib, tmp_path):
    from bench.instrument.schedule import arrival_times

    out = tmp_path / "run"
    flags = ["--dataset", "sessions", "--rate", "20", "--num-prompts", "6", "--turns", "2", "--seed", "4"]
    assert run(calib, out, *flags, "--input-len", "10", "--output-len", "3") == 0
    firsts = [turns[0] for _, turns in sorted(by_session(out).items())]
    start = firsts[0].scheduled
    assert [r.scheduled - start for r in firsts] == pytest.approx(arrival_times(6, 20.0, 1.0, seed=4), abs=1e-6)
    # A summary rebuilt from the records (`bench summarize`) has the session keys too.
    before = json.loads((out / "summary.json").read_text())
    assert main(["summarize", str(out), "--force"]) == 0
    after = json.loads((out / "summary.json").read_text())
    assert after["per_turn"] == before["per_turn"] and after["conversations"] == 6
    assert after["theoretical_prefix_hit_rate"] == before["theoretical_prefix_hit_rate"] == pytest.approx(10 / 33)


def test_sharegpt_conversations_keep_their_human_turns(calib, tmp_path):
    out = tmp_path / "run"
    assert run(calib, out, "--dataset", "sharegpt-sessions", "--dataset-path", str(SHAREGPT), "--concurrency", "2",
               "--num-prompts", "2") == 0  # fmt: skip
    convs = by_session(out)
    # The two conversations with at least two human turns; the single-turn one and the one that
    # starts with the assistant are left out.
    assert sorted(len(t) for t in convs.values()) == [2, 3]
    for turns in convs.values():
        words = [r.prompt_tokens for r in turns]
        assert words == sorted(words) and len(set(words)) == len(words)


def test_the_answer_leaves_reasoning_out():
    def event(delta: dict) -> bytes:
        data = b"data: " + json.dumps({"choices": [{"delta": delta}]}).encode() + b"\n\n"
        return f"{len(data):x}\r\n".encode() + data + b"\r\n"

    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    done = b"data: [DONE]\n\n"
    end = f"{len(done):x}\r\n".encode() + done + b"\r\n0\r\n\r\n"
    raw = [
        head,
        event({"reasoning_content": "let me think"}),
        event({"reasoning": "still thinking"}),
        event({"content": "The answer"}),
        event({"content": " is 4."}),
        end,
    ]
    assert answer.reply(raw) == answer.Reply(True, "The answer is 4.")
    inline = [head, event({"content": "<think>hm, two and two</think>\n\n"}), event({"content": "Four."}), end]
    assert answer.reply(inline).answer == "Four."
    assert not answer.reply(raw[:-1]).ok  # no [DONE], no end of body: cut short
    assert not answer.reply(None).ok


def test_the_synthetic_generator_is_seeded_and_exact():
    tok = workload.load_tokenizer(TOKENIZER)
    count = workload.token_counter(tok)
    turns, think = sessions.Dist.parse("2:5", "--turns"), sessions.Dist.parse("exp:1.5", "--think-time")
    a = sessions.synthetic(tok, 20, turns, think, 40, 8, 0.25, seed=7)
    b = sessions.synthetic(tok, 20, turns, think, 40, 8, 0.25, seed=7)
    assert a == b and a != sessions.synthetic(tok, 20, turns, think, 40, 8, 0.25, seed=8)
    assert {c.turns for c in a} <= {2, 3, 4, 5} and len({c.turns for c in a}) > 1
    for c in a:
        assert all(30 <= count(u) <= 50 for u in c.users)
        assert c.think[0] == 0 and all(t >= 0 for t in c.think)
    firsts = [tok.encode(c.users[0], add_special_tokens=False).ids[:2] for c in a]
    assert len({tuple(f) for f in firsts}) == len(firsts)  # no two conversations share a first message start


def test_distributions():
    rng = random.Random(0)
    assert sessions.Dist.parse("3", "--turns").draw(rng) == 3
    u = [sessions.Dist.parse("1:2", "--turns").draw(rng) for _ in range(200)]
    assert 1 <= min(u) and max(u) <= 2
    e = [sessions.Dist.parse("exp:2", "--think-time").draw(rng) for _ in range(4000)]
    assert sum(e) / len(e) == pytest.approx(2, rel=0.1)


def test_the_retokenize_fault_makes_the_history_drift_every_turn():
    tok = workload.load_tokenizer(TOKENIZER)
    text = " alpha beta gamma delta"
    once = sessions.retokenized(text, tok)
    twice = sessions.retokenized(once, tok)
    assert once != text and twice != once and not twice.startswith(once)


def test_theoretical_reuse_and_a_cut_conversation():
    def rec(session, turn, prompt, ok=True):
        return Record(id=0, warmup=False, scheduled=0.0, sent=0.0, first=0.1, last=0.2, prompt_tokens=prompt,
                      completion_tokens=4, session=session, turn=turn, error="" if ok else "x")  # fmt: skip

    recs = [rec(0, 0, 10), rec(0, 1, 30), rec(0, 2, 50), rec(1, 0, 10), rec(1, 1, None, ok=False)]
    s = summarise(recs)
    assert s["theoretical_prefix_hit_rate"] == pytest.approx((10 + 30) / (10 + 30 + 50 + 10))
    assert s["conversations"] == 2 and s["sessions_cut_short"] == 1
    assert [t["requests"] for t in s["per_turn"]] == [2, 2, 1]


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--dataset", "sessions", "--concurrency", "1"], "sends chat history: give --api chat"),
        (["--dataset", "sessions", "--api", "chat", "--concurrency", "1", "--turns", "x"], "--turns 'x' is not a"),
        (["--dataset", "sessions", "--api", "chat", "--concurrency", "1", "--think-time", "3:1"], "is not a distrib"),
    ],
)
def test_bad_session_flags_say_what_to_do(capsys, flags, says):
    assert main(["run", *flags]) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err
