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

# List the recipes, grouped.
[private]
default:
    @just --list --unsorted

# Run the test suite (installs the CPU engine on first use).
[group('develop')]
test *args: cpu-install sgl-parser-install
    python -m pytest {{args}}

# The demo: start the CPU engine, stream one request, stop the engine (even on failure).
[group('start here')]
demo port=cpu_port: cpu-install
    #!/usr/bin/env bash
    set -euo pipefail
    trap 'just cpu-stop {{port}} || true' EXIT
    just cpu-serve {{port}}
    just cpu-hello {{port}}
