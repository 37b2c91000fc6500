"""The job spec's package: one module per section, every public name importable from
``raykd.core.spec``, and specs pickled before the split still load."""

from __future__ import annotations

import importlib
import pickle

import pytest

import raykd.core.spec as spec_package
from raykd.core.spec import JobSpec, parse_spec

SECTIONS = ("section", "models", "training", "data", "sweep", "job")
SPEC = {
    "name": "pickled",
    "teachers": [{"model": {"name": "cnn", "width": 4}, "seed": 1}],
    "student": {"model": {"name": "mlp", "hidden": [8]}},
    "methods": [{"method": "wkd", "incorrect_weight": 0.5}],
    "sweep": {"incorrect_weight": {"values": [0.25, 0.5]}},
}


@pytest.mark.parametrize("section", SECTIONS)
def test_every_public_name_of_a_section_is_importable_from_the_package(section: str) -> None:
    module = importlib.import_module(f"raykd.core.spec.{section}")
    missing = [n for n in module.__all__
               if getattr(spec_package, n, None) is not getattr(module, n)]
    assert missing == []
    assert set(module.__all__) <= set(spec_package.__all__)


def test_a_spec_pickled_under_the_single_module_still_loads() -> None:
    """Tune's saved state pickles specs; before the split every class lived in
    ``raykd.core.spec`` itself, which must still resolve them."""
    spec = parse_spec(SPEC)
    data = pickle.dumps(spec, protocol=0)
    old = b"craykd.core.spec\n"
    moved = data
    for section in SECTIONS:
        moved = moved.replace(f"craykd.core.spec.{section}\n".encode(), old)
    assert moved != data and b"craykd.core.spec." not in moved
    loaded = pickle.loads(moved)
    assert isinstance(loaded, JobSpec) and loaded == spec
