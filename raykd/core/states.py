"""The one vocabulary of a job's state: every layer (engine status, control plane, dashboard)
names states from here.

A job submitted to the control plane moves ``queued -> submitting -> pending -> running``
and ends in one of :data:`FINAL_STATES`. A job read from its events alone (``raykd status``,
:func:`raykd.core.status.job_status`) knows only :data:`EventState`, the part of that path its
driver writes down: ``pending`` (no event yet), ``running``, then ``succeeded``, ``failed``
or ``cancelled`` (``timed_out`` is the control plane's verdict, not the driver's).

Torch-free.
"""

from __future__ import annotations

from typing import Literal, get_args

JobState = Literal["queued", "submitting", "pending", "running", "succeeded", "failed", "cancelled",
                   "timed_out"]
"""Every state a job can be in, in the order of its life."""
EventState = Literal["pending", "running", "succeeded", "failed", "cancelled"]
"""The states a job's own events can show (a subset of :data:`JobState`)."""

STATES: tuple[str, ...] = get_args(JobState)
FINAL_STATES: tuple[str, ...] = ("succeeded", "failed", "cancelled", "timed_out")
"""A job in one of these never changes again (unless retried as a new attempt)."""
ACTIVE_STATES: tuple[str, ...] = ("pending", "running")
"""Handed to Ray and not ended: the control plane follows these jobs' events."""
SUBMIT_STATES: tuple[str, ...] = ("queued", "submitting")
"""Not on Ray yet: the scheduler may (still) hand these jobs to Ray."""
SLOT_STATES: tuple[str, ...] = ("submitting", *ACTIVE_STATES)
"""The states that hold one of the control plane's ``max_running`` slots."""
UNFINISHED_STATES: tuple[str, ...] = tuple(s for s in STATES if s not in FINAL_STATES)
"""Waiting or running: counted against a user's job limit; the dashboard streams these."""
TERMINAL_EVENTS: tuple[str, ...] = ("job_finished", "job_failed")
"""The event types that end an attempt."""

assert set(get_args(EventState)) <= set(STATES)
assert set(FINAL_STATES) | set(UNFINISHED_STATES) == set(STATES)
