"""The layout as the README and docs/method.md state it: every module listed where it
is, no import cycle, no import inside a function but optional dependencies, and every
reference to docs/method.md (a section, a function) pointing at something that exists."""

import ast
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Imports inside a function, each for an optional or environment-specific dependency.
FUNCTION_LEVEL_IMPORTS = {
    ("coleaf_jax.xla_flags", "jax._src"),  # whether a backend exists yet, without making one
    ("coleaf_jax.features.testing", "av"),  # PyAV writes test clips; only tests need it
    ("coleaf_jax.features.testing", "coleaf_jax.features.convert"),  # torch-format writer
    ("coleaf_jax.features.weights", "tensorflow"),  # the VGGish .ckpt reader, when installed
}


def _layout_block() -> list[str]:
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text[text.index("## Layout\n") :]
    return section.split("```\n")[1].splitlines()


def _listed_paths() -> set[str]:
    """The paths the README's layout tree names: indentation gives the folder."""
    folders: list[str] = []
    paths = set()
    for line in _layout_block():
        if not line.strip():
            continue
        indent = (len(line) - len(line.lstrip())) // 2
        names = re.split(r"\s{2,}", line.strip())[0]
        if not names or "." not in names and not names.endswith("/"):
            continue  # a description continued on the next line
        del folders[indent:]
        parent = "".join(folders)
        for name in (n.strip() for n in names.split(",")):
            paths.add(parent + name)
            if name.endswith("/"):
                folders.append(name)
    return paths


def _python_files() -> set[str]:
    out = {"train.py", "eval.py", "parse.py"}
    for top in ("coleaf_jax", "configs", "tools"):
        for d, _, files in os.walk(os.path.join(ROOT, top)):
            if "__pycache__" in d:
                continue
            for f in files:
                if f.endswith(".py") and f not in ("__init__.py", "__main__.py"):
                    out.add(os.path.relpath(os.path.join(d, f), ROOT))
    return out


def test_readme_layout_lists_every_module_where_it_is():
    listed = _listed_paths()
    files = {p for p in listed if p.endswith(".py")}
    assert files == _python_files(), (
        f"not listed: {sorted(_python_files() - files)}; listed but absent: "
        f"{sorted(files - _python_files())}"
    )
    for folder in (p for p in listed if p.endswith("/")):
        assert os.path.isdir(os.path.join(ROOT, folder)), folder


def test_readme_names_every_test_file():
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text[text.index("## Layout\n") :]
    named = set(re.findall(r"`(test_\w+\.py)`", section))
    patterns = set(re.findall(r"`(test_\w+_)\*\.py`", section))
    for f in os.listdir(os.path.join(ROOT, "tests")):
        if f.startswith("test_") and f.endswith(".py"):
            assert f in named or f.startswith(tuple(patterns)), f"README does not name {f}"


def _modules():
    for d, _, files in os.walk(os.path.join(ROOT, "coleaf_jax")):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(d, f), ROOT)[:-3].replace(os.sep, ".")
                yield rel.removesuffix(".__init__"), os.path.join(d, f)


def _imports(path: str):
    """``(module imported, inside a function?)`` for every import of a file, the
    ``if __name__ == '__main__'`` block left out."""
    out = []

    def visit(node, in_function):
        if isinstance(node, ast.If) and "__name__" in ast.unparse(node.test):
            return
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            in_function = True
        if isinstance(node, ast.Import):
            out.extend((a.name, in_function) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.module, in_function))
            out.extend((f"{node.module}.{a.name}", in_function) for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child, in_function)

    visit(ast.parse(open(path).read()), False)
    return out


def test_no_import_cycle_and_no_import_inside_a_function():
    modules = dict(_modules())
    graph, inner = {}, set()
    for name, path in modules.items():
        imports = _imports(path)
        graph[name] = {m for m, _ in imports if m in modules and m != name}
        inner |= {(name, m) for m, f in imports if f and not m.startswith("__future__")}
    inner = {
        (name, m)
        for name, m in inner
        if not any(
            name == a and (m == b or m.startswith(b + ".") or b.startswith(m + "."))
            for a, b in FUNCTION_LEVEL_IMPORTS
        )
    }
    assert inner == set(), f"imports inside functions: {sorted(inner)}"

    state: dict[str, int] = {}

    def cycle_from(u, stack):
        state[u] = 1
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                return stack[stack.index(v) :] + [v]
            if not state.get(v):
                found = cycle_from(v, stack + [v])
                if found:
                    return found
        state[u] = 2
        return None

    for m in sorted(graph):
        if not state.get(m):
            cycle = cycle_from(m, [m])
            assert cycle is None, " -> ".join(cycle)


def _method_sections() -> set[str]:
    text = open(os.path.join(ROOT, "docs", "method.md")).read()
    out = set()
    for heading in re.findall(r"(?m)^#{2,3} (.+)$", text):
        m = re.match(r"(\d+(?:\.\d+)?)(?:\(([a-c])\))?", heading)
        if m:
            out.add(m.group(1) + (m.group(2) or ""))
        m = re.match(r"Appendix ([A-Z])", heading)
        if m:
            out.add("Appendix " + m.group(1))
    return out


def _project_texts():
    for d, _, files in os.walk(ROOT):
        rel = os.path.relpath(d, ROOT)
        if rel.startswith((".", "build")) or "__pycache__" in rel or "/." in rel:
            continue
        for f in files:
            if f.endswith((".py", ".md")):
                yield os.path.join(d, f)


OLD_REFERENCE = "SPEC" + " §"  # the brief outside the repository the code once cited


def test_every_method_reference_names_an_existing_section():
    sections = _method_sections()
    assert {"2", "4.1", "6a", "6c", "8", "Appendix A"} <= sections
    for path in _project_texts():
        text = open(path, errors="replace").read()
        assert OLD_REFERENCE not in text, f"{path}: {OLD_REFERENCE!r} (the method: docs/method.md)"
        for ref in re.findall(r"docs/method\.md (§[\w.]+|Appendix [A-Z])", text):
            ref = ref.lstrip("§").rstrip(".")
            assert ref in sections, f"{os.path.relpath(path, ROOT)}: docs/method.md {ref}"


@pytest.mark.parametrize("doc", ["docs/method.md", "README.md"])
def test_code_references_in_docs_exist(doc):
    """Every `path.py:name` a document cites is a file with that function, class or
    constant (so the method's 'Ours' lines stay true as code moves)."""
    text = open(os.path.join(ROOT, doc)).read()
    refs = set(re.findall(r"`((?:coleaf_jax|configs|tools|tests)/[\w/]+\.py)(?::([\w.]+))?`", text))
    assert refs
    for path, name in sorted(refs):
        assert os.path.exists(os.path.join(ROOT, path)), f"{doc}: {path}"
        if not name or path.startswith("configs/"):
            continue  # configs/FILE.py:option is a config file's option
        source = open(os.path.join(ROOT, path)).read()
        leaf = name.split(".")[-1]
        assert re.search(rf"(?m)^\s*(def|class)\s+{leaf}\b|^\s*{leaf}\s*[:=]", source), (
            f"{doc}: {path}:{name}"
        )


def test_the_hostile_files_table_names_tests_that_exist():
    """docs/hostile-files.md: every test its table cites is a test of the file its row
    abbreviation names (H, D, V, R, FW, FF, I), so the table stays true as tests move."""
    text = open(os.path.join(ROOT, "docs", "hostile-files.md")).read()
    files = dict(re.findall(r"`(\w+)`\s+(?:is\s+)?`(test_\w+\.py)`", text))
    assert set(files) == {"H", "D", "V", "R", "FW", "FF", "I"}, files
    cited = 0
    for row in (line for line in text.splitlines() if line.startswith("| ")):
        last = row.rstrip(" |").rsplit("|", 1)[-1]
        abbrev = None
        for token in re.findall(r"\b(FW|FF|H|D|V|R|I)\b|`(test_\w+)`", last):
            if token[0]:
                abbrev = token[0]
            elif abbrev:
                source = open(os.path.join(ROOT, "tests", files[abbrev])).read()
                assert f"def {token[1]}(" in source, (files[abbrev], token[1])
                cited += 1
    assert cited >= 40, cited
