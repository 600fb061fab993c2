"""`just demo` measures both CPU engines, one after the other, and its report compares them."""

from __future__ import annotations

import csv
import os
import subprocess

import pytest

from conftest import JUST, ROOT, free_port

pytestmark = pytest.mark.slow

# The demo's recipe with a smaller set, so the test takes about two minutes, not the demo's six.
MINI = """description = "The demo's shape, small: one scenario, two load points."
concurrency = [1, 4]
num_prompts = 8

[[scenario]]
name = "128-32"
input_len = 128
output_len = 32
"""


def test_the_demo_reports_two_engines_with_gaps(tmp_path):
    (tmp_path / "mini.toml").write_text(MINI)
    results, port = tmp_path / "results", free_port()
    env = dict(os.environ, DEMO_SET=str(tmp_path / "mini.toml"), RESULTS=str(results))
    done = subprocess.run(
        [JUST, "--justfile", str(ROOT / "justfile"), "demo", str(port), "mini"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    for name in (f"cpu-engine-{port}", f"tf-engine-{port}"):  # each engine stopped by the recipe
        assert not (ROOT / ".run" / f"{name}.pid").exists()

    rows = list(csv.DictReader(open(results / "mini" / "report.csv")))
    engines = {r["engine"] for r in rows}
    assert engines == {"vllm-cpu", "transformers-cpu"}, engines
    assert {r["load_point"] for r in rows} >= {"c1", "c4"}
    gaps = [r for r in rows if r["engine"] == "transformers-cpu"]
    assert len(gaps) == 2
    gap_cols = [k for k in rows[0] if "gap" in k]
    assert gap_cols, rows[0].keys()
    # Two different engines: every Transformers row has real, non-zero gaps against vLLM.
    for r in gaps:
        assert all(r[k] not in ("", None) and float(r[k]) != 0.0 for k in gap_cols), r
    assert "transformers-cpu" in (results / "mini" / "report.md").read_text()
