"""bench import / report / plot on the published vLLM result files in tests/data/."""

import argparse
import csv
import json
from pathlib import Path

import pytest

from bench.cli import main
from bench.instrument.records import read_records
from bench.results import importer, plot, report, runfolder

FIXTURES = Path(__file__).resolve().parent / "data" / "vllm-bench-results"
DGX = FIXTURES / "dgx-h200-2025-04-16"
NEBIUS = FIXTURES / "nebius-h200-2025-04-18"
REL = 1e-4  # 0.01 %
if not DGX.is_dir():  # fail loudly: an empty parameter list would only skip the import tests
    raise RuntimeError(f"the vLLM result files are missing: expected {FIXTURES}, which the repository holds")


def rel_close(a, b):
    return a == pytest.approx(b, rel=REL)


@pytest.fixture(scope="module")
def dgx_tree(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    assert main(["import", str(DGX), "--out", str(out), "--gpu-count", "8", "--gpu-name", "NVIDIA H200"]) == 0
    return out


def fixture_json(name):
    return json.loads((DGX / name).read_text())


def run_dir(tree, engine, scenario):
    return tree / "dgx-h200-2025-04-16" / engine / scenario / "r10"


@pytest.mark.parametrize("path", sorted(DGX.glob("*.json")), ids=lambda p: p.stem)
def test_import_recomputes_vllm_statistics(dgx_tree, path):
    src = json.loads(path.read_text())
    engine, scenario = path.stem.split("-", 1)
    d = run_dir(dgx_tree, engine, scenario)
    s = json.loads((d / "summary.json").read_text())
    assert s["recomputed_from_requests"] is True
    for key in (
        "output_throughput",
        "total_token_throughput",
        "request_throughput",
        "total_input_tokens",
        "total_output_tokens",
        "completed",
    ):
        assert rel_close(s[key], src[key]), key
    checked = 0
    for metric in ("ttft", "tpot", "itl"):
        for stat in ("mean", "median", "std", "p99"):
            key = f"{stat}_{metric}_ms"
            if key in src:
                assert rel_close(s[key], src[key]), key
                checked += 1
    assert checked == 12
    recs = list(read_records(d / "requests.jsonl"))
    assert len(recs) == src["num_prompts"]
    assert [r.first for r in recs] == pytest.approx(src["ttfts"])
    m = json.loads((d / "manifest.json").read_text())
    assert m["imported_from"] == "vllm-bench" and m["source"]["path"] == str(path.resolve())
    assert m["server"]["model"] == src["model_id"]
    assert m["workload"]["num_prompts"] == src["num_prompts"] and m["gpu_count"] == 8
    assert m["load"]["rate"] == 10.0 and m["started"].startswith("2025-04-16T")


def test_import_summary_only_keeps_file_numbers_and_labels_ep(tmp_path, capsys):
    assert main(["import", str(NEBIUS), "--out", str(tmp_path)]) == 0
    camp = tmp_path / "nebius-h200-2025-04-18"
    assert sorted(p.name for p in camp.iterdir()) == ["sgl", "vllm", "vllm-ep"]
    src = json.loads((NEBIUS / "vllm-1000-2000-ep.json").read_text())
    d = camp / "vllm-ep" / "1000-2000" / "r10"
    s = json.loads((d / "summary.json").read_text())
    assert not (d / "requests.jsonl").exists() and s["recomputed_from_requests"] is False
    assert s["output_throughput"] == src["output_throughput"]
    assert s["p99_tpot_ms"] == src["p99_tpot_ms"] and "request_goodput" in s
    assert "15 of 15 files imported" in capsys.readouterr().err
    assert json.loads((d / "manifest.json").read_text())["server"]["label"] == "vllm-ep"


def test_import_never_overwrites(tmp_path, capsys):
    src = DGX / "vllm-30000-100.json"
    assert main(["import", str(src), "--out", str(tmp_path)]) == 0
    summary = run_dir(tmp_path, "vllm", "30000-100") / "summary.json"
    before = summary.read_bytes()
    summary.write_text('{"mine": 1}')
    capsys.readouterr()
    assert main(["import", str(src), "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "skipped" in err and "never overwrites" in err and "0 of 1 files imported" in err
    assert summary.read_text() == '{"mine": 1}' and before != summary.read_bytes()


@pytest.mark.parametrize(
    "content, words",
    [
        ("not json", "cannot read"),
        ('{"a": 1}', "not a vLLM benchmark result"),
        ('{"duration": 1, "completed": 1, "ttfts": [0.1], "itls": []}', "unequal length"),
    ],
)
def test_import_bad_file_is_one_sentence(tmp_path, capsys, content, words):
    bad = tmp_path / "vllm-10-10.json"
    bad.write_text(content)
    assert main(["import", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and not (tmp_path / "out").exists()
    assert main(["import", str(tmp_path / "missing.json"), "--out", str(tmp_path)]) == 2


def test_report_prints_gaps_against_baseline(dgx_tree, tmp_path, capsys):
    md, table = tmp_path / "report.md", tmp_path / "report.csv"
    assert main(["report", str(dgx_tree), "--baseline", "vllm", "--markdown", str(md), "--csv", str(table)]) == 0
    out = capsys.readouterr().out
    assert "gap % = (engine / baseline - 1) x 100" in out
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == 14
    seen = 0
    for row in rows:
        eng = fixture_json(f"{row['engine']}-{row['scenario']}.json")
        base = fixture_json(f"vllm-{row['scenario']}.json")
        for metric, key in (
            ("output_throughput", "output_throughput"),
            ("ttft_p99", "p99_ttft_ms"),
            ("tpot_p50", "median_tpot_ms"),
        ):
            expected = (eng[key] / base[key] - 1) * 100
            assert rel_close(float(row[f"{metric}_gap_pct"]) + 100, expected + 100)
        if row["engine"] != "vllm":
            expected = (eng["output_throughput"] / base["output_throughput"] - 1) * 100
            assert f"{expected:+.1f}%" in out
            seen += 1
    assert seen == 9  # sgl in 5 scenarios, trt in 4 (it did not run 30000-100)
    assert "| Scenario" in md.read_text() and "vllm" in md.read_text()
    assert "8x NVIDIA H200" in out and "2025-04-16" in out


def test_report_bad_input(dgx_tree, tmp_path, capsys):
    assert main(["report", str(dgx_tree), "--baseline", "nope"]) == 2
    assert "pick one of: sgl, trt, vllm" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert main(["report", str(dgx_tree), "--fmt", "nope"]) == 2


def test_plot_writes_pngs_and_plots_the_right_data(tmp_path, capsys):
    files = [DGX / "vllm-30000-100.json", DGX / "sgl-30000-100.json"]
    assert main(["import", *map(str, files), "--out", str(tmp_path), "--gpu-count", "8"]) == 0
    assert main(["plot", str(tmp_path), "--out", str(tmp_path / "png")]) == 0
    camp = tmp_path / "png" / "dgx-h200-2025-04-16"
    expected = [
        camp / "30000-100-throughput-latency.png",
        camp / "30000-100-frontier.png",
        camp / "vllm" / "30000-100" / "r10" / "cdf-ttft-itl.png",
        camp / "sgl" / "30000-100" / "r10" / "cdf-ttft-itl.png",
    ]
    for f in expected:
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f
    runs = runfolder.find_runs(tmp_path)
    series = plot.scenario_series(runs)[("dgx-h200-2025-04-16", "30000-100")]
    for engine in ("vllm", "sgl"):
        src = fixture_json(f"{engine}-30000-100.json")
        (p,) = series[engine]
        assert p["load_point"] == "r10"
        assert rel_close(p["output_throughput"], src["output_throughput"])
        assert rel_close(p["throughput_per_gpu"], src["output_throughput"] / 8)
        assert rel_close(p["ttft_p99"], src["p99_ttft_ms"])
        assert rel_close(p["tpot_p50"], src["median_tpot_ms"])
        run = next(r for r in runs if r.engine == engine)
        cdf = plot.cdf_series(run.records())
        assert cdf["ttft_ms"] == pytest.approx(sorted(t * 1000 for t in src["ttfts"]))
        assert cdf["itl_ms"] == pytest.approx(sorted(g * 1000 for i in src["itls"] for g in i))


def test_pareto_keeps_only_undominated_points():
    pts = [
        {"interactivity": x, "throughput_per_gpu": y, "load_point": n}
        for x, y, n in ((50, 10, "c1"), (40, 30, "c4"), (30, 25, "c8"), (20, 60, "c16"))
    ]
    assert [p["load_point"] for p in plot.pareto(pts)] == ["c16", "c4", "c1"]


@pytest.mark.parametrize("module", [importer, report, plot])
def test_every_flag_has_help(module):
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    assert all(a.help for a in parser._actions if a.dest != "help")
