"""The package's shape: layers that import only downward, no import cycles, short functions, thin
front doors, and a default run that imports none of the optional runtime machinery.

Imports are read with ``ast`` from the source (module level and inside functions alike), so a
lazy import cannot hide a cycle or an upward dependency.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "hyvideo"

# Lowest first. A module may import from its own layer and the layers before it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("hyvideo", "hyvideo.compat")),
    ("checkpoints", ("hyvideo.checkpoints",)),
    ("models", ("hyvideo.dit", "hyvideo.vae", "hyvideo.text")),
    ("story", ("hyvideo.pipeline",)),
    ("runtime", ("hyvideo.runtime",)),
    ("applications", ("hyvideo.apps", "hyvideo.conformance", "hyvideo.__main__")),
]
MAX_FUNCTION_LINES = 60
MAX_FRONT_DOOR_LINES = 60


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer_of(module: str) -> int:
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or (prefix != "hyvideo" and module.startswith(prefix + "."))
            if matches and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    if best is None:
        raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")
    return best


def imports_of(module: str) -> set[str]:
    """Every hyvideo module ``module`` imports (resolving ``from pkg import submodule``)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        found.update(name for name in names if name in MODULES)
    found.discard(module)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


def test_no_module_imports_from_a_layer_above_it():
    upward = [f"{m} ({LAYERS[layer_of(m)][0]}) imports {d} ({LAYERS[layer_of(d)][0]})"
              for m, deps in GRAPH.items() for d in deps if layer_of(d) > layer_of(m)]
    assert not upward, "\n".join(upward)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles():
    # A package's __init__ re-exporting its own submodules is not a cycle of the design.
    graph = {m: {d for d in deps if not (MODULES[m].name == "__init__.py" and d.startswith(m + "."))}
             for m, deps in GRAPH.items()}
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_function_over_sixty_lines():
    long = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{module}.{node.name}: {lines} lines")
    assert not long, "\n".join(long)


@pytest.mark.parametrize("script", ["sample_video.py", "gradio_server.py", "sample_image2video.py"])
def test_front_doors_are_thin(script):
    path = ROOT / script
    if not path.exists():
        pytest.skip(f"{script} does not exist yet")
    assert len(path.read_text().splitlines()) < MAX_FRONT_DOOR_LINES


def test_init_files_only_re_export():
    for module, path in MODULES.items():
        if path.name != "__init__.py":
            continue
        for node in ast.parse(path.read_text()).body:
            allowed = (ast.Import, ast.ImportFrom, ast.Expr, ast.Assign)  # docstring, __all__, __version__
            assert isinstance(node, allowed), f"{path}: {type(node).__name__} in an __init__"
            if isinstance(node, ast.Assign):
                assert all(isinstance(t, ast.Name) and t.id in ("__all__", "__version__") for t in node.targets)


def test_no_accelerator_strings_in_the_package():
    offenders = [f"{module}: {node.value!r}" for module, path in MODULES.items()
                 for node in ast.walk(ast.parse(path.read_text()))
                 if isinstance(node, ast.Constant) and isinstance(node.value, str)
                 and (node.value == "cuda" or node.value.startswith("cuda:"))]
    assert not offenders, "\n".join(offenders)


@pytest.mark.smoke
def test_the_default_run_imports_no_optional_runtime_machinery():
    """A plain tiny generation loads neither the offload engines, the step caches' engines, the
    parallel package nor the diffusers layout reader."""
    code = (
        "import sys, torch\n"
        "from hyvideo.pipeline.components import LoadOptions\n"
        "from hyvideo.runtime.build import RuntimeOptions, load_pipeline\n"
        "pipe = load_pipeline(LoadOptions(model='tiny-random'), RuntimeOptions(device=torch.device('cpu')))\n"
        "pipe(pipe.request('a cat', height=32, width=32, video_length=5, infer_steps=1), show_progress=False)\n"
        "print('\\n'.join(m for m in sys.modules if m.startswith('hyvideo')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, check=True).stdout.split()
    for unwanted in ("hyvideo.runtime.offload.modes", "hyvideo.runtime.offload.block_swap",
                     "hyvideo.runtime.parallel", "hyvideo.pipeline.diffusers_layout", "hyvideo.runtime.compile",
                     "hyvideo.dit.lora", "hyvideo.apps.webui"):
        assert unwanted not in out, f"{unwanted} was imported by a plain run"
