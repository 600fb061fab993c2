"""What the serve side knows about each engine, as data: one row per engine, read by the guards.

A guard asks the row how this engine spells a thing (the load-format flag, the file of options,
the prefix-cache switch) instead of branching on the engine's name; a new engine is a new row.
Only what code here uses is kept. The spellings are those of the pinned versions in
scripts/<engine>.just (TensorRT-LLM's: recipes/engines/trtllm-*.toml).
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.errors import UserError


@dataclass(frozen=True)
class Engine:
    name: str  # as serve recipes pass it to `--engine`
    options_flags: tuple[str, ...]  # flags naming a YAML file of options the engine reads as if given here
    load_format_flags: tuple[str, ...]  # command-line spellings of the load format (`--load-format dummy`)
    load_format_keys: tuple[str, ...]  # spellings of the same setting as a key of the options file
    prefix_cache_off_flag: str | None = None  # the flag that turns the prefix cache off
    prefix_cache_off_line: str | None = None  # or the options file's line that does (a regex)
    deepgemm_jit: bool = False  # compiles DeepGEMM kernels on first use, into a cache folder worth filling first


ENGINES = {
    e.name: e
    for e in (
        # vLLM's parser takes `--load_format` for `--load-format`; its --config file takes both key spellings.
        Engine(
            "vllm",
            options_flags=("--config",),
            load_format_flags=("--load-format", "--load_format"),
            load_format_keys=("load-format", "load_format"),
            prefix_cache_off_flag="--no-enable-prefix-caching",
        ),
        Engine(
            "sglang",
            options_flags=("--config",),
            load_format_flags=("--load-format",),
            load_format_keys=("load-format", "load_format"),
            prefix_cache_off_flag="--disable-radix-cache",
            deepgemm_jit=True,
        ),
        # trtllm-serve has no load-format flag and no prefix-cache flag: both live in its options file
        # (`--extra_llm_api_options`, also spelled `--config` in newer builds).
        Engine(
            "trtllm",
            options_flags=("--config", "--extra_llm_api_options"),
            load_format_flags=(),
            load_format_keys=("load_format",),
            prefix_cache_off_line=r"^[^\S\n]*enable_block_reuse:[^\S\n]*false",  # after blanks only, not in a comment
        ),
    )
}


def engine(name: str) -> Engine:
    """The row for `name`; a UserError naming the known engines when there is none."""
    try:
        return ENGINES[name]
    except KeyError:
        raise UserError(f"unknown engine {name!r}: the known engines are {', '.join(sorted(ENGINES))}") from None
