"""The house's layout holds: imports point one way between the wings, and no module circles back.

Read from the source with `ast` (every import, also those inside functions), so the rule holds for
imports made late on purpose too. README's "How the code is laid out" says the same in words.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bench"
WINGS = ("instrument", "results", "serve", "lab")
LEAVES = {"bench", "bench.errors", "bench.paths"}  # shared by all, importing nothing of bench's
COMMANDS = {"bench.cli", "bench.run", "bench.__main__"}  # on top: may use every wing
# What each wing may import besides itself and the leaves. Nothing imports the commands.
MAY_USE = {
    "instrument": set(),
    "serve": {"instrument"},
    "lab": {"instrument", "serve"},
    "results": {"instrument", "serve", "lab"},  # the lab only for a point's optional self-check
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(name: str) -> set[str]:
    """Every bench module `name` imports, anywhere in its file."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from bench.x import y`: y is a module when such a file exists, else a name in bench.x
            found |= {
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module for a in node.names
            }
    return {m for m in found if m == "bench" or m.startswith("bench.")}


def wing(name: str) -> str:
    if name in LEAVES:
        return "leaf"
    if name in COMMANDS:
        return "commands"
    part = name.split(".")[1]
    assert part in WINGS, f"{name} sits outside the wings: move it into one of {', '.join(WINGS)}"
    return part


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_point_one_way(name):
    own = wing(name)
    for target in sorted(imports(name)):
        assert target in MODULES, f"{name} imports {target}, which does not exist"
        other = wing(target)
        if own == "commands" or other in ("leaf", own):
            assert own != "leaf" or other == "leaf", f"{name} is a leaf and must not import {target}"
            continue
        assert other != "commands", f"{name} imports the command module {target}: commands sit on top"
        assert other in MAY_USE[own], f"{name} ({own}) imports {target} ({other}): {own} may use only " + (
            ", ".join(sorted(MAY_USE[own])) or "itself and the leaves"
        )


def test_no_module_imports_itself_back_through_others():
    graph = {name: imports(name) - {name} for name in MODULES}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                circle = path[path.index(target) :] + [target] if target in path else [name, target]
                raise AssertionError("import circle: " + " -> ".join(circle))
            if target in graph and not state.get(target):
                visit(target, path + [target])
        state[name] = 2

    for name in sorted(graph):
        if not state.get(name):
            visit(name, [name])


def test_the_rule_catches_an_arrow_back(tmp_path, monkeypatch):
    """The checker itself fails on a forbidden import and on a circle (so a green run means something)."""
    fake = {
        "bench.instrument.metrics": "from bench.results import report\n",
        "bench.results.report": "from bench.instrument import metrics\n",
    }
    for name, text in fake.items():
        path = tmp_path / (name.replace(".", "/") + ".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    monkeypatch.setattr(__import__(__name__), "MODULES", {n: tmp_path / (n.replace(".", "/") + ".py") for n in fake})
    with pytest.raises(AssertionError, match="instrument.*imports bench.results.report"):
        test_imports_point_one_way("bench.instrument.metrics")
    with pytest.raises(AssertionError, match="import circle"):
        test_no_module_imports_itself_back_through_others()
