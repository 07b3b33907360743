"""Data flows one way: a module imports only from stages to its left."""
import ast
from pathlib import Path

ORDER = ["settings", "types", "text", "load", "chunk", "embed", "parse", "index", "question", "retrieve", "extractive",
         "generate", "cite", "api", "feedback", "sources", "evaluation", "bench", "ui", "cli"]
PKG = Path(__file__).resolve().parent.parent / "qa"


def test_imports_point_left():
    files = [(f, f.stem) for f in PKG.glob("*.py") if f.stem != "__init__"]
    files += [(f, f.parent.name) for f in PKG.glob("*/*.py")]  # a stage may be a package
    for file, stage in files:
        assert stage in ORDER, f"{stage} has no place in the stage order"
        rank = ORDER.index(stage)
        for node in ast.walk(ast.parse(file.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("qa."):
                names = [node.module.split(".")[1]]
            elif isinstance(node, ast.Import):
                names = [a.name.split(".")[1] for a in node.names if a.name.startswith("qa.")]
            for name in names:
                assert name == stage or ORDER.index(name) < rank, f"qa.{stage} imports qa.{name}, not to its left"
