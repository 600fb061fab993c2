"""The limits a serve command sets, read from its words and the options files it names.

A recorded or rendered serve command is one shell line, or one line per process of a layout ("NAME:
command", as bench.serve.launcher's groups write it). Each line that starts an engine (vLLM's `serve`,
SGLang's `sglang.launch_server`, `trtllm-serve`) becomes a Server: how many requests it runs at once, the
longest request, the tokens one step takes, the largest batch inside a CUDA graph, each with the flag that
sets it. Where the flags and defaults live is data (bench.serve.engines.CAPS); a line that starts no engine
(a router, a proxy) is a front door and caps nothing here. `trtllm-serve disaggregated -c FILE` is a front
door whose file describes its servers: they are read from it when no line starts them.
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from bench.serve import guards
from bench.serve.engines import CAPS, ENGINES, MEMORY, MODEL_LEN, Caps, Knob
from bench.serve.options import read_options, read_yaml

NAMED = re.compile(r"([A-Za-z0-9_.@-]+): (\S.*)")  # "NAME: command", a layout's line
# A server's part in a prefill/decode layout: the engine's own flag says it (SGLang --disaggregation-mode,
# TensorRT-LLM --server_role, vLLM's kv_role in --kv-transfer-config), else these words in the process's
# name or its options file's name (trt-serve-disagg's disagg-ctx.yaml); else it does both.
ROLES = {"prefill": "prefill", "context": "prefill", "kv_producer": "prefill"}
ROLES |= {"decode": "decode", "generation": "decode", "kv_consumer": "decode"}
ROLE_WORDS = {"prefill": "prefill", "context": "prefill", "ctx": "prefill"}
ROLE_WORDS |= {"decode": "decode", "generation": "decode", "gen": "decode"}


class Limit(NamedTuple):
    value: int | None  # None: unknown (see how), or no such limit (CUDA graphs off)
    how: str  # the flag or key that sets it, "default FLAG", or why it is unknown


@dataclass
class Server:
    name: str
    engine: str
    role: str  # "prefill", "decode", or "both" (not disaggregated)
    running: Limit  # requests run at once, over all its DP ranks
    seq_len: Limit  # input + output of one request
    step_tokens: Limit  # tokens per step (per rank)
    chunked: bool  # chunked prefill on: a prompt longer than a step is split
    graph: Limit  # largest batch per rank inside a CUDA graph, in requests
    ranks: int  # ranks a batch is spread over (each with its own CUDA graphs)
    caps: Caps
    notes: list[str] = field(default_factory=list)


def lines(text: str) -> list[tuple[str, list[str]]]:
    """(name, words) of every command in a one-line or one-line-per-process record."""
    commands = [line.strip().removeprefix("+ ") for line in text.splitlines()]
    commands = [line for line in commands if line and not line.startswith("#")]
    out = []
    for n, line in enumerate(commands, 1):
        named = NAMED.fullmatch(line)
        name, command = named.groups() if named else ("server" if len(commands) == 1 else f"process {n}", line)
        try:
            out.append((name, shlex.split(command)))
        except ValueError:
            out.append((name, command.split()))
    return out


def locate(words: list[str]) -> tuple[str, list[str]] | None:
    """(engine, its own arguments) for a command that starts an engine, else None."""
    for i, w in enumerate(words):
        if w == "sglang.launch_server":
            return "sglang", words[i + 1 :]
        if w == "trtllm-serve" or w.endswith("/trtllm-serve"):
            rest = words[i + 1 :]
            if rest[:1] == ["disaggregated"]:
                return "trtllm-disaggregated", rest[1:]
            return "trtllm", rest[1:] if rest[:1] == ["serve"] else rest
        if w == "vllm.entrypoints.openai.api_server" or (w == "serve" and any("vllm" in x for x in words[:i])):
            return "vllm", words[i + 1 :]
    return None


def flag_values(argv: list[str], flag: str) -> list[str] | None:
    """The values after the last `flag` (`--f v`, `--f=v`, or a list `--f 1 2 4`); [] for a bare switch."""
    found = None
    for i, arg in enumerate(argv):
        if arg.startswith(flag + "="):
            found = [arg[len(flag) + 1 :]]
        elif arg == flag:
            found = argv[i + 1 : i + 2] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else []
            found += [x for x in _takewhile_ints(argv[i + 2 :])] if found else []
    return found


def _takewhile_ints(words: list[str]):
    for w in words:
        if not re.fullmatch(r"\d+", w):
            return
        yield w


def number(value) -> int | None:
    """An int from an option's value: 8192, "8k" (10^3), "8K" (2^10), or a list's largest."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, list):
        values = [number(v) for v in value]
        return max((v for v in values if v is not None), default=None)
    text = str(value).strip().strip("[]").replace(",", " ")
    if " " in text.strip():
        return number(text.split())
    m = re.fullmatch(r"(-?\d+(?:\.\d+)?)([kKmMgG]?)", text)
    if not m:
        return None
    scale = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "K": 2**10, "M": 2**20, "G": 2**30}[m.group(2)]
    return int(float(m.group(1)) * scale)


def lookup(argv: list[str], options: dict, names: tuple[str, ...], options_win: bool):
    """(value, name) of the first of `names` the command gives: flags on its command line, keys
    (dotted for nested ones) in its options; a flag also read as its key (`--max-num-seqs` as
    max_num_seqs or max-num-seqs), as vLLM's and SGLang's --config files spell them."""
    found_flag = found_key = None
    for name in names:
        if name.startswith("-") and found_flag is None and (v := flag_values(argv, name)) is not None:
            found_flag = (v if len(v) > 1 else (v[0] if v else True)), name
        keys = [name.lstrip("-"), name.lstrip("-").replace("-", "_")] if name.startswith("--") else [name]
        for key in keys if found_key is None else ():
            node = options
            for part in key.split("."):
                node = node.get(part, KeyError) if isinstance(node, dict) else KeyError
            if node is not KeyError:
                found_key = node, name
    first, second = (found_key, found_flag) if options_win else (found_flag, found_key)
    return first or second or (None, None)


def limit(argv: list[str], options: dict, knob: Knob, caps: Caps) -> Limit:
    """The knob's value: the smallest the command sets (vLLM's --max-num-active-seqs below --max-num-seqs),
    else its default; Limit(None, "") when neither."""
    given = [lookup(argv, options, (name,), caps.options_win) for name in knob.flags + knob.keys]
    given = sorted((number(v), name) for v, name in given if name is not None and number(v) is not None)
    if given:
        return Limit(*given[0])
    return Limit(knob.default, f"default {(knob.flags or knob.keys)[0]}") if knob.default else Limit(None, "")


def model_len(args: list[str], caps: Caps, hint: int | None) -> Limit:
    """The model's own limit: max_position_embeddings of its config.json, else what the server said."""
    given = guards.option_values(args, *caps.model_flags)
    model = given[-1] if given else (args[0] if args and not args[0].startswith("-") else None)
    config = guards.read_model_config(model) if model else None
    if config and isinstance(config.get("max_position_embeddings"), int):
        return Limit(config["max_position_embeddings"], "the model's max_position_embeddings")
    return Limit(hint, "the server's max_model_len") if hint else Limit(None, f"unknown ({MODEL_LEN})")


def servers(text: str, engine: str | None = None, model_hint: int | None = None) -> tuple[list[Server], list[str]]:
    """Every engine server a record or rendered recipe starts, and the names of its front doors. `engine`
    (the record's) picks a table for a command of that family, e.g. vllm-cpu for the embedded engine's."""
    found, doors, disaggregated = [], [], []
    for name, words in lines(text):
        kind, args = locate(words) or ("", [])
        if kind in CAPS:
            found.append(server(name, engine if engine in CAPS and engine.startswith(kind) else kind, args, model_hint))
        else:
            doors.append(name)
            if kind == "trtllm-disaggregated":
                disaggregated += guards.option_values(args, "-c", "--config_file")[-1:]
    for path in disaggregated if not found else ():
        found += from_disaggregated_config(path, model_hint)
    return found, doors


def from_disaggregated_config(path: str, model_hint: int | None) -> list[Server]:
    """The servers of a `trtllm-serve disaggregated` file: context_servers prefill, generation_servers
    decode, each block's num_instances alike servers with the block's options."""
    try:
        config = read_yaml(Path(path).read_text())
    except (OSError, ValueError):
        return []
    out = []
    for key, role in (("context_servers", "prefill"), ("generation_servers", "decode")):
        if isinstance(block := config.get(key), dict):
            n = number(block.get("num_instances")) or 1
            s = server(f"{path}: {key}", "trtllm", [], model_hint, options=block)
            s.role, s.ranks = role, s.ranks * n
            s.running = Limit(s.running.value * n, f"{s.running.how} x {n} servers") if s.running.value else s.running
            out.append(s)
    return out


def server(name: str, engine: str, args: list[str], model_hint: int | None = None, options=None) -> Server:
    """The limits one engine command sets (engine: a key of CAPS; vllm-cpu for the embedded engine)."""
    caps, notes = CAPS[engine], []
    base = engine.split("-")[0]
    options = read_options(base, args, caps, notes) if options is None else options

    def flag_on(names: tuple[str, ...]) -> bool:
        return lookup(args, options, names, caps.options_win)[1] is not None

    tp = number(lookup(args, options, caps.tp, caps.options_win)[0]) or 1
    # Ranks with limits of their own: vLLM's DP ranks, SGLang's replicas, TensorRT-LLM's attention-DP ranks.
    attn_dp = guards.dp_attention_size(args) if caps.shared_dp else 1
    own = 1 if attn_dp > 1 else (number(lookup(args, options, caps.dp, False)[0]) or 1)
    if caps.adp_key and lookup(args, options, (caps.adp_key,), True)[0] is True:
        own = tp
    spec = flag_on(caps.spec) or "speculative_config" in options
    running = limit(args, options, caps.running, caps)
    if running.value is None and spec and caps.spec_running:
        running = Limit(caps.spec_running, f"speculative decoding's default; set {caps.running.flags[0]}")
    elif running.value is None:
        running = Limit(None, f"unknown ({caps.running.unknown or MEMORY})")
    step = limit(args, options, caps.step_tokens, caps)
    chunked = caps.chunked
    if flag_on(caps.chunked_on):
        chunked = lookup(args, options, caps.chunked_on, caps.options_win)[0] is not False
    if flag_on(caps.chunked_off) or (step.value is not None and step.value < 0):
        chunked = False
    seq = limit(args, options, caps.seq_len, caps)
    if not seq.how:
        seq = model_len(args, caps, model_hint)
    elif seq.value is None or seq.value < 0:  # vLLM's -1 / auto: as long as the memory allows
        seq = Limit(None, f"unknown ({MEMORY}: {seq.how} {lookup(args, options, (seq.how,), False)[0]})")
    graph = _graph(args, options, caps, tp, running, step, spec)
    if running.value is not None:
        running = Limit(running.value * own, running.how + (f" x {own} ranks" if own > 1 else ""))
    return Server(
        name, engine, role(name, base, args, caps), running, seq, step, chunked, graph, max(own, attn_dp), caps, notes
    )


def role(name: str, engine: str, args: list[str], caps: Caps) -> str:
    """The server's part in a layout: "prefill", "decode" or "both" (see ROLES)."""
    for value in (v for flag in caps.role_flags for v in guards.option_values(args, flag)):
        if said := next((ROLES[w] for w in ROLES if w in value.lower()), None):
            return said
    files = [Path(f).stem for f in guards.option_values(args, *ENGINES[engine].options_flags)]
    words = set(re.split(r"[^a-z]+", " ".join([name, *files]).lower()))
    return next((ROLE_WORDS[w] for w in ROLE_WORDS if w in words), "both")


def _graph(args, options, caps: Caps, tp: int, running: Limit, step: Limit, spec: bool) -> Limit:
    """The largest batch per rank run inside a CUDA graph, in requests; Limit(None, "off") without graphs."""
    if any(flag_values(args, f) is not None for f in caps.graph_off) or options.get("cuda_graph_config", 0) is None:
        return Limit(None, "off")
    graph = limit(args, options, caps.graph, caps)
    if graph.value is None and not caps.graph.default:
        return Limit(None, "off")  # an engine without CUDA graphs (the CPU build)
    per_request = 1
    if caps.graph_tokens and spec:  # vLLM: a request decodes 1 + num_speculative_tokens tokens per step
        per_request += number((options.get("speculative_config") or {}).get("num_speculative_tokens", 1)) or 1
    if graph.how.startswith("default"):
        value = caps.graph_small_tp if caps.graph_small_tp and tp < 4 else caps.graph.default
        if caps.graph_tokens and running.value:  # min(2 x max_num_seqs x tokens per request, 512, step tokens)
            value = min(value, 2 * running.value * per_request, step.value or value)
        graph = Limit(value, graph.how)
    return Limit(math.floor(graph.value / per_request), graph.how) if graph.value else graph
