"""The service's calls to Ray's job API under their deadline, against a Ray that never answers."""

from __future__ import annotations

import time

import pytest

from raykd.service.ray_jobs import RayJobs, RayUnavailable
from tests.helpers.net import HungRay


def test_a_call_to_a_hung_ray_ends_at_its_deadline_and_the_next_is_not_sent() -> None:
    """A request Ray never answers fails after ``timeout_s`` (a 503 to the API's caller), and
    for a moment after that no request is sent at all (callers get the same answer at once)."""
    hung = HungRay()
    try:
        jobs = RayJobs(hung.url, timeout_s=1.0)
        t0 = time.monotonic()
        with pytest.raises(RayUnavailable, match=r"did not answer the log request within 1 s"):
            jobs.logs("some-job")
        took = time.monotonic() - t0
        assert 1.0 <= took < 10, took
        deadline = time.monotonic() + 10
        while not hung.held:  # the hung server's thread takes the connection (it did connect)
            assert time.monotonic() < deadline, "the request never reached the hung server"
            time.sleep(0.01)
        held = len(hung.held)
        t0 = time.monotonic()
        with pytest.raises(RayUnavailable, match="a moment ago; the status request was not sent"):
            jobs.status("some-job")
        assert time.monotonic() - t0 < 0.5 and len(hung.held) == held  # nothing reached Ray
    finally:
        hung.release()
