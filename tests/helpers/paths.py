"""Where things are: the checkout's root, the package, and the tests' artifacts folder."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "raykd"
ARTIFACTS = ROOT / "tests" / "artifacts"  # screenshots and reports tests leave for a reader
