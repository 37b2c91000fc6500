"""A submitted job reads only what its data roots hold, checked on the file the driver opens
(:mod:`raykd.data.paths`): a file or image swapped for a link after the service admitted
the spec is refused by name, without a byte of what the link points to; a service's
``.service`` directory and ``/proc`` are never data; errors never echo a file's first line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from raykd.core.events import JobFailed, read_events
from raykd.core.jobdir import JobLayout
from raykd.core.spec import JobSpec
from raykd.data import DataError, load_dataset
from raykd.data.paths import ROOTS_ENV, data_roots_env
from raykd.engine.run import run_job
from raykd.service.policy import admit
from raykd.service.settings import Settings
from tests.helpers.data import digit_folder
from tests.helpers.specs import digits_spec

SECRET = "s3cr3t-admin-token-0123456789abcdefXYZ"


def table(path: Path) -> Path:
    """A small valid table: two numeric columns and a label."""
    rng = np.random.default_rng(0)
    pd.DataFrame({"a": rng.normal(size=60), "b": rng.normal(size=60),
                  "label": ["x", "y", "z"] * 20}).to_csv(path, index=False)
    return path


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A data root, a storage with a token in ``.service``, and the driver's environment as the
    service's scheduler sets it."""
    root, storage = tmp_path / "data", tmp_path / "storage"
    root.mkdir()
    (storage / ".service").mkdir(parents=True)
    token = storage / ".service" / "token"
    token.write_text(SECRET + "\n")
    outside = tmp_path / "elsewhere.csv"
    outside.write_text(f"{SECRET}\n1\n")
    settings = Settings(token=SECRET, storage=storage, data_roots=[root])  # type: ignore[arg-type]
    monkeypatch.setenv(ROOTS_ENV, data_roots_env(settings.data_roots)[ROOTS_ENV])
    return {"root": root, "storage": storage, "token": token, "outside": outside,
            "settings": settings}


def admitted(settings: Settings, dataset: Path) -> JobSpec:
    spec = JobSpec.model_validate(digits_spec("ignored", data={"dataset": str(dataset), "seed": 0}))
    return admit(spec, settings)


def refused_run(spec: JobSpec, job_id: str) -> str:
    """Run the job as its driver would; the one-line error it fails with (also its event's)."""
    with pytest.raises(DataError) as err:
        run_job(spec, job_id=job_id, log=lambda _: None)
    events = read_events(Path(spec.storage) / job_id / JobLayout.EVENTS)
    failed = [e for e in events if isinstance(e, JobFailed)]
    assert failed and failed[-1].message == str(err.value)
    return str(err.value)


@pytest.mark.parametrize("target", ["outside", "token", "environ"])
def test_a_data_file_swapped_for_a_link_after_admission_is_refused_by_the_driver(
        service: dict[str, Any], target: str) -> None:
    data = table(service["root"] / "x.csv")
    spec = admitted(service["settings"], data)  # accepted: a table under the data root
    data.unlink()
    data.symlink_to("/proc/self/environ" if target == "environ" else service[target])
    message = refused_run(spec, f"swap-{target}")
    assert "x.csv" in message and "may not be read" in message
    assert SECRET not in message and "RAYKD" not in message
    assert "elsewhere" not in message  # not even where the link points


def test_the_service_directory_and_proc_are_never_data_even_without_roots(
        service: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(ROOTS_ENV)  # `raykd run` on one's own machine: any path, but these
    link, environ = tmp_path / "t.csv", tmp_path / "e.csv"
    inside = service["storage"] / ".service" / "u.csv"
    link.symlink_to(service["token"])
    environ.symlink_to("/proc/self/environ")
    inside.write_text(service["token"].read_text())
    for source in (link, environ, inside):
        with pytest.raises(DataError, match="never reads data from") as err:
            load_dataset(source)
        assert SECRET not in str(err.value)
    assert load_dataset(table(tmp_path / "ok.csv")).num_classes == 3  # the rest is readable


def test_an_image_folder_with_a_linked_image_inside_is_refused_by_name(
        service: dict[str, Any], tmp_path: Path) -> None:
    folder = digit_folder(service["root"] / "digits", per_class=4)
    spec = admitted(service["settings"], folder)  # the folder is under the root
    private = digit_folder(tmp_path / "private", per_class=1)  # a picture outside the roots
    (folder / "one" / "one-zz.png").symlink_to(next((private / "one").iterdir()))
    message = refused_run(spec, "swap-image")
    assert "one-zz.png" in message and "outside the data roots" in message
    (folder / "one" / "one-zz.png").unlink()
    (folder / "zero").rename(tmp_path / "zero")  # a whole class folder linked from elsewhere
    (folder / "zero").symlink_to(tmp_path / "zero")
    with pytest.raises(DataError, match="class folder .*zero.* outside the data roots"):
        load_dataset(folder)


def test_roots_set_to_an_empty_list_read_no_file_and_a_bad_value_reads_none(
        service: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    data = table(service["root"] / "x.csv")
    assert load_dataset(data).num_classes == 3
    monkeypatch.setenv(ROOTS_ENV, "[]")
    with pytest.raises(DataError, match="none: built-in datasets only"):
        load_dataset(data)
    monkeypatch.setenv(ROOTS_ENV, "/data")  # not JSON: refuse rather than allow everything
    with pytest.raises(DataError, match="JSON list of absolute paths"):
        load_dataset(data)


def test_the_roots_variable_is_the_format_the_service_settings_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    roots = [tmp_path / "a", tmp_path / "b c"]
    env = data_roots_env(roots)
    assert json.loads(env[ROOTS_ENV]) == [str(r) for r in roots]
    monkeypatch.setenv(ROOTS_ENV, env[ROOTS_ENV])
    assert Settings(token=SECRET).data_roots == roots  # type: ignore[arg-type]


def test_a_given_checkpoint_swapped_for_a_link_is_refused(service: dict[str, Any]) -> None:
    from raykd.data.paths import checked_checkpoint

    ckpt = service["root"] / "t.safetensors"
    ckpt.write_bytes(b"\0" * 16)
    assert checked_checkpoint(str(ckpt)) == str(ckpt.resolve())
    ckpt.unlink()
    ckpt.symlink_to(service["outside"])
    with pytest.raises(DataError, match="checkpoint .*t.safetensors.* outside the data roots"):
        checked_checkpoint(str(ckpt))


@pytest.mark.parametrize("first_line", [
    f"RAYKD_TOKEN={SECRET}",
    SECRET,
    '{"alice": "' + SECRET + '"}',
])
def test_a_missing_label_column_error_does_not_echo_the_first_line(
        tmp_path: Path, first_line: str) -> None:
    path = tmp_path / "notes.csv"
    path.write_text(f"{first_line}\n1\n")
    with pytest.raises(DataError, match="label column 'label' not found") as err:
        load_dataset(path)
    assert SECRET not in str(err.value) and "not shown" in str(err.value)
    plain = tmp_path / "plain.csv"
    plain.write_text("height,weight\n1,2\n")
    with pytest.raises(DataError, match=r"columns found: \['height', 'weight'\];"):
        load_dataset(plain)
