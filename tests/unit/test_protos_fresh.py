"""The committed generated code matches the .proto files (run `make protos` when this fails)."""

from __future__ import annotations

import filecmp
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "protos" / "python" / "src"


def load_generator() -> object:
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_protos"] = module
    spec.loader.exec_module(module)
    return module


def tree(root: Path) -> dict[str, Path]:
    return {
        str(p.relative_to(root)): p
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    generator = load_generator()
    generator.generate(tmp_path)  # type: ignore[attr-defined]
    fresh, committed = tree(tmp_path / "kizuna"), tree(COMMITTED / "kizuna")
    assert sorted(fresh) == sorted(committed), "generated files differ: run make protos"
    stale = [name for name in fresh if not filecmp.cmp(fresh[name], committed[name], shallow=False)]
    assert stale == [], f"stale generated code, run make protos: {stale}"
