"""Run a matrix's cells one after another on this machine (also what each Slurm job runs for its cell).

A cell, in phases: fit check of its rendered serve command against the points left to measure; start
the server with its recipe (its output in the cell's serve.log) and wait until it answers; the
campaign, measured in this process (bench.results.campaign: resumable, with a warm-up at every point);
a check that the server is still up; stop it. Whatever goes wrong is the cell's status and reason,
with the server log's last lines, and the next cell goes on. Ctrl-C stops the server and leaves the
cell `interrupted`, measured again by the next run of the same command.

Two kinds of serve recipe:
- foreground (the GPU engines' recipes exec the engine): started through the launcher (by PID, its
  output to serve.log), stopped by PID; a multi-node cell with per_node runs it under srun on each node;
- background (`stop` set, e.g. cpu-serve): the recipe returns once the server is up, and the cell's
  stop recipe stops it; the launcher's own log of that server (.run/*-<port>.log) is kept beside.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench.errors import UserError
from bench.paths import RUN_DIR
from bench.results import campaign
from bench.results import matrix_cell as mc
from bench.results.matrix_file import Cell, Matrix, fill
from bench.results.runfolder import state
from bench.serve import launcher, recipes

RANK = "@RANK@"  # stands for the node's rank until srun's shell fills it in


class CellFailed(Exception):
    """The cell cannot go on; the message says why in one sentence."""


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def head_node(cell: Cell) -> str:
    """Where the server answers: the first node of the Slurm job for a multi-node cell, else loopback."""
    nodelist = os.environ.get("SLURM_JOB_NODELIST")
    if cell.nodes == 1 or not nodelist:
        if cell.nodes > 1:
            raise CellFailed(f"it needs {cell.nodes} nodes: run the matrix with --executor slurm")
        return "127.0.0.1"
    names = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True).stdout.split()
    return names[0] if names else socket.gethostname()


class Server:
    """The cell's server: started by its recipe, stopped by PID or by the stop recipe."""

    def __init__(self, m: Matrix, cell: Cell, d: Path, port: int, head: str):
        self.cell, self.d, self.port, self.head = cell, d, port, head
        self.name = f"matrix-{m.name}-{cell.id}"
        self.url = f"http://{head}:{port}"
        self.log = d / "serve.log"
        self.started = False
        # The launcher appends to its logs: remember where this cell's part of each begins.
        self.marks = {p: p.stat().st_size for p in RUN_DIR.glob(f"*-{port}.log")}

    def start(self) -> None:
        args, env = mc.serve_words(self.cell, self.port, self.head, RANK if self.cell.per_node else "0")
        words = recipes.command(self.cell.recipe, args)
        if self.cell.stop:
            return self._start_background(words, env)
        if self.cell.per_node:  # one task per node; each fills its rank from srun's SLURM_NODEID
            line = shlex.join(words).replace(RANK, "${SLURM_NODEID}")
            words = ["srun", f"--nodes={self.cell.nodes}", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
            words += [f"--gpus-per-node={self.cell.gpus}"] if self.cell.gpus else []  # the step gets the job's GPUs
            words += ["bash", "-c", line]
        command = ["env", *(f"{k}={v}" for k, v in env.items()), *words]
        try:
            self.started = True
            launcher.start(
                self.name, command, self.head, self.port, self.cell.timeout, self.cell.ready_path, log=self.log
            )
        except launcher.LaunchError as e:
            self.started = False
            raise CellFailed(str(e).splitlines()[0]) from None

    def _start_background(self, words: list[str], env: dict[str, str]) -> None:
        self.started = True  # the recipe may have started something even if it fails: the stop recipe runs
        with open(self.log, "ab") as out:
            proc = subprocess.Popen(words, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env},
                                    stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
            try:
                rc = proc.wait(timeout=self.cell.timeout)
            except (KeyboardInterrupt, subprocess.TimeoutExpired) as e:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                proc.wait()
                if isinstance(e, KeyboardInterrupt):
                    raise
                raise CellFailed(f"{self.cell.recipe} did not return within {self.cell.timeout:.0f} s") from None
        if rc:  # the recipe's own last sentence says why (just's "error: recipe ... failed" line aside)
            said = [line.strip() for line in mc.tail(self.log, 5) if line.strip() and not line.startswith("error: ")]
            why = f": {said[-1]}" if said else ""
            raise CellFailed(f"{self.cell.recipe} exited with status {rc} before its server was up{why}")
        if not answers(self.url + self.cell.ready_path):
            raise CellFailed(f"{self.cell.recipe} returned, but nothing answers {self.url}{self.cell.ready_path}")

    def alive(self) -> bool:
        if self.cell.stop:
            return answers(self.url + self.cell.ready_path)
        return launcher.running_pid(self.name) is not None

    def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        if self.cell.stop:
            words = recipes.command(self.cell.stop.split()[0], [fill(w, self.port) for w in self.cell.stop.split()[1:]])
            with open(self.log, "ab") as out:
                subprocess.run(words, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        else:
            with contextlib.suppress(launcher.LaunchError):  # it died on its own: nothing left to stop
                launcher.stop(self.name)
        self.keep_engine_logs()

    def keep_engine_logs(self) -> None:
        for p in RUN_DIR.glob(f"*-{self.port}.log"):
            with open(p, "rb") as f:
                f.seek(self.marks.get(p, 0))
                (self.d / p.name).write_bytes(f.read())

    def tail(self) -> list[str]:
        logs = [self.d / p.name for p in RUN_DIR.glob(f"*-{self.port}.log")] + [self.log]
        return next((t for t in map(mc.tail, logs) if t), [])


def campaign_args(m: Matrix, cell: Cell, results: Path, base_url: str) -> argparse.Namespace:
    argv = [cell.scenarios, "--base-url", base_url, "--label", cell.label, "--name", m.name]
    argv += ["--results", str(results), "--pause", f"{cell.pause:g}"]
    argv += ["--model", cell.model] if cell.model else []
    argv += ["--dataset-path", cell.dataset_path] if cell.dataset_path else []
    argv += [w for s in cell.skip for w in ("--skip", s)]
    argv += ["--warmup-sweep"] if cell.warmup_sweep else []
    argv += ["--allow-queueing"] if cell.allow_queueing else []
    run_args = f"--warmup {cell.warmup} {cell.run_args}".strip() if cell.warmup else cell.run_args
    argv += [f"--run-args={run_args}"] if run_args else []
    p = argparse.ArgumentParser(prog="bench campaign")
    campaign.add_arguments(p)
    args = p.parse_args(argv)
    args.argv = ["bench", "campaign", *argv]
    return args


def run_cell(m: Matrix, cell: Cell, results: Path, say) -> str:
    """Measure one cell; its status (done, failed). Ctrl-C: the server is stopped, KeyboardInterrupt goes on."""
    d = mc.folder(results, m, cell)
    d.mkdir(parents=True, exist_ok=True)
    port, began = launcher.free_port(), time.monotonic()
    server = None
    try:
        head = head_node(cell)
        mc.write_state(d, status=mc.RUNNING, reason="", log_tail=[], started=mc.now(), ended=None,
                       node=socket.gethostname(), port=port, serve_command=mc.shown(cell, port, head))  # fmt: skip
        # Fit: refuse, before a server starts, a cell whose command would queue or reject its points.
        todo = [p for p in mc.planned(cell, results / m.name) if state(p.out) != "done"]
        _, verdicts, why_not = mc.fit_check(cell, todo, port)
        say(f"  fit check: {why_not or mc.summary_line(verdicts) or 'nothing left to measure'}")
        if reason := mc.refused(cell, verdicts):
            raise CellFailed(reason)
        # Start, and wait until it answers.
        server = Server(m, cell, d, port, head)
        say(f"  starting: {mc.shown(cell, port, head)} (log {server.log}; up to {cell.timeout:.0f} s)")
        server.start()
        # Measure.
        try:
            rc = campaign.main(campaign_args(m, cell, results, f"{server.url}/v1"))
        except UserError as e:
            raise CellFailed(f"campaign refused: {e}") from None
        if rc > 128:
            raise KeyboardInterrupt
        if not server.alive():
            raise CellFailed("the server died during the campaign")
        if rc:
            raise CellFailed("some load points failed (see the campaign's lines above)")
        server.stop()
        mc.write_state(d, status=mc.DONE, ended=mc.now(), seconds=round(time.monotonic() - began))
        return mc.DONE
    except CellFailed as e:
        if server:
            server.stop()
        lines = server.tail() if server else []
        mc.write_state(d, status=mc.FAILED, reason=str(e), log_tail=lines, ended=mc.now(),
                       seconds=round(time.monotonic() - began))  # fmt: skip
        say(f"  FAILED: {e}" + "".join(f"\n    | {line}" for line in lines[-8:]))
        return mc.FAILED
    except BaseException:  # Ctrl-C (or anything unforeseen): stop the server, leave the cell to be measured again
        if server:
            server.stop()
        mc.write_state(d, status=mc.INTERRUPTED, reason="interrupted", ended=mc.now())
        raise
