"""Bad input to bench run: one sentence on stderr, exit 2, no traceback, nothing written."""

from __future__ import annotations

import pytest

from bench.cli import main
from bench.lab.calibration import start_server, stop_server
from conftest import ROOT, free_port

TOKENIZER = str(ROOT / "recipes" / "models" / "tiny-llama")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc = start_server(0, log=tmp_path_factory.mktemp("calib") / "log.jsonl", ttft_ms=1, itl_ms=1)
    yield f"{proc.base_url}/v1"
    stop_server(proc)


def fails(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


def test_unreachable_server(capsys, tmp_path):
    err = fails(
        capsys,
        ["run", "--base-url", f"http://127.0.0.1:{free_port()}/v1", "--concurrency", "1", "--out", str(tmp_path / "r")],
    )
    assert "no server answers" in err and "just cpu-serve" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "dataset,path,words",
    [
        ("sharegpt", "/no/such/file.json", "does not exist"),
        ("jsonl", "/no/such/file.jsonl", "cannot read dataset"),
        ("sharegpt", None, "needs --dataset-path"),
    ],
)
def test_unreadable_dataset(server, capsys, tmp_path, dataset, path, words):
    argv = [
        "run",
        "--base-url",
        server,
        "--tokenizer",
        TOKENIZER,
        "--concurrency",
        "1",
        "--dataset",
        dataset,
        "--out",
        str(tmp_path / "r"),
    ]
    assert words in fails(capsys, argv + (["--dataset-path", path] if path else []))


def test_bad_jsonl_line(server, capsys, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "hi"}\nnot json\n')
    err = fails(
        capsys,
        [
            "run",
            "--base-url",
            server,
            "--tokenizer",
            TOKENIZER,
            "--concurrency",
            "1",
            "--dataset",
            "jsonl",
            "--dataset-path",
            str(data),
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert "line 2" in err


def test_existing_run_folder_is_never_overwritten(server, capsys, tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "requests.jsonl").write_text("precious\n")
    err = fails(
        capsys,
        [
            "run",
            "--base-url",
            server,
            "--tokenizer",
            TOKENIZER,
            "--concurrency",
            "1",
            "--num-prompts",
            "1",
            "--out",
            str(out),
        ],
    )
    assert "already holds results" in err
    assert (out / "requests.jsonl").read_text() == "precious\n"


def test_missing_tokenizer(server, capsys, tmp_path):
    err = fails(
        capsys,
        ["run", "--base-url", server, "--tokenizer", str(tmp_path), "--concurrency", "1", "--out", str(tmp_path / "r")],
    )
    assert "no tokenizer.json" in err


@pytest.mark.parametrize(
    "argv",
    [["--concurrency", "0"], ["--rate", "-1"], ["--concurrency", "x"], ["--range-ratio", "1.5", "--concurrency", "1"]],
)
def test_invalid_numbers_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", *argv])
    assert e.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_no_load_given(server, capsys):
    assert "give --concurrency" in fails(capsys, ["run", "--base-url", server])
