"""The package's shape, checked: imports flow one way between the stages, no module reaches
into another's private names, and no module grows past a readable size (ARCHITECTURE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import kinfuse

ROOT = Path(kinfuse.__file__).parent

# Lower layers never import higher ones. Modules in one layer may import each other.
LAYERS = [
    {"errors"},
    {"io", "config", "configfile", "fieldtypes"},
    {"run", "kernels", "models", "generate", "progress"},
    {"corpus"},
    {"data"},
    {"train"},
    {"eval"},
    {"export"},
    {"pipeline", "session"},
    {"sagemaker_job", "sagemaker_aws"},  # a library below the CLI: kinfuse sagemaker-job and its entry use it
    {"cli", "__init__", "__main__", "sagemaker_entry"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}
MAX_LINES = 500


def modules() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if "templates" not in p.relative_to(ROOT).parts)


def top(module: str) -> str:
    """The first component under kinfuse of a dotted module name ("kinfuse.data.mix" -> "data")."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def dotted(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1] if len(parts) > 1 else parts
    return ".".join(parts)


def imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, absolute kinfuse module, imported names) for every kinfuse import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = dotted(path) if path.name == "__init__.py" else dotted(path).rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module == "kinfuse" or module.startswith("kinfuse."):
                out.append((node.lineno, module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names if a.name.startswith("kinfuse")]
    return out


def test_every_module_has_a_layer():
    names = {top(dotted(p)) if dotted(p) != "kinfuse" else "__init__" for p in modules()}
    assert names - set(RANK) == set(), "add new top-level modules to LAYERS (and ARCHITECTURE.md)"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_flow_one_way_and_stay_public(path):
    own = top(dotted(path)) if dotted(path) != "kinfuse" else "__init__"
    problems = []
    for line, module, names in imports(path):
        target = top(module) if module != "kinfuse" else "__init__"
        if module == "kinfuse":  # `from kinfuse import io` style: each name is a module
            targets = [n for n in names if n in RANK]
        else:
            targets = [target]
        for t in targets:
            if RANK[t] > RANK[own]:
                problems.append(f"line {line}: {own} (layer {RANK[own]}) imports {module} {names} (layer {RANK[t]})")
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        if private:
            problems.append(f"line {line}: imports private {private} from {module}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_reaches_into_another_modules_privates(path):
    """`mod._name` where `mod` is an imported kinfuse module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    aliases = set()
    for line, module, names in imports(path):
        aliases.update(names)  # `from . import forgetting`, `from .. import io`
    bad = [f"line {n.lineno}: {n.value.id}.{n.attr}" for n in ast.walk(tree)
           if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in aliases
           and n.attr.startswith("_") and not n.attr.startswith("__")]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_stay_readable(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{lines} lines: split it by concept (ARCHITECTURE.md)"


def test_public_api():
    expected = {
        "Chunker", "ChunkStats", "Comparison", "ConfigError", "Corpus", "CorpusConfig", "CorpusError", "DataConfig",
        "Document", "EvalConfig", "Evaluator", "InfuseConfig", "InfuseResult", "InfusedRun", "KinfuseError", "ModelError",
        "ProbeResult", "QLoRATrainer", "SourceRecord", "Synthesis", "TrainConfig", "TrainResult", "TrainingError",
        "answer_matches", "default_model", "export", "extract_text", "infuse", "load_run", "synthesize", "verify",
    }
    assert set(kinfuse.__all__) == expected
    assert all(hasattr(kinfuse, name) for name in kinfuse.__all__)
