"""Guards a serve recipe runs before it starts an engine: refuse what gives misleading numbers.

Each guard is a pure function of the command line (with the model's config.json, or the text of
the options files the command names) that returns a sentence saying what is wrong and how to fix
it, or None. What differs between engines (flag spellings, options files, which caches apply) is
read from their rows in bench.serve.engines, not branched on. The command line entry
    python -m bench.serve.guards --engine sglang --model /DeepSeek-R1 [--deepgemm-cache DIR] -- CMD...
prints every warning and refusal on stderr and exits 2 if anything was refused, before anything
heavy starts; otherwise it prints its notes (e.g. that the prefix cache stays on) and exits 0.
An unknown engine is one `python -m bench.serve.guards: ...` sentence and exit 2.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import NamedTuple

from bench.errors import exit_status
from bench.serve import engines
from bench.serve.engines import ENGINES, Engine

PROG = "python -m bench.serve.guards"
# config.json keys by which MoE models declare their routed experts.
EXPERT_KEYS = ("n_routed_experts", "num_experts", "num_local_experts")


def option_values(argv: list[str], *names: str) -> list[str]:
    """Values given to any of `names`, as `--name value` or `--name=value`, in order."""
    out = []
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                out.append(argv[i + 1])
            elif arg.startswith(name + "="):
                out.append(arg[len(name) + 1 :])
    return out


def read_model_config(model: str) -> dict | None:
    """The model folder's config.json, or None when the model is not a readable local folder."""
    try:
        config = json.loads((Path(model) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def declares_experts(config: dict) -> bool:
    """True when the config (or its nested text_config) declares more than one routed expert."""
    for section in (config, config.get("text_config")):
        if isinstance(section, dict):
            for key in EXPERT_KEYS:
                value = section.get(key)
                if isinstance(value, int) and not isinstance(value, bool) and value > 1:
                    return True
    return False


def wants_dummy_weights(engine: Engine, argv: list[str], options_texts: list[str] = ()) -> bool:
    """The engine's load-format flag says dummy, or its key does in one of the options files."""
    if any(v.lower() == "dummy" for v in option_values(argv, *engine.load_format_flags)):
        return True
    keys = "|".join(re.escape(key) for key in engine.load_format_keys)
    pattern = rf"^\s*(?:{keys}):\s*['\"]?dummy\b"
    return bool(keys) and any(re.search(pattern, text, re.I | re.M) for text in options_texts)


def dummy_weights_error(dummy: bool, config: dict | None, model: str) -> str | None:
    if not dummy or config is None or not declares_experts(config):
        return None
    return (
        f"{model} is a mixture-of-experts model, and dummy weights route its tokens to experts unlike "
        f"real ones, so throughput looks better than it is: serve the real weights (drop "
        f"--load-format dummy) or use a dense model"
    )


def dummy_weights_unknown(dummy: bool, config: dict | None, model: str) -> str | None:
    if not dummy or config is not None:
        return None
    return (
        f"dummy weights with {model}, whose config.json cannot be read here: make sure it is a dense "
        f"model, since dummy weights make mixture-of-experts throughput look better than it is"
    )


def dp_attention_size(argv: list[str]) -> int:
    """Attention data-parallel size of an SGLang command (1 when off)."""
    sizes = option_values(argv, "--attn-dp-size", "--attention-data-parallel-size")
    if sizes:
        try:
            return int(sizes[-1])
        except ValueError:
            return 1
    if "--enable-dp-attention" in argv:  # the April 2025 spelling, with --dp-size as the size
        dp = option_values(argv, "--dp-size", "--data-parallel-size", "--dp")
        return int(dp[-1]) if dp and dp[-1].isdigit() else 2
    return 1


def compile_with_dp_attention_error(argv: list[str]) -> str | None:
    if "--enable-torch-compile" not in argv or dp_attention_size(argv) <= 1:
        return None
    return (
        "SGLang's --enable-torch-compile does not work together with DP attention: use `just "
        "sgl-serve-compile` (torch compile + EP) or `just sgl-serve-dp` (DP attention + EP, no compile)"
    )


def deepgemm_cache_warning(cache_dir: Path) -> str | None:
    """Warn when SGLang's DeepGEMM kernel cache is missing or empty (the first sweep would pay for JIT)."""
    try:
        empty = not any(Path(cache_dir).iterdir())
    except OSError:
        empty = True
    if not empty:
        return None
    return (
        f"the DeepGEMM cache {cache_dir} is empty or missing: SGLang compiles its kernels on first use and the "
        f"first sweep runs at about half speed; precompile once with `python3 -m "
        f"sglang.compile_deep_gemm --model-path MODEL --tp-size 8 --trust-remote-code` in the same venv "
        f"or container, or run a warm-up sweep and discard it"
    )


def prefix_cache_note(engine: Engine, argv: list[str], options: dict[str, str]) -> str | None:
    """Say so when the prefix cache stays on: the engine's off flag is not given, and the last options
    file named (the one the engine uses) has no line turning it off, or cannot be read."""
    if engine.prefix_cache_off_flag is not None and engine.prefix_cache_off_flag in argv:
        return None
    files = option_values(argv, *engine.options_flags)
    line = engine.prefix_cache_off_line
    if line is not None and files and re.search(line, options.get(files[-1], ""), re.M):
        return None
    return (
        "this server keeps its prefix cache on: restart it between scenarios (bench campaign --hook CMD runs CMD there)"
    )


def read_options(engine: Engine, argv: list[str]) -> dict[str, str]:
    """The text of each options file the command names, by path as given; unreadable ones left out."""
    texts = {}
    for file in option_values(argv, *engine.options_flags):
        try:
            texts[file] = Path(file).read_text(errors="replace")
        except OSError:
            pass
    return texts


class Verdict(NamedTuple):
    refusals: list[str]  # each stops the recipe (exit 2) before anything heavy starts
    warnings: list[str]  # printed; the recipe goes on
    notes: list[str]  # how the server will behave; printed only when nothing was refused


def check(engine: str, model: str, argv: list[str], deepgemm_cache: Path | None = None) -> Verdict:
    """Every guard's verdict on one serve command of `engine` (a name in bench.serve.engines)."""
    spec = engines.engine(engine)
    config = read_model_config(model)
    options = read_options(spec, argv)
    dummy = wants_dummy_weights(spec, argv, list(options.values()))
    refusals = [dummy_weights_error(dummy, config, model), compile_with_dp_attention_error(argv)]
    warnings = [dummy_weights_unknown(dummy, config, model)]
    if spec.deepgemm_jit and deepgemm_cache is not None:
        warnings.append(deepgemm_cache_warning(deepgemm_cache))
    notes = [prefix_cache_note(spec, argv, options)]
    return Verdict(*([m for m in messages if m] for messages in (refusals, warnings, notes)))


def report(verdict: Verdict) -> int:
    """Print the verdict on stderr; 2 when anything was refused (a refused server gets no notes)."""
    for message in verdict.warnings:
        print(f"warning: {message}", file=sys.stderr)
    for message in verdict.refusals:
        print(f"refused: {message}", file=sys.stderr)
    if verdict.refusals:
        return 2
    for message in verdict.notes:
        print(f"note: {message}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", required=True, help=f"Engine the command starts: one of {', '.join(sorted(ENGINES))}.")
    p.add_argument("--model", required=True, help="Model path the command serves; its config.json is read.")
    p.add_argument("--deepgemm-cache", type=Path, help="SGLang's DeepGEMM cache folder, to warn when empty.")
    p.add_argument("command", nargs=argparse.REMAINDER, help="The serve command, after --.")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    return exit_status(PROG, lambda: report(check(args.engine, args.model, command, args.deepgemm_cache)))


if __name__ == "__main__":
    sys.exit(main())
