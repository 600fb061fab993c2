"""`bench matrix --executor slurm` on a REAL one-node Slurm cluster on 127.0.0.1: the fixture installs
Slurm and munge from Debian's packages when missing (as root: `apt-get install -y slurm-wlm munge`, about
6 to 10 s), starts munged (its own key and socket in a temporary folder), slurmctld and slurmd with
tests/slurm.conf.template filled in, and stops every daemon by PID, also when a test fails. The two-cell
matrix (the CPU engine and the calibration server, which starts in a second: CI time) is submitted with
--serial, one batch job per cell, and waited for; the report, the kept batch scripts and --status are
checked."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

from bench.cli import main
from bench.serve.launcher import free_port
from conftest import ROOT
from test_matrix import CALIBRATION, matrix_file

DAEMONS = ("munged", "slurmctld", "slurmd")
CELLS = {"vllm-cpu": '"{port}"', "calib": '"{port}", "--ttft-ms", "5", "--itl-ms", "2"'}


def install_slurm() -> None:
    if all(shutil.which(d) for d in (*DAEMONS, "sbatch")):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.fail("Slurm is not installed and this is no Debian root shell: `apt-get install -y slurm-wlm munge`")
    print("installing slurm-wlm and munge with apt-get (about 10 s)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(["apt-get", "install", "-y", "slurm-wlm", "munge"], capture_output=True, text=True, env=env)
    if done.returncode:  # the package lists may be missing on a fresh machine
        subprocess.run(["apt-get", "update"], capture_output=True, env=env)
        done = subprocess.run(
            ["apt-get", "install", "-y", "slurm-wlm", "munge"], capture_output=True, text=True, env=env
        )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def wait_for(what: str, ready, procs: dict, timeout: float = 60) -> None:
    """Poll until ready() holds; fail at once when a daemon has exited."""
    deadline = time.monotonic() + timeout
    while not ready():
        if dead := [n for n, p in procs.items() if p.poll() is not None]:
            pytest.fail(f"{', '.join(dead)} exited while waiting for {what}")
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f} s"
        time.sleep(0.2)  # polling the daemons' state


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """munged, slurmctld and slurmd in the foreground as our children (so their PIDs are ours), one node."""
    install_slurm()
    d = tmp_path_factory.mktemp("slurm")
    (d / "state").mkdir()
    (d / "spool").mkdir()
    key = d / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    values = {"HOST": socket.gethostname(), "CTLD_PORT": str(free_port()), "SLURMD_PORT": str(free_port())}
    values |= {"DIR": str(d), "CPUS": str(os.cpu_count())}
    template = (ROOT / "tests" / "slurm.conf.template").read_text()
    conf = d / "slurm.conf"
    conf.write_text(re.sub(r"@([A-Z_]+)@", lambda m: values[m.group(1)], template))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    commands = {
        "munged": ["munged", "-F", "--force", f"--socket={d}/munge.sock", f"--key-file={key}"]
        + [f"--pid-file={d}/munged.pid", f"--log-file={d}/munged.log", f"--seed-file={d}/munged.seed"],
        "slurmctld": ["slurmctld", "-D", "-f", str(conf)],
        "slurmd": ["slurmd", "-D", "-f", str(conf)],
    }
    procs: dict[str, subprocess.Popen] = {}
    try:
        for name, words in commands.items():
            with open(d / f"{name}.out", "wb") as out:
                procs[name] = subprocess.Popen(words, stdout=out, stderr=subprocess.STDOUT, env=env)
            if name == "munged":
                wait_for("munge socket", (d / "munge.sock").exists, procs)

        def idle() -> bool:
            q = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=env)
            return q.stdout.strip() == "idle"

        wait_for("idle node", idle, procs)
        yield {"dir": d, "conf": conf, "env": env}
    finally:
        for name in reversed(list(procs)):  # slurmd, slurmctld, munged: by the PIDs we started
            p = procs[name]
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        assert all(p.poll() is not None for p in procs.values()), "a Slurm daemon was left running"


@pytest.fixture(scope="module")
def submitted(cluster, tmp_path_factory, monkeypatch_module):
    tmp = tmp_path_factory.mktemp("slurm-matrix")
    path, results = matrix_file(tmp, CELLS, {"calib": CALIBRATION}, time='"00:20:00"'), tmp / "results"
    monkeypatch_module.setenv("SLURM_CONF", str(cluster["conf"]))
    started = time.monotonic()
    rc = main(["matrix", str(path), "--results", str(results), "--executor", "slurm", "--serial", "--wait"])
    print(f"two-cell matrix on Slurm: {time.monotonic() - started:.0f} s")
    return {"rc": rc, "file": path, "results": results}


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.mark.slow
def test_both_cells_run_as_batch_jobs_and_the_report_compares_them(submitted):
    results = submitted["results"] / "m"
    assert submitted["rc"] == 0
    jobs = []
    for label in CELLS:
        cell = results / "cells" / f"{label}.tiny"
        state = json.loads((cell / "state.json").read_text())
        assert state["status"] == "done", state
        job = json.loads((cell / "job.json").read_text())
        assert job["after"] == (jobs[-1] if jobs else None), "--serial: each job waits for the one before"
        jobs.append(job := job["job"])
        out = (cell / f"slurm-{job}.out").read_text()
        assert f"cell {label}.tiny of matrix m" in out and f"job {job}" in out, out[-2000:]
        for point in ("c1", "c2"):
            assert json.loads((results / label / "tiny" / point / "summary.json").read_text())["completed"] == 3
    report = (results / "report.md").read_text()
    assert "| calib " in report and "| vllm-cpu " in report


@pytest.mark.slow
def test_the_batch_scripts_are_kept_and_run_the_cell_again_by_hand(submitted, cluster):
    cell = submitted["results"] / "m" / "cells" / "vllm-cpu.tiny"
    script = (cell / "batch.sh").read_text()
    assert "#SBATCH --nodes=1" in script and "#SBATCH --time=00:20:00" in script and "#SBATCH --exclusive" in script
    assert f"export PYTHONPATH={ROOT}" in script and "--cell vllm-cpu.tiny" in script
    # By hand: the cell is finished, so the job keeps it and measures nothing.
    done = subprocess.run(["sbatch", "--parsable", "--wait", str(cell / "batch.sh")], capture_output=True, text=True,
                          env=cluster["env"], timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    job = done.stdout.strip().split(";")[0]
    assert "vllm-cpu.tiny: finished earlier" in (cell / f"slurm-{job}.out").read_text()


@pytest.mark.slow
def test_status_shows_each_job_and_its_result(submitted, capsys):
    assert main(["matrix", str(submitted["file"]), "--results", str(submitted["results"]), "--status"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if ".tiny" in line]
    assert len(rows) == 2 and all("COMPLETED" in r and " done " in r and "2/2" in r for r in rows), rows
