"""Artifacts (raykd.service.artifacts): what is sent is the file that was checked; the result
summary the API shows for a job directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from raykd.service.artifacts import open_artifact
from raykd.service.settings import Settings
from tests.helpers.fake_ray import HEADERS, post_job


def test_an_artifact_is_sent_from_the_file_opened_and_a_planted_link_is_refused(
    app: Any, settings: Settings, tmp_path: Path
) -> None:
    """A download opens the file once, without following links: a listed name that is a link
    to a file outside the job is 404 with the reason; real files (nested too) come whole."""
    client, _, _ = app
    assert post_job(client, job_id="linked").status_code == 201
    root = settings.storage / "linked"
    (root / "students").mkdir(parents=True)
    (root / "result.json").write_text('{"mine": true}')
    (root / "students" / "s.safetensors").write_bytes(b"weights" * 1000)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_text('{"secret": "outside the job"}')
    (root / "leak.json").symlink_to(outside / "secret.json")
    base = "/api/v1/jobs/linked/artifacts"
    (root / "linked-dir").symlink_to(outside, target_is_directory=True)
    listed = {a["path"] for a in client.get(base, headers=HEADERS).json()}
    assert {"result.json", "students/s.safetensors"} <= listed
    assert not {"leak.json", "linked-dir/secret.json"} & listed  # no name or size of a target
    got = client.get(f"{base}/result.json", headers=HEADERS)
    assert (got.status_code, got.content) == (200, b'{"mine": true}')
    assert got.headers["content-disposition"] == 'attachment; filename="result.json"'
    got = client.get(f"{base}/students/s.safetensors", headers=HEADERS)
    assert (got.status_code, got.content) == (200, b"weights" * 1000)
    leak = client.get(f"{base}/leak.json", headers=HEADERS)
    assert leak.status_code == 404 and b"outside the job" not in leak.content
    assert leak.json()["detail"].startswith("no artifact 'leak.json' in job 'linked'")


def test_a_directory_swapped_for_a_link_after_the_listing_is_not_followed(tmp_path: Path) -> None:
    """The race the listing cannot see: ``students/`` checked, then replaced by a link to a
    directory outside the job. Opening refuses it; a file opened before the swap stays the
    one that was checked."""
    root, outside = tmp_path / "job", tmp_path / "outside"
    (root / "students").mkdir(parents=True)
    outside.mkdir()
    (root / "students" / "s.safetensors").write_bytes(b"the job's")
    (outside / "s.safetensors").write_bytes(b"someone else's")
    opened = open_artifact(root, "students/s.safetensors")
    (root / "students").rename(root / "moved")
    (root / "students").symlink_to(outside, target_is_directory=True)
    try:
        assert os.read(opened, 100) == b"the job's"
    finally:
        os.close(opened)
    with pytest.raises(OSError):
        open_artifact(root, "students/s.safetensors")
    os.mkfifo(root / "pipe.json")  # never blocks the request waiting for a writer
    for bad in ("pipe.json", "moved", "../outside/s.safetensors", "moved/../moved/s.safetensors"):
        with pytest.raises(OSError):
            open_artifact(root, bad)
    assert os.read(fd := open_artifact(root, "moved/s.safetensors"), 100) == b"the job's"
    os.close(fd)


def test_a_sweeps_summary_names_what_ranked_its_trials(tmp_path: Path) -> None:
    """The API's result summary of a span sweep says its trials were ranked by SQuAD val F1."""
    import json

    from raykd.service.follower import result_summary

    sweep = {"metric": "val_f1", "best": {"trial_id": "a"}}
    (tmp_path / "sweep.json").write_text(json.dumps(sweep))
    summary = result_summary(tmp_path)
    assert summary is not None and summary["metric"] == "val_f1" and summary["file"] == "sweep.json"
