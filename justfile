# LLM serving benchmarks: start an engine in an exact layout, measure it, compare.
# `just` alone lists every recipe, grouped; recipes run from this folder.

set shell := ["bash", "-euo", "pipefail", "-c"]
set positional-arguments := false

# The project's own tools come first on PATH (`bench`, `just`, `python`).
export PATH := justfile_directory() / ".venv/bin:" + env("PATH")

MODEL := env("MODEL", "/DeepSeek-R1")
PORT := env("PORT", "8000")
HOST := env("HOST", "127.0.0.1")
RESULTS := env("RESULTS", justfile_directory() / "results")

import 'scripts/cpu.just'
import 'scripts/serve.just'
import 'scripts/vllm.just'
import 'scripts/sgl.just'
import 'scripts/trt.just'
import 'scripts/transformers.just'
import 'scripts/bench.just'
import 'scripts/gpu.just'

# List the recipes, grouped.
[private]
default:
    @just --list --unsorted

# Run the test suite (installs the CPU engine on first use).
[group('develop')]
test *args: cpu-install tf-install sgl-parser-install vllm-parser-install
    python -m pytest {{args}}

# Lint and format check (ruff, settings in pyproject.toml); `ruff check --fix` and `ruff format` mend.
[group('develop')]
lint:
    @ruff check bench tests scripts
    @ruff format --check bench tests scripts

