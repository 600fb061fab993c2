"""Guards: each one triggered, as a pure function, through `python -m bench.serve.guards`, and through a
serve recipe that must stop before it writes anything or starts an engine; the engine table they read."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from bench.errors import UserError
from bench.serve import engines, guards

ROOT = Path(__file__).resolve().parents[1]
JUST = str(ROOT / ".venv" / "bin" / "just")
TINY_LLAMA = str(ROOT / "recipes" / "models" / "tiny-llama")  # dense: no experts


@pytest.fixture
def moe_model(tmp_path) -> str:
    """A model folder whose config.json declares routed experts, as DeepSeek-R1's does."""
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "deepseek_v3", "n_routed_experts": 256}))
    return str(tmp_path)


@pytest.mark.parametrize(
    "config",
    [{"n_routed_experts": 256}, {"num_experts": 60}, {"num_local_experts": 8}, {"text_config": {"num_experts": 128}}],
)
def test_expert_keys_are_recognised(config):
    assert guards.declares_experts(config)


def test_a_dense_model_declares_no_experts():
    assert guards.read_model_config(TINY_LLAMA)["model_type"] == "llama"
    assert not guards.declares_experts(guards.read_model_config(TINY_LLAMA))
    assert not guards.declares_experts({"num_experts": 1, "num_local_experts": None})


@pytest.mark.parametrize("argv", [["--load-format", "dummy"], ["--load-format=dummy"], ["--load_format", "DUMMY"]])
def test_dummy_weights_refused_for_a_moe_model(moe_model, argv):
    refusals = guards.check("vllm", moe_model, ["vllm", "serve", moe_model, *argv]).refusals
    assert len(refusals) == 1 and "mixture-of-experts" in refusals[0] and "--load-format dummy" in refusals[0]


def test_dummy_weights_in_a_trtllm_options_file_refused(moe_model, tmp_path):
    options = tmp_path / "options.yaml"
    options.write_text("kv_cache_config:\n  enable_block_reuse: false\nload_format: dummy\n")
    refusals = guards.check("trtllm", moe_model, ["trtllm-serve", moe_model, "--config", str(options)]).refusals
    assert len(refusals) == 1


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
@pytest.mark.parametrize("key", ["load-format", "load_format"])
def test_dummy_weights_in_a_vllm_or_sglang_config_file_refused(moe_model, tmp_path, engine, key):
    options = tmp_path / "options.yaml"
    options.write_text(f"{key}: dummy\n")
    assert len(guards.check(engine, moe_model, ["serve", moe_model, "--config", str(options)]).refusals) == 1


def test_each_engine_is_asked_for_its_own_load_format_spelling(moe_model):
    # trtllm-serve has no load-format flag (it would refuse the flag itself); SGLang has no underscore spelling
    assert guards.check("trtllm", moe_model, ["--load-format", "dummy"]).refusals == []
    assert guards.check("sglang", moe_model, ["--load_format", "dummy"]).refusals == []
    assert guards.check("sglang", moe_model, ["--load-format", "dummy"]).refusals


def test_dummy_weights_allowed_for_a_dense_model_and_real_weights_for_moe(moe_model):
    assert guards.check("vllm", TINY_LLAMA, ["--load-format", "dummy"])[:2] == ([], [])
    assert guards.check("vllm", moe_model, ["--load-format", "auto"])[:2] == ([], [])


def test_dummy_weights_warned_when_the_config_is_unreadable(tmp_path):
    refusals, warnings, _ = guards.check("sglang", str(tmp_path / "absent"), ["--load-format", "dummy"])
    assert refusals == [] and len(warnings) == 1 and "config.json cannot be read" in warnings[0]


@pytest.mark.parametrize(
    "argv", [["--attn-dp-size", "8"], ["--attn-dp-size=8"], ["--enable-dp-attention", "--dp-size", "8"]]
)
def test_torch_compile_with_dp_attention_refused(argv):
    message = guards.compile_with_dp_attention_error(["--tp-size", "8", "--enable-torch-compile", *argv])
    assert message and "sgl-serve-compile" in message


def test_torch_compile_without_dp_attention_allowed():
    assert (
        guards.compile_with_dp_attention_error(["--tp-size", "8", "--ep-size", "8", "--enable-torch-compile"]) is None
    )
    assert guards.compile_with_dp_attention_error(["--attn-dp-size", "8"]) is None
    assert guards.compile_with_dp_attention_error(["--enable-torch-compile", "--attn-dp-size", "1"]) is None


def test_empty_or_missing_deepgemm_cache_warns_and_a_filled_one_does_not(tmp_path):
    assert "half speed" in guards.deepgemm_cache_warning(tmp_path)
    assert guards.deepgemm_cache_warning(tmp_path / "missing")
    (tmp_path / "kernel.cubin").write_bytes(b"\0")
    assert guards.deepgemm_cache_warning(tmp_path) is None


def test_the_deepgemm_warning_is_for_sglang_only(tmp_path):
    assert guards.check("sglang", TINY_LLAMA, [], deepgemm_cache=tmp_path).warnings
    assert guards.check("vllm", TINY_LLAMA, [], deepgemm_cache=tmp_path).warnings == []
    assert [e.name for e in engines.ENGINES.values() if e.deepgemm_jit] == ["sglang"]


TRT = engines.engine("trtllm")


def trt_note(argv: list[str]) -> str | None:
    return guards.prefix_cache_note(TRT, argv, guards.read_options(TRT, argv))


@pytest.mark.parametrize(
    "options, on",
    [
        ("kv_cache_config:\n  free_gpu_memory_fraction: 0.8\n  enable_block_reuse: false   # off\n", False),
        ("enable_block_reuse:\tfalse\r\n", False),
        ("kv_cache_config:\n  enable_block_reuse: true\n", True),
        ("kv_cache_config:\n  free_gpu_memory_fraction: 0.8\n", True),  # the line missing: the engine's default
        ("#  enable_block_reuse: false\n", True),  # as the recipe's grep did: a comment turns nothing off
        ("enable_block_reuse:\nfalse\n", True),  # one line, as grep reads it
    ],
)
@pytest.mark.parametrize("flag", ["--config", "--extra_llm_api_options"])
def test_trtllm_prefix_cache_note_reads_block_reuse_in_the_options_file(tmp_path, options, on, flag):
    (tmp_path / "options.yaml").write_text(options)
    note = trt_note(["trtllm-serve", "/DeepSeek-R1", flag, str(tmp_path / "options.yaml"), "--tp_size", "8"])
    assert (note is not None) == on
    assert note is None or note.startswith("this server keeps its prefix cache on: restart it between scenarios")


def test_trtllm_prefix_cache_note_without_a_readable_options_file(tmp_path):
    assert trt_note(["trtllm-serve", "/DeepSeek-R1", "--tp_size", "8"])
    assert trt_note(["trtllm-serve", "/DeepSeek-R1", "--config"])  # a flag without its value names no file
    assert trt_note(["trtllm-serve", "/DeepSeek-R1", "--config", str(tmp_path / "absent.yaml")])
    assert trt_note(["trtllm-serve", "/DeepSeek-R1", "--config", str(tmp_path)])  # a folder


def test_trtllm_prefix_cache_note_reads_the_last_options_file_only(tmp_path):
    (tmp_path / "off.yaml").write_text("kv_cache_config:\n  enable_block_reuse: false\n")
    (tmp_path / "on.yaml").write_text("kv_cache_config:\n  enable_block_reuse: true\n")
    off, on = str(tmp_path / "off.yaml"), str(tmp_path / "on.yaml")
    assert trt_note(["trtllm-serve", "--config", off, "--extra_llm_api_options", on])
    assert trt_note(["trtllm-serve", "--extra_llm_api_options", on, "--config", off]) is None
    assert trt_note(["trtllm-serve", "--config", on, f"--config={off}"]) is None


def test_vllm_and_sglang_turn_the_prefix_cache_off_with_a_flag():
    assert guards.check("vllm", TINY_LLAMA, ["vllm", "serve", "--no-enable-prefix-caching"]) == ([], [], [])
    assert guards.check("sglang", TINY_LLAMA, ["-m", "sglang.launch_server", "--disable-radix-cache"]) == ([], [], [])
    assert guards.check("vllm", TINY_LLAMA, ["vllm", "serve"]).notes
    assert guards.check("sglang", TINY_LLAMA, ["-m", "sglang.launch_server"]).notes


def test_cli_prints_the_note_and_passes(tmp_path, capsys):
    (tmp_path / "options.yaml").write_text("kv_cache_config:\n  enable_block_reuse: true\n")
    command = ["trtllm-serve", TINY_LLAMA, "--config", str(tmp_path / "options.yaml")]
    rc = guards.main(["--engine", "trtllm", "--model", TINY_LLAMA, "--", *command])
    err = capsys.readouterr().err
    assert rc == 0 and err.startswith("note: this server keeps its prefix cache on") and err.count("\n") == 1


def test_cli_gives_no_note_for_a_refused_server(moe_model, capsys):
    rc = guards.main(["--engine", "vllm", "--model", moe_model, "--", "vllm", "serve", "--load-format", "dummy"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("refused: ") and err.count("\n") == 1 and "note: " not in err


def test_an_unknown_engine_is_one_sentence_naming_the_known_ones(capsys):
    with pytest.raises(
        UserError, match="unknown engine 'tgi': the known engines are sglang, transformers, trtllm, vllm"
    ):
        guards.check("tgi", TINY_LLAMA, [])
    rc = guards.main(["--engine", "tgi", "--model", TINY_LLAMA, "--", "text-generation-launcher"])
    known = "the known engines are sglang, transformers, trtllm, vllm"
    assert rc == 2 and capsys.readouterr().err == f"python -m bench.serve.guards: unknown engine 'tgi': {known}\n"


def test_bad_input_to_the_guards_themselves_is_argparse_usage(capsys):
    with pytest.raises(SystemExit) as stop:
        guards.main(["--model", TINY_LLAMA, "--", "vllm", "serve"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "the following arguments are required: --engine" in err and "Traceback" not in err


def test_cli_refuses_with_one_sentence_and_exit_2(moe_model, capsys):
    rc = guards.main(
        ["--engine", "vllm", "--model", moe_model, "--", "vllm", "serve", moe_model, "--load-format", "dummy"]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("refused: ") and err.count("\n") == 1


def test_cli_warns_but_passes(tmp_path, capsys):
    rc = guards.main(
        [
            "--engine",
            "sglang",
            "--model",
            TINY_LLAMA,
            "--deepgemm-cache",
            str(tmp_path),
            "--",
            "python3",
            "-m",
            "sglang.launch_server",
            "--tp-size",
            "8",
            "--disable-radix-cache",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 0 and err.startswith("warning: the DeepGEMM cache") and err.count("\n") == 1


def serve(recipe: str, *args: str, run_dir: Path) -> subprocess.CompletedProcess:
    """Run a serve recipe for real (not PRINT). The engine pins point at versions never installed,
    so a recipe whose guard failed to refuse stops at "not found" instead of starting anything."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "SGL_", "TRT_", "PRINT"))}
    env.update(
        VLLM_VERSION="0.0.0-absent",
        SGL_VERSION="0.0.0-absent",
        TRT_VERSION="0.0.0-absent",
        VLLM_VIA="venv",
        SGL_VIA="venv",
        TRT_VIA="venv",
        BENCH_RUN_DIR=str(run_dir),
    )
    return subprocess.run(
        [JUST, "--justfile", str(ROOT / "justfile"), recipe, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_recipe_refuses_dummy_weights_before_starting(moe_model, tmp_path):
    out = serve("vllm-serve", moe_model, "8123", "127.0.0.1", "--load-format", "dummy", run_dir=tmp_path / "run")
    assert out.returncode != 0 and "refused: " in out.stderr and "not found" not in out.stderr
    assert not (tmp_path / "run").exists(), "nothing may be recorded for a refused server"


def test_recipe_refuses_torch_compile_with_dp_attention(tmp_path):
    out = serve("sgl-serve-compile", TINY_LLAMA, "8123", "127.0.0.1", "--attn-dp-size", "8", run_dir=tmp_path)
    assert out.returncode != 0 and "refused: SGLang's --enable-torch-compile" in out.stderr
    assert "not found" not in out.stderr and list(tmp_path.iterdir()) == []


def test_recipe_that_passes_its_guards_still_checks_the_engine_is_there(tmp_path):
    out = serve("vllm-serve", TINY_LLAMA, "8123", run_dir=tmp_path)
    assert out.returncode == 1 and "refused" not in out.stderr
    assert "bin/vllm not found: run `just vllm-install 0.0.0-absent`" in out.stderr
    assert out.stderr.startswith("+ ") and list(tmp_path.iterdir()) == []


def test_trt_recipe_notes_a_prefix_cache_left_on_and_not_one_turned_off(tmp_path):
    out = serve("trt-serve", TINY_LLAMA, "8123", run_dir=tmp_path / "run")  # recipes/trt/serve.yaml: reuse off
    assert out.returncode == 1 and "note: " not in out.stderr and "refused" not in out.stderr
    assert "bin/trtllm-serve not found: run `just trt-install 0.0.0-absent`" in out.stderr
    (tmp_path / "on.yaml").write_text("kv_cache_config:\n  enable_block_reuse: true\n")
    out = serve(
        "trt-serve",
        TINY_LLAMA,
        "8123",
        "127.0.0.1",
        "--extra_llm_api_options",
        str(tmp_path / "on.yaml"),
        run_dir=tmp_path / "run",
    )
    assert out.returncode == 1 and "\nnote: this server keeps its prefix cache on" in out.stderr
    assert not (tmp_path / "run").exists()


def test_trt_recipe_refuses_dummy_weights_in_its_options_file(moe_model, tmp_path):
    (tmp_path / "dummy.yaml").write_text("load_format: dummy\n")
    out = serve(
        "trt-serve", moe_model, "8123", "127.0.0.1", "--config", str(tmp_path / "dummy.yaml"), run_dir=tmp_path / "run"
    )
    assert out.returncode == 2 and "refused: " in out.stderr and "note: " not in out.stderr
    assert "not found" not in out.stderr and not (tmp_path / "run").exists()
