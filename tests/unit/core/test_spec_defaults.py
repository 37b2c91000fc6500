"""The spec's defaults are the documented ones: born-again generations get their own seeds,
annealing targets the plain softmax, a validation split is required, teacher training has
no second seed.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from raykd.core.spec import parse_spec
from raykd.engine.students import generation_seed
from tests.helpers.cli import cli_exit, one_line_error
from tests.helpers.specs import digits_spec


def test_born_again_generations_get_their_own_seeds() -> None:
    seeds = [generation_seed(7, g) for g in (1, 2, 3)]
    assert seeds[0] == 7 and len(set(seeds)) == 3
    assert seeds == [generation_seed(7, g) for g in (1, 2, 3)]  # derived, reproducible
    assert generation_seed(8, 2) != seeds[1]


def test_annealing_targets_the_plain_softmax_by_default(tmp_path: Path) -> None:
    spec = parse_spec(
        digits_spec(
            str(tmp_path),
            methods=[
                {"method": "annealing"},
                {"method": "kd"},
                {"method": "annealing", "temperature": 3.0},
            ],
        )
    )
    assert [m.temperature for m in spec.methods] == [1.0, 4.0, 3.0]


def test_val_fraction_zero_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(digits_spec(str(tmp_path))))
    line = one_line_error(*cli_exit("validate", str(spec), "--set", "data.val_fraction=0"))
    assert "data.val_fraction" in line and "greater than 0" in line


def test_teacher_train_has_no_second_seed(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(digits_spec(str(tmp_path))))
    line = one_line_error(*cli_exit("validate", str(spec), "--set", "teacher_train.seed=5"))
    assert "teacher_train.seed" in line and "Extra inputs are not permitted" in line
