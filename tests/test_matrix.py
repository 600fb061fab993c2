"""`bench matrix` on this machine, against the real CPU engine: two layouts measured one after the
other and compared in one report, a third cell whose server cannot start recorded as failed with the
server log's last lines while the others go on, and a rerun that keeps finished cells; against the
calibration server (it starts in a second): Ctrl-C mid-cell, and a server that dies mid-campaign; plus
the dry run of the shipped matrices and the one-sentence errors of bad matrix files (no server needed)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cli import main
from bench.serve.launcher import RUN_DIR, port_in_use
from conftest import ROOT

SET = """
num_prompts = 3

[[scenario]]
name = "tiny"
input_len = 16
output_len = 8
concurrency = [1, 2]
"""
CELL = """
[[cell]]
label = "{label}"
recipe = "{recipe}"
args = [{args}]
stop = "{stop} {{port}}"
timeout = 600
{more}
"""
GOOD = {"vllm-cpu": '"{port}"', "vllm-cpu-seqs1": '"{port}", "--max-num-seqs", "1"'}
# A server that refuses its flag never starts: the calibration server, which says so within a second.
BAD = {"broken": '"{port}", "--no-such-flag"'}
# The calibration server as a cell: its own serve recipe, a tokenizer for its prompts.
CALIBRATION = ("calib-serve", "calib-stop", f'run_args = "--tokenizer {ROOT}/recipes/models/tiny-llama"')


def matrix_file(tmp: Path, cells: dict[str, str], recipes: dict[str, tuple] | None = None, **top: str) -> Path:
    """A matrix over the tiny set; each cell a CPU engine unless `recipes` names (serve, stop, more keys)."""
    (tmp / "tiny.toml").write_text(SET)
    head = f'scenarios = "{tmp / "tiny.toml"}"\npause = 0\nwarmup = 1\nallow_queueing = true\n'
    head += "".join(f"{k} = {v}\n" for k, v in top.items())
    path = tmp / "m.toml"
    kinds = {k: (recipes or {}).get(k, ("cpu-serve", "cpu-stop", "")) for k in cells}
    blocks = [
        CELL.format(label=k, args=v, recipe=kinds[k][0], stop=kinds[k][1], more=kinds[k][2]) for k, v in cells.items()
    ]
    path.write_text(head + "".join(blocks))
    return path


def state(results: Path, cell: str) -> dict:
    return json.loads((results / "m" / "cells" / f"{cell}.tiny" / "state.json").read_text())


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """The three-cell matrix, run once (slow: two engine starts; the third server fails at once)."""
    tmp = tmp_path_factory.mktemp("matrix")
    path, results = matrix_file(tmp, {**GOOD, **BAD}, {"broken": CALIBRATION}), tmp / "results"
    started = time.monotonic()
    rc = main(["matrix", str(path), "--results", str(results)])
    print(f"three-cell matrix: {time.monotonic() - started:.0f} s")
    return {"rc": rc, "file": path, "results": results}


@pytest.mark.slow
def test_every_good_cell_is_measured_and_the_report_compares_them(ran):
    results = ran["results"]
    assert ran["rc"] == 1, "a failed cell makes the matrix exit 1"
    for label in GOOD:
        st = state(results, label)
        assert st["status"] == "done", st
        for point in ("c1", "c2"):
            summary = json.loads((results / "m" / label / "tiny" / point / "summary.json").read_text())
            assert summary["completed"] == 3
        port = st["port"]
        assert not port_in_use("127.0.0.1", port), f"the server of {label} still holds port {port}"
        assert not (RUN_DIR / f"cpu-engine-{port}.pid").exists()
        assert (results / "m" / "cells" / f"{label}.tiny" / f"cpu-engine-{port}.log").stat().st_size > 0
    report = (results / "m" / "report.md").read_text()
    assert "vllm-cpu-seqs1" in report and "vllm-cpu " in report.replace("|", " ")
    assert list((results / "m").rglob("*throughput-latency.png")), "the plots were not drawn"


@pytest.mark.slow
def test_a_server_that_cannot_start_fails_its_cell_with_the_log_tail(ran):
    st = state(ran["results"], "broken")
    assert st["status"] == "failed"
    assert st["reason"].startswith("calib-serve exited with status 2 before its server was up: ")
    assert st["reason"].endswith("unrecognized arguments: --no-such-flag"), st["reason"]
    assert any("no-such-flag" in line for line in st["log_tail"]), st["log_tail"]
    assert not (ran["results"] / "m" / "broken").exists(), "a cell that never started measured something"


@pytest.mark.slow
def test_a_rerun_keeps_finished_cells_and_skips_failed_ones_when_asked(ran, capsys):
    results = ran["results"]
    before = {p: p.stat().st_mtime_ns for p in (results / "m").rglob("summary.json")}
    rc = main(["matrix", str(ran["file"]), "--results", str(results), "--skip-failed", "--no-report"])
    out = capsys.readouterr().out
    assert rc == 1, "a failed cell left as it is still makes the exit status 1"
    assert "vllm-cpu.tiny: finished earlier" in out and "vllm-cpu-seqs1.tiny: finished earlier" in out
    assert "broken.tiny: failed earlier, left as it is (--skip-failed)" in out
    assert {p: p.stat().st_mtime_ns for p in (results / "m").rglob("summary.json")} == before

    # Without --skip-failed the failed cell is tried again (and fails again); the others stay kept.
    first = state(results, "broken")["started"]
    assert main(["matrix", str(ran["file"]), "--results", str(results), "--no-report"]) == 1
    assert state(results, "broken")["status"] == "failed"
    assert state(results, "broken")["started"] >= first
    assert {p: p.stat().st_mtime_ns for p in (results / "m").rglob("summary.json")} == before


@pytest.mark.slow
def test_status_lists_every_cell(ran, capsys):
    assert main(["matrix", str(ran["file"]), "--results", str(ran["results"]), "--status"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if ".tiny" in line}
    assert "done" in rows["vllm-cpu.tiny"] and "2/2" in rows["vllm-cpu.tiny"]
    assert "failed" in rows["broken.tiny"] and "0/2" in rows["broken.tiny"]


def test_the_dry_run_shows_commands_points_and_fit_and_starts_nothing(tmp_path, capsys):
    path = matrix_file(tmp_path, GOOD)
    assert main(["matrix", str(path), "--results", str(tmp_path / "r"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "serve: just cpu-serve PORT --max-num-seqs 1 " in out
    assert "vllm.entrypoints.openai.api_server" in out and "--max-num-seqs 1" in out
    assert "points: 2: tiny c1 (3), tiny c2 (3)" in out
    assert "fit check: 1 fits, 1 queues at the server" in out  # c2 against one running at a time
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("name", ["demo", "r1-two-node"])
def test_the_shipped_matrices_pass_their_dry_run(name, tmp_path, capsys):
    assert main(["matrix", name, "--results", str(tmp_path), "--dry-run", "--executor", "slurm"]) == 0
    out = capsys.readouterr().out
    assert "batch script:" in out and "#SBATCH --nodes=" in out
    if name == "r1-two-node":
        assert "sgl-serve-2node" in out and "--node-rank 0" in out, "the SGLang cell's rendered command"
        assert "srun -N 2" in out and "trtllm-serve" in out, "the TensorRT-LLM cell's rendered command"
        assert "#SBATCH --nodes=2" in out and "#SBATCH --gpus-per-node=8" in out


@pytest.mark.parametrize(
    "cell, message",
    [
        ('label = "x"\nrecipe = "cpu-serve"\nargs = ["{port}"]\ncolour = 1', "cell 1 (x): unknown key(s) colour;"),
        ('label = "x"\nrecipe = "no-such-serve"', "cell 1 (x): there is no serve recipe 'no-such-serve' in the"),
        ('label = "x"\nrecipe = "cpu-serve"\nargs = ["{port}"]\nscenarios = "nope"', "unknown scenario set 'nope'"),
        ('label = "x"\nrecipe = "cpu-serve"', 'cpu-serve takes its port as an argument: put "{port}" in args'),
        ('label = "x"\nrecipe = "cpu-serve"\nargs = ["{prot}"]', "unknown placeholder {prot}"),
        ('label = "x"\nrecipe = "cpu-serve"\nargs = [8000]', "args, env values and stop are strings"),
        ('recipe = "cpu-serve"', 'cell 1: needs label = "..."'),
    ],
)
def test_bad_matrix_files_are_one_sentence_errors(tmp_path, capsys, cell, message):
    path = tmp_path / "bad.toml"
    path.write_text(f"[[cell]]\n{cell}\n")
    assert main(["matrix", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bench matrix: bad.toml, ") or err.startswith("bench matrix: "), err
    assert message in err and len(err.splitlines()) == 1, err


def test_a_matrix_without_cells_or_file_says_what_to_do(tmp_path, capsys):
    (tmp_path / "empty.toml").write_text('description = "nothing"\n')
    assert main(["matrix", str(tmp_path / "empty.toml")]) == 2
    assert "has no [[cell]] tables" in capsys.readouterr().err
    assert main(["matrix", "no-such-matrix"]) == 2
    assert (
        "no matrix file 'no-such-matrix'; give a .toml file or one of recipes/matrices/: demo"
        in capsys.readouterr().err
    )


def test_local_matrices_refuse_the_slurm_only_flags(tmp_path, capsys):
    path = matrix_file(tmp_path, GOOD)
    assert main(["matrix", str(path), "--results", str(tmp_path), "--wait"]) == 2
    assert "--serial and --wait are for --executor slurm" in capsys.readouterr().err


def test_the_just_recipe_passes_its_flags(tmp_path):
    from conftest import just

    path = matrix_file(tmp_path, GOOD)
    done = just("matrix", str(path), "--dry-run")
    assert done.returncode == 0 and "cell vllm-cpu.tiny" in done.stdout, done.stderr
    assert str(ROOT) in done.stdout


def test_ctrl_c_stops_the_cells_server_and_a_rerun_resumes(tmp_path):
    """SIGINT while a cell measures: exit 130, the server stopped, the cell `interrupted`; the same
    command again measures it to the end. Calibration cells: they start in a second."""
    slow = '"{port}", "--ttft-ms", "5", "--itl-ms", "100"'  # 8 tokens: 0.8 s a request, time to interrupt
    path = matrix_file(tmp_path, {"calib": slow}, {"calib": CALIBRATION})
    results = tmp_path / "results"
    command = [sys.executable, "-m", "bench", "matrix", str(path), "--results", str(results), "--no-report"]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    records = results / "m" / "calib" / "tiny" / "c1" / "requests.jsonl"
    deadline = time.monotonic() + 120
    while not (records.exists() and records.read_text().strip()):  # the first request finished: mid-campaign
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.1)  # polling the run's records
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out
    assert "interrupted; the server is stopped; run the same command again to resume" in out
    st = state(results, "calib")
    assert st["status"] == "interrupted"
    assert not port_in_use("127.0.0.1", st["port"]) and not (RUN_DIR / f"calib-{st['port']}.pid").exists()

    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert state(results, "calib")["status"] == "done"
    for point in ("c1", "c2"):
        assert json.loads((results / "m" / "calib" / "tiny" / point / "summary.json").read_text())["completed"] == 3


def test_a_local_matrix_refuses_multi_node_cells(capsys):
    assert main(["matrix", "r1-two-node"]) == 2
    assert "cell sglang-tp16-2node.seed needs more than one node: run the matrix with --executor slurm" in (
        capsys.readouterr().err
    )


def test_a_cell_over_two_sets_is_a_grid_of_two_cells(tmp_path, capsys):
    (tmp_path / "other.toml").write_text(SET.replace('"tiny"', '"small"'))
    path = matrix_file(tmp_path, GOOD)
    path.write_text(path.read_text().replace(f'scenarios = "{tmp_path / "tiny.toml"}"',
                    f'scenarios = ["{tmp_path / "tiny.toml"}", "{tmp_path / "other.toml"}"]'))  # fmt: skip
    assert main(["matrix", str(path), "--results", str(tmp_path / "r"), "--dry-run"]) == 0
    cells = [line for line in capsys.readouterr().out.splitlines() if line.startswith("cell ")]
    assert [c.split(":")[0] for c in cells] == [
        "cell vllm-cpu.tiny",
        "cell vllm-cpu.other",
        "cell vllm-cpu-seqs1.tiny",
        "cell vllm-cpu-seqs1.other",
    ]
    path.write_text(path.read_text().replace('"vllm-cpu-seqs1"', '"vllm-cpu"'))
    assert main(["matrix", str(path), "--dry-run"]) == 2
    assert "more than one cell is vllm-cpu.other, vllm-cpu.tiny (label.set)" in capsys.readouterr().err


def test_a_server_that_dies_mid_campaign_fails_its_cell_and_the_next_cell_goes_on(tmp_path, capsys):
    """The calibration server crashes (status 3) after its third request; the cell after it is measured."""
    cells = {"dies": '"{port}", "--exit-after", "3"', "calib": '"{port}"'}
    path = matrix_file(tmp_path, cells, {"dies": CALIBRATION, "calib": CALIBRATION})
    results = tmp_path / "results"
    assert main(["matrix", str(path), "--results", str(results), "--no-report"]) == 1
    died = state(results, "dies")
    assert died["status"] == "failed" and died["reason"] == "the server died during the campaign", died
    assert died["log_tail"], "the server log's last lines are kept"
    assert not (RUN_DIR / f"calib-{died['port']}.pid").exists()
    assert state(results, "calib")["status"] == "done"
