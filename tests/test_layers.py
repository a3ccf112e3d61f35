"""The import layers of DESIGN.md hold: a module imports only from its own package or
from packages of its layer or below, and no two packages import each other (directly
or through others) - function-level imports included."""

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "vqtool"
#: DESIGN.md's order, top to bottom
LAYERS = [
    ["__main__"],
    ["cli"],
    ["export", "priors", "report"],
    ["tokens", "training"],
    ["pretrained", "losses"],
    ["models"],
    ["quantizers", "data", "lm"],
    ["checkpoints", "runtime", "metrics"],
    ["utils", "assets", "__init__"],
    ["errors", "atomic", "signals"],
]
LEVEL = {name: len(LAYERS) - i for i, names in enumerate(LAYERS) for name in names}


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports() -> list[tuple[str, int, str, str]]:
    """(file, line, importing package, imported package) for every vqtool import."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        src = package_of(".".join(p for p in rel.parts if p != "__init__"))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                if name == "vqtool" or name.startswith("vqtool."):
                    dst = package_of(name)
                    if dst != src:
                        found.append((str(path.relative_to(ROOT.parent)), node.lineno, src, dst))
    return found


def test_every_package_has_a_layer():
    modules = {p.stem for p in ROOT.glob("*.py")}
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    assert (modules | packages) - set(LEVEL) == set()


@pytest.mark.slow
def test_imports_never_climb_a_layer():
    climbing = [f"{f}:{line} {src} -> {dst}" for f, line, src, dst in imports()
                if LEVEL[dst] > LEVEL[src]]  # fmt: skip
    assert climbing == []


def test_no_import_circles_between_packages():
    graph = defaultdict(set)
    for _, _, src, dst in imports():
        graph[src].add(dst)

    def reaches(start: str, goal: str, seen: set) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    circles = sorted(f"{a} <-> {b}" for a in graph for b in graph[a] if reaches(b, a, {b}))
    assert circles == []


def module_imports() -> dict[str, set[str]]:
    """module -> the vqtool modules it imports (at any depth of the file: lazy imports
    inside functions count, as they tie the modules as much)."""
    graph: dict[str, set[str]] = defaultdict(set)
    names = {".".join(p.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__")
             for p in ROOT.rglob("*.py")}  # fmt: skip
    for path in sorted(ROOT.rglob("*.py")):
        src = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(
            ".__init__"
        )
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            else:
                continue
            for name in found:
                if name in names and name != src and name != "vqtool":
                    graph[src].add(name)
    return graph


def circles(graph: dict[str, set[str]]) -> list[str]:
    def reaches(start: str, goal: str, seen: set) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    return sorted(f"{a} <-> {b}" for a in graph for b in graph[a] if reaches(b, a, {b}))


def test_no_import_circles_between_modules():
    """Inside a package too (tokens/encode.py and tokens/ray_executor.py once imported
    each other); the check finds a circle injected into the real graph."""
    graph = module_imports()
    assert circles(graph) == []
    graph["vqtool.tokens.tasks"].add("vqtool.tokens.encode")  # encode -> tasks -> encode
    assert "vqtool.tokens.encode <-> vqtool.tokens.tasks" in circles(graph)


def test_lm_package_is_torch_free():
    """`vqtool.lm` (layouts, documents, export files) loads where torch cannot be imported,
    as DESIGN.md's layer list says."""
    code = (
        "import sys; sys.modules['torch'] = None\n"  # `import torch` now raises ImportError
        "import pkgutil, importlib, vqtool.lm\n"
        "for m in pkgutil.iter_modules(vqtool.lm.__path__):\n"
        "    importlib.import_module('vqtool.lm.' + m.name)\n"
        "print(sorted(m.name for m in pkgutil.iter_modules(vqtool.lm.__path__)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "documents" in out.stdout and "files" in out.stdout


def test_files_and_functions_stay_small():
    """No module over 400 lines; no function over 60 unless a comment just above it says
    why ("Over 60 lines ...": the CLI commands, whose typed options are their signature)."""
    long_files, long_functions = [], []
    for path in sorted(ROOT.rglob("*.py")):
        lines = path.read_text().splitlines()
        if len(lines) > 400:
            long_files.append(f"{path.relative_to(ROOT.parent)}: {len(lines)}")
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                above = "\n".join(lines[max(0, start - 5) : start - 1])
                if node.end_lineno - node.lineno + 1 > 60 and "Over 60 lines" not in above:
                    long_functions.append(f"{path.relative_to(ROOT.parent)}:{node.name}")
    assert long_files == [] and long_functions == []
