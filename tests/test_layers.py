"""Data flows one way: a module imports only from stages to its left."""
import ast
from pathlib import Path

ORDER = ["settings", "types", "text", "load", "chunk", "embed", "index", "retrieve", "extractive", "generate", "cite",
         "api", "evaluate", "bench", "ui", "cli"]
PKG = Path(__file__).resolve().parent.parent / "qa"


def test_imports_point_left():
    for file in PKG.glob("*.py"):
        if file.stem == "__init__":
            continue
        assert file.stem in ORDER, f"{file.stem} has no place in the stage order"
        rank = ORDER.index(file.stem)
        for node in ast.walk(ast.parse(file.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("qa."):
                names = [node.module.split(".")[1]]
            elif isinstance(node, ast.Import):
                names = [a.name.split(".")[1] for a in node.names if a.name.startswith("qa.")]
            for name in names:
                assert ORDER.index(name) < rank, f"qa.{file.stem} imports qa.{name}, which is not to its left"
