"""The options a serve command reads from files and JSON flags, as one nested dict.

An options file (TensorRT-LLM's --config / --extra_llm_api_options, vLLM's and SGLang's --config) is YAML;
the files the recipes use hold only mappings, scalars and lists, which read_yaml reads without PyYAML (a
test-only dependency here). JSON flags (vLLM's --speculative-config, --compilation-config) join the same
dict under a key of their own.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from bench.serve import guards
from bench.serve.engines import ENGINES, Caps


def read_yaml(text: str) -> dict:
    """The YAML options files hold: nested mappings, scalars, [flow, lists] and block lists of scalars.
    (Read here rather than with PyYAML, a test-only dependency; anything else is a ValueError.)"""
    root: dict = {}
    stack: list[tuple[int, object, object, str]] = [(-1, root, None, "")]  # indent, container, its parent, key
    for raw in text.splitlines():
        line = re.sub(r"(^|\s)#.*", "", raw).rstrip()
        if not line.strip():
            continue
        indent, body = len(line) - len(line.lstrip()), line.strip()
        item = body.startswith("- ")
        # a block list's items may sit at their key's indent ("key:" then "- x" below it)
        while stack[-1][0] > indent or (
            stack[-1][0] == indent and not (item and (isinstance(stack[-1][1], list) or stack[-1][1] == {}))
        ):
            stack.pop()
        _, node, parent, key = stack[-1]
        if item:
            if isinstance(node, dict) and not node and isinstance(parent, dict):  # "key:" then "- x": a list
                node = parent[key] = []
                stack[-1] = (stack[-1][0], node, parent, key)
            if not isinstance(node, list):
                raise ValueError(f"a list item where a key was expected: {raw!r}")
            node.append(_scalar(body[2:]))
            continue
        name, colon, value = body.partition(":")
        if not colon or not isinstance(node, dict):
            raise ValueError(f"not a key: value line: {raw!r}")
        if value.strip():
            node[name.strip()] = _scalar(value)
        else:
            node[name.strip()] = {}
            stack.append((indent, node[name.strip()], node, name.strip()))
    return root


def _scalar(text: str):
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        return [_scalar(x) for x in text[1:-1].split(",") if x.strip()]
    if text in ("", "null", "~", "Null", "NULL"):
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if re.fullmatch(r"-?\d*\.\d+(e-?\d+)?", text):
        return float(text)
    return text.strip("'\"")


def read_options(engine: str, argv: list[str], caps: Caps, notes: list[str]) -> dict:
    """The options files the command names (the last one wins, as the engines read it) and its JSON flags."""
    options: dict = {}
    for path in guards.option_values(argv, *ENGINES[engine].options_flags)[-1:]:
        try:
            options = read_yaml(Path(path).read_text())
        except (OSError, ValueError) as e:
            notes.append(f"cannot read the options file {path} ({e}): limits it may set are unknown")
    for flag, key in caps.json_flags:
        for text in guards.option_values(argv, flag)[-1:]:
            try:
                options[key] = json.loads(text)
            except ValueError:
                notes.append(f"{flag} is not JSON: limits it may set are unknown")
    return options
