"""The package's shape, checked from its source (ast): floors that follow the pipeline
with no import back up, no import cycle (imports inside functions included), and the size
limits of docs/design.md section 5 with every exception named and explained here."""

import ast
import re
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "prm_bench"

# bottom to top: a module may import its own floor and the floors below it, never above
FLOORS = [
    "prm_bench",  # registry, atomic, hashing, progress: depend on nothing of prm_bench
    "prm_bench.geometry",
    "prm_bench.data",
    "prm_bench.model",
    "prm_bench.instances",
    "prm_bench.metrics",
    "prm_bench.config",
    "prm_bench.stages",
    "prm_bench.orchestrate",
    "prm_bench.report",
    "prm_bench.cli",
]
MODULE_LINES, FUNCTION_LINES, PARAMETERS = 350, 60, 5
# functions allowed past FUNCTION_LINES, and why
LONG = {
    "prm_bench.geometry.pixel_runs.gallery_runs": "one fused pass over the packed rows: its "
    "steps share six work arrays kept in cache, which a split would pass around",
}


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(name: str, path: Path) -> set[str]:
    """The prm_bench modules `name` imports anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            known = modules()
            for alias in node.names:  # `from a import b` imports module a.b, or from a
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    known = modules()
    return {m for m in found if m in known and m != name}


def floor(name: str) -> int:
    return max(i for i, f in enumerate(FLOORS) if name == f or name.startswith(f + "."))


GRAPH = {name: imports(name, path) for name, path in modules().items()}


@pytest.mark.parametrize("name", sorted(GRAPH))
def test_no_module_imports_from_a_floor_above_its_own(name):
    if name == "prm_bench.__main__":
        return  # the entry point: `python -m prm_bench` runs the CLI
    above = sorted(m for m in GRAPH[name] if floor(m) > floor(name))
    assert not above, f"{name} (floor {FLOORS[floor(name)]}) imports {above} from above"


def test_the_import_graph_has_no_cycle():
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for target in sorted(GRAPH[name]):
            if state.get(target) == 1:
                cycle = [*trail[trail.index(target) :], target] if target in trail else [target]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if target not in state:
                visit(target, [*trail, target])
        state[name] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])


def registry_homes() -> list[tuple[str, str]]:
    """(defining module, home) of every `Registry(..., home="...")` in the package."""
    found = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Registry":
                found += [(name, k.value.value) for k in node.keywords if k.arg == "home"]
    return found


def test_a_registry_home_is_a_module_of_its_registry_floor():
    """A registry imports its home on first use (`Registry.get`), which the import graph
    cannot see: the home must sit on the registry's own floor."""
    homes = registry_homes()
    assert len(homes) >= 2
    for name, home in homes:
        assert home in modules(), f"{name}: home {home} is no module"
        assert floor(home) == floor(name), f"{name} (floor {FLOORS[floor(name)]}) homes {home}"


def test_the_checks_catch_a_cycle_and_an_upward_import(monkeypatch):
    """The two checks above can fail: a made-up graph with both defects."""
    fake = {
        "prm_bench.registry": {"prm_bench.cli.app"},
        "prm_bench.cli.app": {"prm_bench.registry"},
    }
    monkeypatch.setattr(sys.modules[__name__], "GRAPH", fake)
    with pytest.raises(AssertionError, match="from above"):
        test_no_module_imports_from_a_floor_above_its_own("prm_bench.registry")
    with pytest.raises(pytest.fail.Exception, match="import cycle"):
        test_the_import_graph_has_no_cycle()


def functions() -> list[tuple[str, ast.FunctionDef]]:
    found = []
    for name, path in modules().items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.append((f"{name}.{node.name}", node))
    return found


def parameters(node: ast.FunctionDef) -> int:
    args = node.args
    named = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    return len([a for a in named if a not in ("self", "cls")]) + bool(args.vararg)


@pytest.mark.parametrize("name", sorted(modules()))
def test_modules_stay_short(name):
    lines = modules()[name].read_text().count("\n")
    assert lines <= MODULE_LINES, f"{name} has {lines} lines (at most {MODULE_LINES})"


def test_functions_stay_short_or_say_why():
    long = {n: f.end_lineno - f.lineno + 1 for n, f in functions()}
    over = {n: size for n, size in long.items() if size > FUNCTION_LINES and n not in LONG}
    assert not over, f"functions over {FUNCTION_LINES} lines: {over}"
    stale = [n for n in LONG if long.get(n, 0) <= FUNCTION_LINES]
    assert not stale, f"no longer long, drop them from LONG: {stale}"


def test_functions_with_many_parameters_say_why_in_their_docstring():
    silent = [
        f"{name} ({parameters(node)})"
        for name, node in functions()
        if parameters(node) > PARAMETERS and "Takes " not in (ast.get_docstring(node) or "")
    ]
    assert not silent, (
        f"over {PARAMETERS} parameters with no 'Takes N parameters: why' in the docstring: "
        + ", ".join(silent)
    )


def design_sections() -> set[str]:
    """The section numbers of docs/design.md ("## 3." -> "3", "### 2.5" -> "2.5")."""
    text = (PACKAGE.parent / "docs" / "design.md").read_text()
    return set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", text, flags=re.MULTILINE))


def test_every_design_reference_names_a_section_of_the_design_document():
    sections = design_sections()
    assert {"2.1", "2.4", "2.5", "3", "5", "6", "7"} <= sections
    cited = {}
    sources = [*PACKAGE.rglob("*.py"), PACKAGE.parent / "README.md"]
    for path in sources:
        for number in re.findall(r"DESIGN (\d+(?:\.\d+)?)", path.read_text()):
            cited.setdefault(number, path.name)
    missing = {n: where for n, where in cited.items() if n not in sections}
    assert not missing, f"DESIGN references with no section in docs/design.md: {missing}"
