"""What the serve side knows about each engine, as data: one row per engine, read by the guards,
and one table per engine of what caps a run (CAPS), read by the fit check (bench.serve.fit).

A guard asks the row how this engine spells a thing (the load-format flag, the file of options,
the prefix-cache switch) instead of branching on the engine's name; a new engine is a new row.
Only what code here uses is kept. The spellings are those of the pinned versions in
scripts/<engine>.just (TensorRT-LLM's: recipes/engines/trtllm-*.toml).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

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
        # Transformers' `transformers serve` (5.19, scripts/transformers.just) loads real weights (no load-format
        # flag, no options file) and has no prefix cache to turn off. What the client must not send it (ignore_eos,
        # stream_options) is the instrument's table, bench/instrument/dialect.py; it lists on /v1/models only the
        # models in the Hugging Face cache folder (HF_HOME), and reports usage in the last chunk only.
        Engine("transformers", options_flags=(), load_format_flags=(), load_format_keys=()),
    )
}


def engine(name: str) -> Engine:
    """The row for `name`; a UserError naming the known engines when there is none."""
    try:
        return ENGINES[name]
    except KeyError:
        raise UserError(f"unknown engine {name!r}: the known engines are {', '.join(sorted(ENGINES))}") from None


# What caps a run, per engine: read by the fit check (bench.serve.fit), which compares a serve command's
# limits with a scenario set's concurrencies and lengths. Defaults are those of the pinned versions on one
# H200 (141 GB): vLLM 0.32 and SGLang 0.5.23 pick some of them by the GPU's memory, so another GPU may differ.
# None as a default means it cannot be known from the command: derived from the model's config.json, or
# from the memory left for the KV cache at start-up. Each source was read at the pin (file: function).


@dataclass(frozen=True)
class Knob:
    flags: tuple[str, ...]  # command-line spellings, the main one first; the smallest value given wins
    keys: tuple[str, ...] = ()  # the same setting as an options-file key (dotted: a nested key)
    default: int | None = None  # at the pin on an H200; None: not known from the command
    unknown: str = ""  # what decides it when there is no default


@dataclass(frozen=True)
class Caps:
    running: Knob  # requests the server runs at once (the rest queue inside it)
    seq_len: Knob  # input + output tokens of one request
    step_tokens: Knob  # tokens one step schedules: the whole prompt must fit when chunked prefill is off
    graph: Knob  # largest batch (requests, per rank) run inside a CUDA graph; larger ones run eagerly
    graph_tokens: bool = False  # the graph sizes count tokens (a request decodes 1 + draft tokens per step)
    graph_small_tp: int | None = None  # the graph default below TP 4, when it differs
    graph_off: tuple[str, ...] = ()  # flags that turn CUDA graphs off
    chunked: bool = True  # chunked prefill is on by default
    chunked_on: tuple[str, ...] = ()  # flags (or keys) that turn it on
    chunked_off: tuple[str, ...] = ()  # ... and off
    prompt_fits_step: bool = True  # with chunked prefill off, a prompt over step_tokens is refused
    dp: tuple[str, ...] = ()  # flags counting data-parallel ranks with limits of their own (each rank a scheduler)
    shared_dp: bool = False  # attention-DP ranks share the running limit (SGLang); the graph stays per rank
    adp_key: str | None = None  # options key spreading attention over the TP ranks, each with its own limits
    tp: tuple[str, ...] = ()  # tensor-parallel size flags
    spec: tuple[str, ...] = ()  # flags that turn speculative decoding on
    spec_running: int | None = None  # the running limit speculative decoding sets when none is given
    json_flags: tuple[tuple[str, str], ...] = ()  # (flag, key): a flag whose JSON value reads as options[key]
    role_flags: tuple[str, ...] = ()  # flags saying prefill or decode in a disaggregated layout
    options_win: bool = False  # the options file overrides the command line (TensorRT-LLM), not the reverse
    too_long: str = "fails"  # what the server does when input + output exceed seq_len but the input fits
    model_flags: tuple[str, ...] = ()  # where the model path is given, when not the first word


MODEL_LEN = "the model's config.json"
MEMORY = "memory-derived"

# vLLM 0.32 (vllm/engine/arg_utils.py EngineArgs.get_batch_defaults: an OpenAI server on a GPU of 70 GiB or more
# that is not an A100 gets --max-num-seqs 1024 and --max-num-batched-tokens 8192; `--performance-mode
# throughput` doubles both). Each --data-parallel-size rank is an engine core with a scheduler of its own, so
# the limits are per rank (vllm/config/scheduler.py SchedulerConfig: "max_num_seqs, which applies per
# data-parallel rank"; vllm/v1/engine/core.py EngineCore.__init__ builds one Scheduler per core). Chunked
# prefill is on for generative models (EngineArgs._set_default_chunked_prefill_and_prefix_caching_args). CUDA
# graphs are captured up to min(2 x max_num_seqs x tokens per request, 512) tokens, no more than
# max_num_batched_tokens (vllm/config/vllm.py VllmConfig._set_cudagraph_sizes). An input longer than
# --max-model-len fails; input + output over it cuts the output (vllm/entrypoints/serve/utils/api_utils.py
# get_max_tokens clamps max_tokens).
VLLM = Caps(
    running=Knob(("--max-num-seqs", "--max-num-active-seqs"), default=1024),
    seq_len=Knob(("--max-model-len",), unknown=MODEL_LEN),
    step_tokens=Knob(("--max-num-batched-tokens",), default=8192),
    graph=Knob(
        ("--max-cudagraph-capture-size", "--cudagraph-capture-sizes"),
        keys=("compilation_config.max_cudagraph_capture_size", "compilation_config.cudagraph_capture_sizes"),
        default=512,
    ),
    graph_tokens=True,
    graph_off=("--enforce-eager",),
    chunked_on=("--enable-chunked-prefill",),
    chunked_off=("--no-enable-chunked-prefill",),
    dp=("--data-parallel-size", "-dp"),
    tp=("--tensor-parallel-size", "-tp"),
    spec=("--speculative-config",),
    json_flags=(
        ("--compilation-config", "compilation_config"),
        ("-cc", "compilation_config"),
        ("--speculative-config", "speculative_config"),
        ("--kv-transfer-config", "kv_transfer_config"),
    ),
    role_flags=("--kv-transfer-config",),
    too_long="cuts the output",
    model_flags=("--model",),
)
# The CPU build (the embedded engine, `just cpu-serve`): get_batch_defaults' CPU branch gives an OpenAI server
# 128 sequences and 2048 tokens per step (x the TP x PP size); no CUDA graphs.
VLLM_CPU = replace(
    VLLM,
    running=replace(VLLM.running, default=128),
    step_tokens=replace(VLLM.step_tokens, default=2048),
    graph=Knob(()),
)

# SGLang 0.5.23 (sglang/srt/arg_groups/...). --max-running-requests, when not given, is sized from the KV
# pool at start-up (model_executor/pool_configurator.py); speculative decoding sets it to 48
# (speculative_hook.py _handle_eagle_family and the other algorithms' handlers). It counts the whole server:
# each attention-DP rank gets max_running_requests // attn_dp_size (pool_configurator.py
# requested_max_running_requests_per_worker), while --dp-size replicas each get it whole
# (managers/data_parallel_controller.py launch_dp_schedulers passes the same arguments to every replica).
# On an H200 --chunked-prefill-size is 8192 and the decode CUDA graphs go to batch 512 with TP >= 4, else 256
# (memory_hook.py _handle_gpu_memory_settings); the graph batch is per attention-DP rank
# (model_executor/runner/decode_cuda_graph_runner.py can_run_graph compares the largest rank's batch). A prompt
# is never refused for the chunk size. An input at or over --context-length, or input + output over it,
# fails (managers/tokenizer_manager.py _validate_one_request) unless --allow-auto-truncate.
SGLANG = Caps(
    running=Knob(("--max-running-requests",), unknown=MEMORY),
    seq_len=Knob(("--context-length",), unknown=MODEL_LEN),
    step_tokens=Knob(("--chunked-prefill-size",), default=8192),
    graph=Knob(("--cuda-graph-max-bs-decode", "--cuda-graph-bs-decode", "--cuda-graph-max-bs"), default=512),
    graph_small_tp=256,
    graph_off=("--disable-cuda-graph",),
    prompt_fits_step=False,
    dp=("--dp-size", "--data-parallel-size", "--dp"),
    shared_dp=True,
    tp=("--tp-size", "--tensor-parallel-size", "--tp"),
    spec=("--speculative-algorithm",),
    spec_running=48,
    role_flags=("--disaggregation-mode",),
    model_flags=("--model-path", "--model"),
)

# TensorRT-LLM 1.3.0rc14: trtllm-serve's defaults come from BuildConfig (max_batch_size 2048, max_num_tokens
# 8192, max_seq_len from the model: tensorrt_llm/builder.py BuildConfig, _init_max_seq_len; the click options in
# tensorrt_llm/commands/serve.py), and the --config / --extra_llm_api_options file overrides them
# (serve.py: update_llm_args_with_extra_dict after get_llm_args). Chunked prefill is off by default
# (get_llm_args), so a prompt over max_num_tokens fails (llmapi/llm.py _check_arguments). An input at
# max_seq_len fails; input + output over it cuts the output to max_seq_len - input (llm.py: max_tokens
# falls back to the deduced default_max_tokens, with a warning). CUDA graphs are on up to batch 128 unless
# the file says otherwise (llmapi/llm_args.py: TorchLlmArgs.cuda_graph_config default_factory,
# BaseCudaGraphConfig's validator). With enable_attention_dp every TP rank schedules its own requests, up to
# max_batch_size each (_torch/pyexecutor: PyExecutor.max_num_active_requests = get_max_num_sequences(), and
# the ADP router's "maximum active requests per rank").
TRTLLM = Caps(
    running=Knob(("--max_batch_size",), keys=("max_batch_size",), default=2048),
    seq_len=Knob(("--max_seq_len",), keys=("max_seq_len",), unknown=MODEL_LEN),
    step_tokens=Knob(("--max_num_tokens",), keys=("max_num_tokens",), default=8192),
    graph=Knob(
        (),
        keys=(
            "cuda_graph_config.max_batch_size",
            "cuda_graph_config.batch_sizes",
            "pytorch_backend_config.cuda_graph_batch_sizes",  # the April 2025 layout
        ),
        default=128,
    ),
    chunked=False,
    chunked_on=("--enable_chunked_prefill", "enable_chunked_prefill"),
    adp_key="enable_attention_dp",
    tp=("--tp_size", "--tensor_parallel_size", "tensor_parallel_size"),
    role_flags=("--server_role",),
    options_win=True,
    too_long="cuts the output",
)

CAPS = {"vllm": VLLM, "vllm-cpu": VLLM_CPU, "sglang": SGLANG, "trtllm": TRTLLM}
