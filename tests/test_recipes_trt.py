"""TensorRT-LLM recipes: the April 2025 commands exactly as the seed ran them, every current command and
options file (single servers and the disaggregated layouts) against the pinned option lists, the sizes
against the scenario sets, and scripts/trt_options.py, which writes those lists from the engine's source.
Commands are rendered with PRINT=1 (nothing starts); no engine is run or imitated."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
JUST = str(ROOT / ".venv" / "bin" / "just")
SEEDS = ROOT.parent / "shared" / "seeds"  # the seed document and repository, beside the checkout (not in it)
TRT_JUST = (ROOT / "scripts" / "trt.just").read_text()
PIN = re.search(r'trt_version := env\("TRT_VERSION", "([^"]+)"\)', TRT_JUST).group(1)
SPEC = tomllib.loads((ROOT / "recipes" / "engines" / f"trtllm-{PIN}.toml").read_text())
NODES = {"trt-serve-2node": ["10.0.0.1", "10.0.0.2"], "trt-serve-disagg-2node": ["10.0.0.1", "10.0.0.2"]}
BUILD_COMMIT = "2e669133c2767733c89375953bc4a94363e37985"  # seed document, 04/16/2025: the build that worked with EP

# ---- the seed's TensorRT-LLM commands, as data ----
# `argv`: trtllm-serve's arguments after the model, as the seed wrote them (the recipes add only --host and
# --port). `options`: the options file's keys and values. `source`: where the seed says so, relative to
# shared/seeds/; the test checks the text is there when the seed folder is.
SEED = {
    # "But the working version is the following (except 30k input)": seed document, 04/16/2025, also in
    # r1-benchmark-repo/at-125389c/scripts_trt.just (step 3) and the README's "Flags" of commit bb5e618.
    "trt-0425-serve": {
        "argv": "--backend pytorch --tp_size 8 --ep_size 8 --kv_cache_free_gpu_memory_fraction 0.8 "
        "--max_batch_size 50 --max_num_tokens 11000",
        "options": None,
        "source": "000_6174fd2ea080c424.txt",
    },
    # The command behind the published 2025-04-18 results: r1-benchmark-repo/at-HEAD/LOG.md, 04/18/2025
    # ("For all the workloads except the 30000/100 dataset"), and at-HEAD/trt-guide.md step 4.
    "trt-0425-serve-0418": {
        "argv": "--backend pytorch --tp_size 8 --ep_size 8 --max_num_tokens 11000 "
        "--kv_cache_free_gpu_memory_fraction 0.80 --trust_remote_code --extra_llm_api_options",
        # at-HEAD/LOG.md 04/18/2025 and trt-guide.md step 3 (block reuse left on: "This cause OOM").
        "options": {
            "pytorch_backend_config": {
                "enable_overlap_scheduler": True,
                "use_cuda_graph": True,
                "cuda_graph_max_batch_size": 256,
                "cuda_graph_padding_enabled": True,
            }
        },
        "source": "r1-benchmark-repo/at-HEAD/trt-guide.md",
    },
    # NVIDIA's original recommendation: seed document, 04/16/2025 (its YAML lost its indentation there;
    # the file itself is r1-benchmark-repo/at-bfdda0d/configs_trtllm-deepseek-r1-options.yaml).
    "trt-0425-serve-nvidia": {
        "argv": "--backend pytorch --tp_size 8 --ep_size 8 --kv_cache_free_gpu_memory_fraction 0.90 "
        "--max_batch_size 576 --max_num_tokens 1664 --trust_remote_code --max_seq_len 2000 --extra_llm_api_options",
        "options": {
            "pytorch_backend_config": {
                "enable_overlap_scheduler": True,
                "use_cuda_graph": True,
                "cuda_graph_padding_enabled": True,
                "cuda_graph_batch_sizes": [1, 576],
            },
            "enable_attention_dp": True,
        },
        "source": "000_6174fd2ea080c424.txt",
    },
    # The 30000/100 command: at-HEAD/LOG.md 04/18/2025 and trt-guide.md step 5 ("no extra_llm_api_options").
    "trt-0425-serve-long": {
        "argv": "--backend pytorch --tp_size 8 --ep_size 8 --kv_cache_free_gpu_memory_fraction .60 "
        "--max_batch_size 50 --max_seq_len 31000 --max_num_tokens 31000 --trust_remote_code",
        "options": None,
        "source": "r1-benchmark-repo/at-HEAD/LOG.md",
    },
}
SEED_OPTION_FILES = {  # where each seed options file is kept verbatim in the seed repository
    "trt-0425-serve-nvidia": "r1-benchmark-repo/at-bfdda0d/configs_trtllm-deepseek-r1-options.yaml",
}


def just(*args: str, **env: str) -> subprocess.CompletedProcess:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("TRT_", "BENCH_", "PRINT"))}
    base = {"MODEL": "/DeepSeek-R1", "PORT": "8000", "HOST": "127.0.0.1", "PRINT": "1"}
    return subprocess.run(
        [JUST, "--justfile", str(ROOT / "justfile"), *args],
        cwd=ROOT,
        env={**keep, **base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def render(name: str, via: str = "docker") -> list[list[str]]:
    """The commands `just PRINT=1 <name>` prints, one word list per process."""
    out = just(name, *NODES.get(name.removesuffix("-slurm"), []), TRT_VIA=via)
    assert out.returncode == 0, f"just PRINT=1 {name} (TRT_VIA={via}) failed:\n{out.stderr}"
    return [shlex.split(line) for line in out.stdout.splitlines()]


def after(words: list[str], marker: str = "trtllm-serve") -> list[str]:
    i = next(i for i, w in enumerate(words) if w == marker or w.endswith("/" + marker))
    return words[i + 1 :]


def label(name: str) -> str:
    """The layout label (and launcher group) a recipe passes to its base recipe."""
    return re.search(rf'\n{re.escape(name)} [^\n]*\(_trt\w* "([^"]+)"', TRT_JUST).group(1)


def value(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


def trt_recipes(group: str) -> list[str]:
    dump = just("--dump", "--dump-format", "json")
    assert dump.returncode == 0, dump.stderr
    recipes = yaml.safe_load(dump.stdout)["recipes"]  # JSON is YAML
    groups = {
        n: [a["group"] for a in r["attributes"] if isinstance(a, dict) and "group" in a] for n, r in recipes.items()
    }
    return sorted(
        n
        for n, r in recipes.items()
        if n.startswith("trt-") and group in groups[n] and "port" in [p["name"] for p in r["parameters"]]
    )


CURRENT = trt_recipes("trt-llm")
REPRO = trt_recipes("repro 2025-04")


# ---- the April 2025 reproduction ----


@pytest.mark.parametrize("name", sorted(SEED))
def test_each_april_2025_recipe_is_the_seeds_command_exactly(name):
    (words,) = render(name)
    assert words[words.index("trtllm-serve") - 1] == f"tensorrt_llm/release:{BUILD_COMMIT}"
    argv = after(words)[1:]  # after the model
    for flag in ("--host", "--port"):  # the recipe's parameters, the only words the seed did not write
        i = argv.index(flag)
        del argv[i : i + 2]
    options_file = value(argv, "--extra_llm_api_options")
    if options_file:
        argv.remove(options_file)
    assert argv == SEED[name]["argv"].split()
    options = yaml.safe_load(Path(options_file).read_text()) if options_file else None
    assert options == SEED[name]["options"]


def test_every_april_2025_trt_recipe_has_the_seeds_command_as_data():
    assert set(REPRO) == set(SEED), "a trt-0425-* recipe without the seed's command in SEED (or the reverse)"


@pytest.mark.skipif(not SEEDS.is_dir(), reason="the seed folder (../shared/seeds) is not beside this checkout")
@pytest.mark.parametrize("name", sorted(SEED))
def test_the_seed_data_is_what_the_seed_says(name):
    text = " ".join((SEEDS / SEED[name]["source"]).read_text().split())
    assert SEED[name]["argv"] in text
    if name in SEED_OPTION_FILES:
        assert yaml.safe_load((SEEDS / SEED_OPTION_FILES[name]).read_text()) == SEED[name]["options"]
    elif SEED[name]["options"]:
        for key, val in SEED[name]["options"]["pytorch_backend_config"].items():
            assert f"{key}: {str(val).lower()}" in text


# ---- every current command and file against the pinned lists ----


def options_problems(options: dict, where: str = "") -> list[str]:
    keys, sections = SPEC["llm_args"]["keys"], SPEC["llm_args"]["sections"]
    problems = [f"unknown key {where}{k}" for k in options if k not in keys]
    for section, allowed in sections.items():
        if isinstance(options.get(section), dict):
            problems += [f"unknown key {where}{section}.{k}" for k in options[section] if k not in allowed]
    return problems


def serve_problems(argv: list[str]) -> list[str]:
    """What in trtllm-serve's arguments (model first) the pinned release does not have."""
    serve, problems = SPEC["serve"], []
    words = iter(argv[1:])
    for word in words:
        if word in serve["flag_options"]:
            continue
        if word not in serve["value_options"]:
            problems.append(f"unknown option {word}")
            continue
        val = next(words)
        if word == "--backend" and val not in serve["backend_choices"]:
            problems.append(f"unknown backend {val}")
        if word in ("--config", "--extra_llm_api_options"):
            problems += options_problems(yaml.safe_load(Path(val).read_text()) or {})
    return problems


FILL = {"HOST": "h", "PORT": "1", "MODEL": "/M", "CTX_HOST": "c", "CTX_PORT": "2", "GEN_HOST": "g", "GEN_PORT": "3"}


def front_config(name: str, **values: str) -> dict:
    """A disaggregated layout's front-end config as its recipe writes it, from the template in recipes/trt/."""
    template = ROOT / "recipes" / "trt" / ("disagg-2node.yaml" if "2node" in name else "disagg.yaml")
    text = template.read_text()
    for key, val in values.items():
        text = text.replace("${" + key + "}", val)
    assert "${" not in re.sub(r"#.*", "", text), f"{template.name}: a placeholder the recipe does not fill"
    return yaml.safe_load(text)


def disagg_problems(config: dict) -> list[str]:
    d = SPEC["disaggregated"]
    problems = options_problems({k: v for k, v in config.items() if k not in d["keys"]})
    for section in ("context_servers", "generation_servers"):
        server = {k: v for k, v in config[section].items() if k not in d["server_keys"]}
        problems += options_problems(server, f"{section}.")
    return problems


@pytest.mark.parametrize("via", ["docker", "venv"])
@pytest.mark.parametrize("name", CURRENT)
def test_every_current_command_and_file_is_known_to_the_pin(name, via):
    commands = render(name, via)
    assert commands
    for words in commands:
        argv = after(words)
        if argv[0] == "disaggregated":
            assert all(w in SPEC["disaggregated"]["options"] for w in argv[1::2]), argv
        elif argv[0] == "disaggregated_mpi_worker":
            assert argv[1] == "-c"
        else:
            assert not serve_problems(argv), f"{name}: {serve_problems(argv)}"
    if "disagg" in name:
        assert not disagg_problems(front_config(name, **FILL)), disagg_problems(front_config(name, **FILL))


@pytest.mark.parametrize("name", ["trt-serve-disagg", "trt-serve-disagg-2node"])
def test_a_disaggregated_front_end_knows_where_its_servers_are(name):
    commands = render(name)
    ports = {"PORT": "8000", "CTX_PORT": "8101", "GEN_PORT": "8102"}
    if name == "trt-serve-disagg":
        hosts = {"HOST": "127.0.0.1", "CTX_HOST": "127.0.0.1", "GEN_HOST": "127.0.0.1"}
        ctx, gen = (after(c) for c in commands[:2])
        assert [value(ctx, "--port"), value(gen, "--port")] == ["8101", "8102"]
        workers = {"ctx": ctx, "gen": gen}
        for role, devices in (("ctx", "0,1,2,3"), ("gen", "4,5,6,7")):  # the 4 + 4 split
            assert f"CUDA_VISIBLE_DEVICES={devices}" in commands[list(workers).index(role)]
        opts = {r: yaml.safe_load(Path(value(a, "--config")).read_text()) for r, a in workers.items()}
    else:
        hosts = {"HOST": "127.0.0.1", "CTX_HOST": "10.0.0.1", "GEN_HOST": "10.0.0.2"}
        servers = commands[0]
        assert servers[:5] == ["mpirun", "-np", "16", "-H", "10.0.0.1:8,10.0.0.2:8"]
    config = front_config(name, MODEL="/DeepSeek-R1", **hosts, **ports)
    assert (config["hostname"], config["port"]) == ("127.0.0.1", 8000)
    assert config["context_servers"]["urls"] == [f"{hosts['CTX_HOST']}:8101"]
    assert config["generation_servers"]["urls"] == [f"{hosts['GEN_HOST']}:8102"]
    for section in ("context_servers", "generation_servers"):
        assert config[section]["num_instances"] == len(config[section]["urls"])
    if name == "trt-serve-disagg-2node":
        opts = {"ctx": config["context_servers"], "gen": config["generation_servers"]}
        assert config["model"] == "/DeepSeek-R1"
    assert opts["ctx"]["disable_overlap_scheduler"] is True and opts["gen"]["enable_attention_dp"] is True
    for o in opts.values():  # both ends of the KV-cache transfer speak the same backend
        assert o["cache_transceiver_config"]["backend"] == opts["ctx"]["cache_transceiver_config"]["backend"]
        assert o["kv_cache_config"]["enable_block_reuse"] is False
    front = after(commands[-1])
    assert front[0] == "disaggregated" and value(front, "-c") == str(ROOT / ".run" / f"{label(name)}.yaml")
    assert value(front, "-r") == value(front, "-t")  # no 180 s cut on long generations


def test_the_recipe_fills_the_front_end_template_as_the_tests_do(tmp_path):
    """The recipes' `render` (bash) puts each ${NAME} in place, with values taken literally."""
    bash = just("--evaluate", "_trt_bash")
    assert bash.returncode == 0, bash.stderr
    script = bash.stdout + 'HOST=a PORT=9 MODEL="/m&x" CTX_HOST=c CTX_PORT=1 GEN_HOST=g GEN_PORT=2; render "$1"'
    out = subprocess.run(["bash", "-c", script, "render", str(ROOT / "recipes/trt/disagg-2node.yaml")], text=True,
                         capture_output=True, check=True).stdout  # fmt: skip
    config = yaml.safe_load(out)
    assert (config["hostname"], config["port"], config["model"]) == ("a", 9, "/m&x")
    assert config["context_servers"]["urls"] == ["c:1"] and config["generation_servers"]["urls"] == ["g:2"]


# ---- what the references set, and the sizes against the scenario sets ----


def serving_commands(name: str) -> list[tuple[list[str], list[str], dict]]:
    """(words, trtllm-serve arguments, options) of each server a current recipe starts."""
    out = []
    for words in render(name):
        argv = after(words)
        if argv[0] == "disaggregated":
            continue
        if argv[0] == "disaggregated_mpi_worker":
            config = front_config(name, **FILL)
            for section in ("context_servers", "generation_servers"):
                o = config[section]
                limits = ["--max_batch_size", o["max_batch_size"], "--max_num_tokens", o["max_num_tokens"]]
                out.append((words, ["/M", *map(str, limits), "--max_seq_len", str(o["max_seq_len"])], o))
            continue
        out.append((words, argv, yaml.safe_load(Path(value(argv, "--config")).read_text())))
    return out


@pytest.mark.parametrize("name", CURRENT)
def test_current_recipes_set_what_the_references_set(name):
    for words, argv, o in serving_commands(name):
        assert o["kv_cache_config"]["dtype"] == "fp8" and o["kv_cache_config"]["enable_block_reuse"] is False
        assert o["moe_config"]["backend"] == "CUTLASS"
        assert o["stream_interval"] == 1  # explicit, and the same as every engine here: one token per chunk
        graphs = o.get("cuda_graph_config")
        if graphs is not None:  # a prefill-only server runs without graphs; every other batch has one
            assert graphs["enable_padding"] is True and graphs["max_batch_size"] == int(value(argv, "--max_batch_size"))
        if o.get("enable_attention_dp") and "disagg" not in name:
            assert o["attention_dp_config"]["enable_balance"] is True
            assert "PYTORCH_ALLOC_CONF=max_split_size_mb:8192" in words


def scenario_needs() -> tuple[int, int, int]:
    """(requests in flight, longest input, longest input + output) a TensorRT-LLM server meets in the sets:
    a closed-loop set holds at most its top concurrency in flight, a rate set at most a point's prompts."""
    in_flight, longest_in, longest = 0, 0, 0
    for name in ("seed", "industry"):
        s = tomllib.loads((ROOT / "recipes" / "scenarios" / f"{name}.toml").read_text())
        for sc in s["scenario"]:
            if "trt*" in sc.get("skip", []):
                continue
            cap = max(s["concurrency"]) if "concurrency" in s else sc.get("num_prompts", s.get("num_prompts", 0))
            in_flight = max(in_flight, cap)
            if "input_len" in sc:
                longest_in = max(longest_in, sc["input_len"])
                longest = max(longest, sc["input_len"] + sc["output_len"])
    return in_flight, longest_in, longest


@pytest.mark.parametrize("name", [n for n in CURRENT if "long" not in n])
def test_current_recipes_hold_every_point_of_the_seed_and_industry_sets(name):
    in_flight, longest_in, longest = scenario_needs()
    assert (in_flight, longest_in, longest) == (500, 10000, 10500)
    for _, argv, o in serving_commands(name):
        batch, tokens, seq = (int(value(argv, f)) for f in ("--max_batch_size", "--max_num_tokens", "--max_seq_len"))
        assert seq >= longest, name
        if o.get("disable_overlap_scheduler"):  # a prefill-only server: one whole prompt per step
            assert tokens >= longest_in, name
            continue
        ranks = int(value(argv, "--tp_size") or o.get("tensor_parallel_size")) if o.get("enable_attention_dp") else 1
        assert batch * ranks >= in_flight, (name, batch, ranks)
        draft = o.get("speculative_config", {}).get("num_nextn_predict_layers", 0)
        decode_only = "disagg" in name  # a generation server gets each request's KV cache, not its prompt
        assert tokens >= batch * (1 + draft) + (0 if decode_only else longest_in), (name, tokens)


def test_the_long_recipe_holds_the_30k_point():
    (words,) = render("trt-serve-long")
    argv = after(words)
    assert int(value(argv, "--max_num_tokens")) >= 30000 and int(value(argv, "--max_seq_len")) >= 30100


def test_every_current_recipe_names_its_reference_and_differences():
    for name in CURRENT:
        head = TRT_JUST.split(f"\n{name} ")[0].rsplit("\n\n", 1)[-1]
        assert re.search(r"follows (\[(IX|DB|DG|PD)\]|NVIDIA/|SemiAnalysisAI/|the seed)", head), name
        assert "Differs" in head or "differ" in head or name.startswith("trt-serve-2node"), name


def test_trt_install_pulls_the_image_trt_image_names():
    out = just("--dry-run", "trt-install", TRT_VIA="docker", TRT_IMAGE="registry.local/trt:mine")
    assert "docker pull 'registry.local/trt:mine'" in out.stderr
    out = just("--dry-run", "trt-install", "1.2.1", TRT_VIA="docker", TRT_IMAGE="registry.local/trt:mine")
    assert "docker pull 'nvcr.io/nvidia/tensorrt-llm/release:1.2.1'" in out.stderr


def test_the_pin_names_its_option_list():
    assert SPEC["version"] == PIN == just("--evaluate", "trt_version").stdout


# ---- scripts/trt_options.py ----

sys.path.insert(0, str(ROOT / "scripts"))
import trt_options  # noqa: E402

# A TensorRT-LLM-shaped source tree written for this test (not TensorRT-LLM's code): the layout and the
# constructs the script reads (click decorators, a shared option decorator, pydantic fields with
# aliases and ClassVars, a class alias, the disaggregated config's functions).
FAKE_SERVE = """
import click
shared = [click.option("--log_level", type=str)]
def common(f):
    for o in shared:
        f = o(f)
    return f
@click.command("serve")
@click.argument("model")
@click.option("--tp_size", "--tensor_parallel_size", type=int)
@click.option("--backend", type=ChoiceWithAlias(["pytorch", "tensorrt"], {"trt": "tensorrt"}))
@click.option("--trust_remote_code", is_flag=True)
@common
def serve(**kw): ...
@click.command("disaggregated")
@click.option("-c", "--config_file", type=str)
def disaggregated(config_file): ...
"""
FAKE_LLM_ARGS = """
class BaseLlmArgs(StrictBaseModel):
    model: str
    _private: int = 0
    max_batch_size: int = Field(default=8, validation_alias=AliasChoices("max_batch_size", "batch"))
class TorchLlmArgs(BaseLlmArgs):
    kind: ClassVar[str] = "torch"
    cuda_graph_config: Optional[dict] = None
class BaseCudaGraphConfig(StrictBaseModel):
    batch_sizes: list = None
class DecodeCudaGraphConfig(BaseCudaGraphConfig):
    enable_padding: bool = False
CudaGraphConfig = DecodeCudaGraphConfig
"""
FAKE_LLM_ARGS += "".join(
    f"class {c}(StrictBaseModel):\n    {s}_field: int = 0\n"
    for s, c in trt_options.SECTIONS.items()
    if c != "CudaGraphConfig"
)
FAKE_DISAGG = """
def extract_disagg_cfg(hostname="localhost", port=8000, context_servers=None, **kwargs): ...
def extract_ctx_gen_cfgs(type, num_instances=1, urls=None, **kwargs): ...
def extract_router_config(server_cfg):
    args = server_cfg.pop("router", {})
"""


def test_trt_options_reads_the_lists_from_source(tmp_path):
    for key, text in (("serve", FAKE_SERVE), ("llm_args", FAKE_LLM_ARGS), ("disagg", FAKE_DISAGG)):
        path = tmp_path / trt_options.FILES[key]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    spec = trt_options.read_source(tmp_path)
    assert spec["serve"] == {
        "value_options": ["--tp_size", "--tensor_parallel_size", "--backend", "--log_level"],
        "flag_options": ["--trust_remote_code"],
        "backend_choices": ["pytorch", "tensorrt", "trt", "tensorrt"],
    }
    assert spec["llm_args"]["keys"] == ["model", "max_batch_size", "batch", "cuda_graph_config"]
    assert spec["llm_args"]["sections"]["cuda_graph_config"] == ["batch_sizes", "enable_padding"]
    assert spec["llm_args"]["sections"]["speculative_config"] == ["decoding_type", "speculative_config_field"]
    assert spec["disaggregated"] == {
        "options": ["-c", "--config_file"],
        "keys": ["hostname", "port", "context_servers"],
        "server_keys": ["num_instances", "urls", "router"],
    }
    out = tmp_path / "out.toml"
    assert trt_options.main(["--version", "9.9", "--source", str(tmp_path), "--out", str(out)]) == 0
    written = tomllib.loads(out.read_text())
    assert written["version"] == "9.9" and written["serve"]["flag_options"] == ["--trust_remote_code"]


def test_the_kept_list_is_in_the_scripts_layout():
    """Regenerating changes only what the engine changed: the file is the script's rendering of its own data."""
    text = (ROOT / "recipes" / "engines" / f"trtllm-{PIN}.toml").read_text()
    body = text[text.index('version = "') :]
    assert trt_options.render(SPEC) == body
