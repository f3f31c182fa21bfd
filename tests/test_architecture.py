"""The layering of DEVELOPERS.md, enforced: ``tests/import_graph.py`` must find no violation."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "import_graph.py"


def _graph():
    spec = importlib.util.spec_from_file_location("import_graph", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dependencies_point_one_way():
    assert _graph().violations() == []


def test_the_check_sees_a_violation(tmp_path, monkeypatch):
    graph = _graph()
    (tmp_path / "foundations").mkdir()
    (tmp_path / "foundations" / "bad.py").write_text("from runners.train import main\n")
    (tmp_path / "methods").mkdir()
    (tmp_path / "methods" / "a.py").write_text("import methods.b\n")
    (tmp_path / "methods" / "b.py").write_text("import methods.a\n\ndef f():\n    from runners import train\n")
    monkeypatch.setattr(graph, "ROOT", tmp_path)
    found = graph.violations()
    assert "foundations.bad -> runners.train.main" in found
    assert "methods.b -> runners.train (in a function)" in found
    assert any(v.startswith("cycle: methods.a -> methods.b -> methods.a") for v in found)
