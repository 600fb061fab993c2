"""Write recipes/engines/trtllm-<version>.toml, the TensorRT-LLM option names and YAML keys the recipe
tests check commands against, from TensorRT-LLM's own source files (read with `ast`, never imported:
the package needs CUDA and MPI at import).

    python scripts/trt_options.py --version 1.3.0rc14 --source ~/TensorRT-LLM [--note "read at tag v1.3.0rc14"]

`--source` is a TensorRT-LLM checkout at the release tag (or any folder holding its `tensorrt_llm/`
package). Read from it:
  tensorrt_llm/commands/serve.py          the `serve` and `disaggregated` click commands: their options
                                          (also options brought in by a decorator defined in
                                          tensorrt_llm/commands/*.py) and the `--backend` choices;
  tensorrt_llm/llmapi/llm_args.py         the fields of TorchLlmArgs and its bases (the options file's
                                          top-level keys) and of the classes behind the sections the
                                          recipes use (SECTIONS below), with their aliases;
  tensorrt_llm/llmapi/disagg_utils.py     the keys of the `trtllm-serve disaggregated` config file.
Moving the pin: run this at the new tag, set trt_version in scripts/trt.just, run `just golden-update`.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Options-file sections checked key by key, and the llm_args.py class behind each.
SECTIONS = {
    "kv_cache_config": "KvCacheConfig",
    "cuda_graph_config": "CudaGraphConfig",
    "moe_config": "MoeConfig",
    "attention_dp_config": "AttentionDpConfig",
    "cache_transceiver_config": "CacheTransceiverConfig",
    "speculative_config": "MTPDecodingConfig",
}
# speculative_config is a union told apart by this key, which the config classes do not declare as a field.
EXTRA_SECTION_KEYS = {"speculative_config": ["decoding_type"]}
FILES = {
    "serve": "tensorrt_llm/commands/serve.py",
    "llm_args": "tensorrt_llm/llmapi/llm_args.py",
    "disagg": "tensorrt_llm/llmapi/disagg_utils.py",
}


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _call_name(node: ast.AST) -> str:
    func = node.func if isinstance(node, ast.Call) else node
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _strings(node: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


# ---- trtllm-serve's click commands ----


def click_options(calls: list[ast.Call]) -> tuple[list[str], list[str], list[str]]:
    """(value options, flag options, --backend choices) of some click.option(...) calls; aliases side by side."""
    values, flags, choices = [], [], []
    for call in calls:
        names = [a.value for a in call.args if isinstance(a, ast.Constant) and str(a.value).startswith("-")]
        kw = {k.arg: k.value for k in call.keywords}
        flag = isinstance(kw.get("is_flag"), ast.Constant) and kw["is_flag"].value is True
        (flags if flag else values).extend(names)
        if "--backend" in names and "type" in kw:
            choices = _strings(kw["type"])  # Choice([...]) or ChoiceWithAlias([...], {alias: target})
    return values, flags, choices


def command_options(modules: list[ast.Module], command: str) -> tuple[list[str], list[str], list[str]]:
    """The options of `@click.command(command)`, including those of decorators defined in `modules`."""
    defs = {}  # module-level functions and assignments, by name: where a shared decorator may be defined
    for stmt in (s for m in modules for s in m.body):
        if isinstance(stmt, ast.FunctionDef):
            defs[stmt.name] = stmt
        elif isinstance(stmt, ast.Assign):
            defs.update({t.id: stmt for t in stmt.targets if isinstance(t, ast.Name)})
    for module in modules:
        for fn in ast.walk(module):
            if not isinstance(fn, ast.FunctionDef):
                continue
            names = [_strings(d)[:1] for d in fn.decorator_list if _call_name(d) == "command"]
            if [command] not in names:
                continue
            calls = []
            for dec in fn.decorator_list:
                calls += [dec] if _call_name(dec) == "option" else _options_in(defs, _call_name(dec), set())
            return click_options(calls)
    raise SystemExit(f"trt_options: no @click.command({command!r}) found: is --source a TensorRT-LLM checkout?")


def _options_in(defs: dict, name: str, seen: set) -> list[ast.Call]:
    """click.option calls inside the definition of `name` (a shared decorator) and the names it uses."""
    if name not in defs or name in seen:
        return []
    seen.add(name)
    calls = []
    for node in ast.walk(defs[name]):
        if isinstance(node, ast.Call) and _call_name(node) == "option":
            calls.append(node)
        elif isinstance(node, ast.Name) and node.id != name:
            calls += _options_in(defs, node.id, seen)
    return calls


# ---- llm_args.py's pydantic classes ----


def class_fields(module: ast.Module, name: str) -> list[str]:
    """Field names (and their aliases) of class `name`, bases first, resolving `Name = Other` aliases."""
    classes = {n.name: n for n in module.body if isinstance(n, ast.ClassDef)}
    aliases = {t.id: n.value.id for n in module.body if isinstance(n, ast.Assign) and isinstance(n.value, ast.Name)
               for t in n.targets if isinstance(t, ast.Name)}  # fmt: skip
    while name not in classes and name in aliases:
        name = aliases[name]
    if name not in classes:
        raise SystemExit(f"trt_options: class {name} not found in llm_args.py")
    out: list[str] = []
    for base in classes[name].bases:
        if isinstance(base, ast.Name) and (base.id in classes or base.id in aliases):
            out += [f for f in class_fields(module, base.id) if f not in out]
    for stmt in classes[name].body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        field = stmt.target.id
        if field.startswith("_") or "ClassVar" in ast.unparse(stmt.annotation):
            continue
        names = [field]
        if isinstance(stmt.value, ast.Call):  # Field(alias="x") / Field(validation_alias=AliasChoices("x", "y"))
            for kw in stmt.value.keywords:
                if kw.arg in ("alias", "validation_alias"):
                    names += _strings(kw.value)
        out += [n for n in dict.fromkeys(names) if n not in out]
    return out


# ---- the disaggregated front end's config file ----


def function_params(module: ast.Module, name: str) -> list[str]:
    fn = next((n for n in ast.walk(module) if isinstance(n, ast.FunctionDef) and n.name == name), None)
    if fn is None:
        raise SystemExit(f"trt_options: function {name} not found in disagg_utils.py")
    return [a.arg for a in fn.args.args + fn.args.kwonlyargs]


def popped_keys(module: ast.Module, name: str) -> list[str]:
    """String keys the function `name` pops from its first parameter (the server section)."""
    fn = next(n for n in ast.walk(module) if isinstance(n, ast.FunctionDef) and n.name == name)
    first = fn.args.args[0].arg
    return [c.args[0].value for c in ast.walk(fn) if isinstance(c, ast.Call) and _call_name(c) == "pop"
            and isinstance(c.func.value, ast.Name) and c.func.value.id == first and c.args
            and isinstance(c.args[0], ast.Constant)]  # fmt: skip


# ---- the toml ----


def read_source(source: Path) -> dict:
    serve_mods = [parse(source / FILES["serve"])]
    serve_mods += [parse(p) for p in sorted((source / FILES["serve"]).parent.glob("*.py")) if p.name != "serve.py"]
    values, flags, choices = command_options(serve_mods, "serve")
    disagg_values, disagg_flags, _ = command_options(serve_mods, "disaggregated")
    llm = parse(source / FILES["llm_args"])
    disagg = parse(source / FILES["disagg"])
    return {
        "serve": {"value_options": values, "flag_options": flags, "backend_choices": choices},
        "llm_args": {
            "keys": class_fields(llm, "TorchLlmArgs"),
            "sections": {k: EXTRA_SECTION_KEYS.get(k, []) + class_fields(llm, c) for k, c in SECTIONS.items()},
        },
        "disaggregated": {
            "options": disagg_values + disagg_flags,
            "keys": [p for p in function_params(disagg, "extract_disagg_cfg") if p != "kwargs"],
            "server_keys": [p for p in function_params(disagg, "extract_ctx_gen_cfgs") if p not in ("type", "kwargs")]
            + popped_keys(disagg, "extract_router_config"),
        },
    }


def toml_list(key: str, items: list[str]) -> str:
    """`key = [...]` on one line when short, else wrapped at 100 columns."""
    words = [f'"{i}"' for i in items]
    line = f"{key} = [" + ", ".join(words) + "]"
    if len(line) <= 100:
        return line
    rows, row = [], "  "
    for w in words:
        if len(row) + len(w) + 2 > 100 and row.strip():
            rows.append(row.rstrip())
            row = "  "
        row += w + ", "
    return f"{key} = [\n" + "\n".join(rows + [row.rstrip()]) + "\n]"


def render(spec: dict) -> str:
    """The toml body (everything after the header comment) for a spec read by read_source."""
    s, a, d = spec["serve"], spec["llm_args"], spec["disaggregated"]
    lines = [
        f'version = "{spec["version"]}"',
        "",
        "[serve]",
        "# `trtllm-serve` options that take a value (the aliases of one option side by side).",
        toml_list("value_options", s["value_options"]),
        "# Options that are on/off switches.",
        toml_list("flag_options", s["flag_options"]),
        "# Values `--backend` accepts, aliases included.",
        toml_list("backend_choices", s["backend_choices"]),
        "",
        "[llm_args]",
        "# Top-level keys of the options file (--config / --extra_llm_api_options): TorchLlmArgs and its bases.",
        toml_list("keys", a["keys"]),
        "",
        "# Keys inside the sections the recipes use, checked key by key (other sections: top level only).",
        "[llm_args.sections]",
        *[toml_list(k, v) for k, v in a["sections"].items()],
        "",
        "[disaggregated]",
        "# `trtllm-serve disaggregated` options.",
        toml_list("options", d["options"]),
        "# Top-level keys of its config file; any other top-level key is an llm_args key given to every server.",
        toml_list("keys", d["keys"]),
        "# Keys of a context_servers / generation_servers section besides llm_args keys.",
        toml_list("server_keys", d["server_keys"]),
    ]
    return "\n".join(lines) + "\n"


def header(version: str, note: str) -> str:
    return (
        f"# TensorRT-LLM {version}: the `trtllm-serve` options and the YAML keys of its options and disaggregated\n"
        "# config files, kept as data so the recipe tests check commands without the engine. Laid out by\n"
        "# scripts/trt_options.py: regenerate it from TensorRT-LLM's source with `just trt-options SRC`.\n"
        + "".join(f"# {line}\n" for line in note.splitlines())
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/trt_options.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", required=True, help="The release the source is at, e.g. 1.3.0rc14.")
    p.add_argument("--source", type=Path, required=True, help="A TensorRT-LLM checkout at that release's tag.")
    p.add_argument("--note", default="", help="Where the source came from (tag, commit), kept in the header.")
    p.add_argument("--out", type=Path, help="File to write; default recipes/engines/trtllm-<version>.toml.")
    args = p.parse_args(argv)
    spec = {"version": args.version, **read_source(args.source)}
    out = args.out or ROOT / "recipes" / "engines" / f"trtllm-{args.version}.toml"
    out.write_text(header(args.version, args.note) + render(spec))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
