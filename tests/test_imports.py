"""The package's import graph has no cycles: every import of a sensorlm module, at the top of a
file or inside a function (a lazy import is still a dependency), read from the source."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sensorlm"



def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the sensorlm modules it imports (``from pkg import name`` counts as pkg.name
    where that is a module, else as pkg; a module's import of its own package is left out)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                while target and target not in modules:  # import a.b.c -> the deepest module named
                    target = target.rpartition(".")[0]
                # a module importing its own package's face is the registry idiom (timm's: the face
                # imports every model module so they register), not a dependency on its siblings
                if target.startswith("sensorlm") and target != name and not name.startswith(target + "."):
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_reader_sees_lazy_and_relative_imports():
    graph = import_graph()
    assert "sensorlm.data.loader" in graph["sensorlm.families.records"]  # imported inside a function
    assert "sensorlm.typed_config" in graph["sensorlm.training.config"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_no_import_cycles_in_the_package():
    found = cycles(import_graph())
    assert not found, sorted(sorted(c) for c in found)


# MLflow outside sensorlm/tracking/: none; training, sweeps, evaluation and embed go through the
# tracking layer (issue 27).
MLFLOW_OUTSIDE_TRACKING: set[str] = set()


def test_mlflow_is_imported_only_by_the_tracking_layer():
    found = set()
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        if name.startswith("sensorlm.tracking"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(m == "mlflow" or m.startswith("mlflow.") for m in modules):
                found.add(name)
    assert found <= MLFLOW_OUTSIDE_TRACKING, sorted(found - MLFLOW_OUTSIDE_TRACKING)


def test_command_line_code_lives_in_the_cli_package():
    """argparse only under sensorlm/cli/ (one module per command); every script under jobs/ and tune/
    is ``main([command, *argv])`` of that package (issue 27)."""
    from sensorlm.cli import COMMANDS, command_module

    outside = sorted(_module_name(p) for p in PACKAGE.rglob("*.py")
                     if "argparse" in p.read_text() and not _module_name(p).startswith("sensorlm.cli"))
    assert not outside, outside
    for name in COMMANDS:
        module = command_module(name)
        assert callable(module.add_arguments) and callable(module.run), name
    scripts = [*PACKAGE.parent.glob("jobs/*.py"), *PACKAGE.parent.glob("tune/*.py")]
    assert len(scripts) >= 9
    for script in scripts:
        calls = [n for n in ast.walk(ast.parse(script.read_text())) if isinstance(n, ast.Call)
                 and getattr(n.func, "id", None) == "main"]
        assert calls, f"{script.name} does not call sensorlm.cli.main"
        for call in calls:
            first = call.args[0]
            assert isinstance(first, ast.List) and isinstance(first.elts[0], ast.Constant), script.name
            assert first.elts[0].value in COMMANDS, f"{script.name}: {first.elts[0].value!r} is not a command"
        assert "from sensorlm.cli import main" in script.read_text(), script.name
