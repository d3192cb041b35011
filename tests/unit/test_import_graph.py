"""Import circles, counting function-level and TYPE_CHECKING imports (bench/import_graph.py): the tool finds them in a
package written for the purpose, and headscope has none (issue 16 removed the last two)."""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _tool():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "bench" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["import_graph"] = module  # dataclasses resolve their module while the class is made
    spec.loader.exec_module(module)
    return module


def test_circles_through_function_level_and_type_checking_imports_are_found(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("def later():\n    from pkg import c\n")
    (package / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import B\n")
    (package / "b.py").write_text("from . import a\n")
    (package / "c.py").write_text("import pkg.sub\n")
    (package / "d.py").write_text("import pkg.a\nimport os\n")  # no circle through d
    tool = _tool()
    graph = tool.import_graph(package)
    assert {site.where for site in graph["pkg.a"]} == {"TYPE_CHECKING"}
    assert [site.where for site in graph["pkg.sub"]] == ["function"]
    assert sorted(map(tuple, tool.strongly_connected(graph))) == [("pkg.a", "pkg.b"), ("pkg.c", "pkg.sub")]
    assert tool.shortest_cycle(graph, ["pkg.a", "pkg.b"]) == ["pkg.a", "pkg.b", "pkg.a"]


def test_headscope_has_no_import_circle():
    tool = _tool()
    graph = tool.import_graph(ROOT / "headscope")
    circles = [tool.shortest_cycle(graph, members) for members in tool.strongly_connected(graph)]
    assert circles == []
