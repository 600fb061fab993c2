"""What a run sends: its prompts (warm-up and measured, from the chosen dataset, the tokenizer found
and the lengths checked against the model's limit) and the request body each prompt becomes."""

from __future__ import annotations

from pathlib import Path

from bench.errors import UserError
from bench.instrument import dialect, probe, workload
from bench.instrument import session_trace_workload as more
from bench.instrument.spec import RunSpec


def _tokenizer_path(spec: RunSpec, info: probe.ServerInfo, recorded: str | None = None) -> str:
    """--tokenizer as given (it must exist), else the first model path that exists here (`recorded`: the
    serve record's, for a server that names its model without a path)."""
    if spec.tokenizer is not None:
        if not Path(spec.tokenizer).exists():
            raise UserError(
                f"--tokenizer {spec.tokenizer} does not exist; give the model's folder or its tokenizer.json"
            )
        return spec.tokenizer
    for candidate in (spec.model, info.root, info.model, recorded):
        if candidate and Path(candidate).exists():
            return candidate
    raise UserError("cannot find the model's tokenizer; pass --tokenizer with its folder or tokenizer.json")


def build_workload(
    spec: RunSpec, info: probe.ServerInfo, speaks: dialect.Dialect = dialect.DEFAULT, recorded: str | None = None
):
    """(warm-up prompts, measured prompts, the tokenizer, its file) for the chosen dataset; the probe
    request carries the fields the load will (ignore_eos), so a server that refuses one says so now."""
    api_key, extra = spec.api_key, spec.extra_body
    if spec.ignore_eos and speaks.ignore_eos:
        extra = {"ignore_eos": True, **extra}
    # The probe is a readiness check: a first-token timeout made short to catch slow measured requests
    # (tests use 0.1 s) must not refuse a server that answers in a second or two.
    wait = min(max(spec.first_token_timeout, 2.0), probe.FIRST_ANSWER_TIMEOUT)
    path = _tokenizer_path(spec, info, recorded)
    tok = workload.load_tokenizer(path)
    n = spec.num_prompts + spec.warmup
    if spec.dataset in more.KINDS:
        warm, prompts = more.build(spec, info, tok)
        return warm, prompts, tok, workload.tokenizer_file(path).resolve()
    if spec.dataset == "random":
        out_len = spec.output_len
        longest = (spec.input_len + out_len) * (1 + spec.range_ratio)
        if info.max_model_len and longest > info.max_model_len:
            raise UserError(
                f"input + output length ({longest:.0f} tokens) exceeds the model's limit of "
                f"{info.max_model_len}; lower --input-len/--output-len"
            )
        gen = workload.RandomPrompts(tok, seed=10**6 + spec.seed)
        overhead = probe.prompt_overhead(info, spec.api, gen.text(0, probe.PROBE_WORDS), api_key, extra, wait)
        prompts = workload.random_workload(
            tok, n, spec.input_len, out_len, spec.range_ratio, spec.seed, overhead, spec.prefix_len
        )
    else:
        if not spec.dataset_path:
            raise UserError(f"--dataset {spec.dataset} needs --dataset-path FILE")
        if spec.dataset == "sharegpt":
            prompts = workload.sharegpt_workload(spec.dataset_path, tok, n, spec.seed, spec.output_len)
        else:
            prompts = workload.jsonl_workload(spec.dataset_path, n, spec.output_len)
        probe.prompt_overhead(info, spec.api, "ping " * probe.PROBE_WORDS, api_key, extra, wait)
    if len(prompts) < n:
        raise UserError(f"the dataset yields {len(prompts)} usable prompts, fewer than the {n} asked for")
    return prompts[: spec.warmup], prompts[spec.warmup :], tok, workload.tokenizer_file(path).resolve()


def request_body(model: str, api: str, ignore_eos: bool, extra: dict, speaks: dialect.Dialect = dialect.DEFAULT):
    stream_options = {"include_usage": True, "continuous_usage_stats": True}

    def make(prompt: workload.Prompt) -> dict:
        body = {"model": model, "stream": True, "temperature": 0.0}
        if speaks.stream_options:
            body["stream_options"] = stream_options
        if prompt.messages is not None:
            body["messages"] = prompt.messages
        elif api == "chat":
            body["messages"] = [{"role": "user", "content": prompt.text}]
        else:
            body["prompt"] = prompt.text
        if prompt.output_len:
            body["max_tokens"] = prompt.output_len
        if ignore_eos:
            body["ignore_eos"] = True
        body.update(extra)
        return body

    return make
