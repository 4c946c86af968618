"""What the services under test logged as errors, for a failing test's message: their
logs live in the test's tmp_path, which CI does not keep."""

from __future__ import annotations

import json
from pathlib import Path


def logged_errors(directory: Path, limit: int = 4000) -> str:
    """The error lines (JSON level error, or anything that is not JSON) of every *.log."""
    shown = []
    for path in sorted(directory.glob("*.log")):
        for line in path.read_text(errors="replace").splitlines():
            try:
                level = json.loads(line).get("level")
            except (ValueError, AttributeError):
                level = "raw"
            if level in {"error", "critical", "raw"}:
                shown.append(f"{path.name}: {line}")
    text = "\n".join(shown)
    return text[-limit:] if text else "(no errors logged)"
