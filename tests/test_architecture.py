"""The package's shape, read from its source with ``ast``: no import cycles (imports inside functions
included), the core never imports the recipes, modules and functions stay short, public functions
and classes say what they do; and the documentation's: no file refers to a file outside the
repository, README.md stays a front page, Markdown links name existing files."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("mmcit", "data_recipes")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


MODULES = _modules()


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes under ``if TYPE_CHECKING:`` (annotations only, never run)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def _targets(node: ast.AST, package: str) -> list[str]:
    """The modules of this repository an import statement loads by name."""
    found = []
    if isinstance(node, ast.Import):
        found = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            parts = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*parts, base] if base else parts)
        # "from pkg import sub" loads the submodule sub; "from mod import name" loads mod.
        subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
        found = subs or [base]
    return [t for t in found if t.split(".")[0] in PACKAGES]


def import_graph() -> dict[str, set[str]]:
    """module -> modules of this repository it imports anywhere in its body, functions included."""
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _type_checking_nodes(tree)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(tree):
            if id(node) not in skip and isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _targets(node, package):
                    while target and target not in MODULES:
                        target = target.rpartition(".")[0]
                    if target and target != name:
                        edges.add(target)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    graph = import_graph()
    assert graph["mmcit.recipe"]  # the parser sees imports at all
    assert cycles(graph) == []


def test_the_core_never_imports_the_recipes():
    graph = import_graph()
    offenders = {m: sorted(t for t in targets if t.startswith("data_recipes"))
                 for m, targets in graph.items() if m.startswith("mmcit")}
    assert {m: t for m, t in offenders.items() if t} == {}


def test_imports_inside_functions_say_why():
    """An import of this repository's modules inside a function is allowed only for a heavy or
    optional dependency behind it, said in a ``# lazy:`` comment on the line."""
    bare = []
    for name, path in MODULES.items():
        lines = path.read_text(encoding="utf-8").splitlines()
        tree = ast.parse("\n".join(lines))
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if (isinstance(node, (ast.Import, ast.ImportFrom)) and _targets(node, name)
                            and "# lazy:" not in lines[node.lineno - 1]):
                        bare.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert bare == []


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("mmcit")))
def test_module_size_and_function_length(name):
    path = MODULES[name]
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_MODULE_LINES, f"{path.relative_to(REPO)} has {len(lines)} lines"
    long = []
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            said = any("# one piece:" in lines[k] for k in range(max(0, node.lineno - 3), node.lineno + 1))
            if n > MAX_FUNCTION_LINES and not said:
                long.append(f"{node.name} ({n} lines)")
    assert long == []


def _public_defs(tree: ast.Module):
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            yield node
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.FunctionDef) and not item.name.startswith("_"):
                        yield item


def test_every_public_function_and_class_has_a_docstring():
    missing = []
    for name, path in MODULES.items():
        if not name.startswith("mmcit"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if ast.get_docstring(tree) is None:
            missing.append(f"{path.relative_to(REPO)} (module)")
        for node in _public_defs(tree):
            decorators = {getattr(d, "id", getattr(d, "attr", "")) for d in node.decorator_list}
            if ast.get_docstring(node) is None and not decorators & {"setter", "overload"}:
                missing.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}")
    assert missing == []


# ---- documentation ---------------------------------------------------------------------------------

DOC_DIRS = ("docs", "eval", "configs", "benchmarks")  # besides the packages and the top-level *.md


def test_no_file_points_outside_the_repository():
    """Docs and code name only files that a fresh clone has (the project's docs live in docs/)."""
    outside = []
    files = [*REPO.glob("*.md"), *(p for d in (*PACKAGES, *DOC_DIRS) for p in (REPO / d).rglob("*"))]
    for path in files:
        if path.is_file() and path.suffix in (".py", ".md", ".yaml", ".sh", ".toml"):
            text = path.read_text(encoding="utf-8", errors="replace")
            # The first two are spelled in pieces so that this file does not match them itself.
            for bad in ("../" + "shared", "shared" + "/docs", "LCIA.md", "COIN.md", "SYNTHETIC.md", "DESIGN.md"):
                if bad in text:
                    outside.append(f"{path.relative_to(REPO)}: {bad}")
    assert outside == []


MD_LINK = re.compile(r"\]\(([^)\s#]+\.md)(?:#[^)\s]*)?\)")


def test_readme_is_a_front_page_and_its_doc_links_exist():
    """README.md stays a front page (at most 150 lines); every Markdown link of README.md,
    CONTRIBUTING.md and docs/*.md names a file that exists."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 150
    sources = [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md"))]
    links = {(src, target) for src in sources for target in MD_LINK.findall(src.read_text(encoding="utf-8"))}
    assert {t for s, t in links if s.parent == REPO and t.startswith("docs/")} >= {
        "docs/method.md", "docs/coin.md", "docs/architecture.md", "docs/measurements.md", "docs/usage.md"}
    missing = [f"{src.relative_to(REPO)} -> {target}" for src, target in sorted(links)
               if not (src.parent / target).is_file()]
    assert missing == []
