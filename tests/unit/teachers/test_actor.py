"""Online serving: merged requests come back paired with their own inputs; threads per node.

``TeacherServer`` concatenates concurrent ``logits`` requests into one forward pass and
splits the result back. These tests fire many concurrent requests of different sizes and
contents and check that every caller gets exactly the logits of its own input (against a
teacher built from the same seed in this process), that merging really happened, and that
one bad or cancelled request cannot strand or fail the others. The Ray tests run on a
two-node local cluster, which also shows that a teacher sizes its threads from its own
node's CPUs, not from the cluster's total.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from typing import Any

import numpy as np

from raykd.teachers import Teacher
from raykd.teachers.actor import TeacherServer
from raykd.teachers.teacher import teacher_threads
from raykd.train.steps import node_cpus
from tests.helpers.teachers import CLASSES, MLP, SEEDS, SHAPE, assert_own_rows, inputs, reference

# --- plain asyncio: the batching alone, no Ray ---------------------------------------------


def test_concurrent_callers_get_their_own_rows_from_merged_passes() -> None:
    server = TeacherServer(0, MLP, SHAPE, CLASSES, seed=SEEDS[0])
    server.set_clients(4)
    ref = reference(SEEDS[0])
    rng = np.random.default_rng(0)
    xs = [inputs(rng, int(rows)) for rows in rng.integers(1, 40, size=48)]

    async def caller(x: np.ndarray) -> np.ndarray:
        await asyncio.sleep(random.Random(len(x)).random() * 0.01)  # arrive out of step
        return await server.logits(x)

    async def main() -> list[np.ndarray]:
        return await asyncio.wait_for(asyncio.gather(*(caller(x) for x in xs)), timeout=30)

    outs = asyncio.run(main())
    for x, out in zip(xs, outs, strict=True):
        assert_own_rows(x, out, ref)
    assert server.requests == len(xs)
    assert 1 <= server.teacher.forward_passes < len(xs)
    assert server.teacher.forward_examples == sum(len(x) for x in xs)


def test_a_lone_request_is_served_after_the_wait() -> None:
    server = TeacherServer(0, MLP, SHAPE, CLASSES, seed=SEEDS[0], max_wait_s=0.01)
    server.set_clients(3)
    x = inputs(np.random.default_rng(1), 5)
    out = asyncio.run(asyncio.wait_for(server.logits(x), timeout=10))
    assert_own_rows(x, out, reference(SEEDS[0]))
    assert server.teacher.forward_passes == 1


def test_a_bad_request_fails_only_its_own_caller() -> None:
    """A wrong-shape request merged with good ones: the good ones get their rows, not a hang."""
    server = TeacherServer(0, MLP, SHAPE, CLASSES, seed=SEEDS[0])
    server.set_clients(3)
    rng = np.random.default_rng(2)
    good_a, bad, good_b = inputs(rng, 5), rng.normal(size=(4, 9)).astype(np.float32), inputs(rng, 7)

    async def main() -> list[Any]:
        calls = (server.logits(good_a), server.logits(bad), server.logits(good_b))
        return await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), timeout=10)

    out_a, err, out_b = asyncio.run(main())
    ref = reference(SEEDS[0])
    assert_own_rows(good_a, out_a, ref)
    assert_own_rows(good_b, out_b, ref)
    assert isinstance(err, Exception)


def test_a_cancelled_caller_does_not_strand_the_others() -> None:
    server = TeacherServer(0, MLP, SHAPE, CLASSES, seed=SEEDS[0])
    server.set_clients(2)
    slow = server.teacher.logits

    def slow_logits(x: np.ndarray) -> np.ndarray:
        time.sleep(0.2)
        return slow(x)

    server.teacher.logits = slow_logits  # type: ignore[method-assign]
    rng = np.random.default_rng(3)
    first, second = inputs(rng, 3), inputs(rng, 4)

    async def main() -> np.ndarray:
        waiting = asyncio.ensure_future(server.logits(first))
        await asyncio.sleep(0)
        trigger = asyncio.ensure_future(server.logits(second))  # fills the batch: the pass starts
        await asyncio.sleep(0.05)
        trigger.cancel()
        return await asyncio.wait_for(waiting, timeout=10)

    assert_own_rows(first, asyncio.run(main()), reference(SEEDS[0]))


def test_threads_split_the_cpus_among_teachers() -> None:
    assert teacher_threads(8, 3) == 2
    assert teacher_threads(2, 4) == 1
    assert teacher_threads(1, 0) == 1
    assert node_cpus() == len(os.sched_getaffinity(0))  # outside Ray: what this process may use
    assert Teacher(0, MLP, SHAPE, CLASSES, threads=3).info()["threads"] == 3  # benches pass it


# --- a real Ray cluster: TeacherPool's actors ---------------------------------------------








