"""TeacherPool's actors on a real two-node local Ray: threads sized from their own node's CPUs,
and concurrent workers each get their own teacher's logits (the batching alone, without Ray:
``tests/unit/teachers/test_actor.py``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from raykd.teachers import TeacherConfig, TeacherPool
from tests.helpers.teachers import CLASSES, MLP, SEEDS, SHAPE, assert_own_rows, inputs, reference


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[dict[str, float]]:
    """A head with 2 CPUs and a second node with 6: the cluster claims 8, any node at most 6."""
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    # the session's auth mode (token, see conftest): switching modes mid-process breaks Ray
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False}
    )
    try:
        cluster.add_node(num_cpus=6)
        ray.init(address=cluster.address, logging_level="WARNING")
        cluster.wait_for_nodes()
        yield {n["NodeID"]: n["Resources"]["CPU"] for n in ray.nodes() if n["Alive"]}
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def pool(two_nodes: dict[str, float]) -> Iterator[TeacherPool]:
    p = TeacherPool(
        [TeacherConfig(model=MLP, seed=s) for s in SEEDS],
        input_shape=SHAPE,
        num_classes=CLASSES,
        use_gpu=False,
    )
    try:
        yield p
    finally:
        p.shutdown()


@pytest.mark.slow
@pytest.mark.ray
def test_teacher_threads_follow_their_node_not_the_cluster(
    pool: TeacherPool, two_nodes: dict[str, float]
) -> None:
    import ray

    infos = pool.infos()
    cluster_cpus = int(ray.cluster_resources()["CPU"])
    assert cluster_cpus == 8
    for info in infos:
        on_node = sum(i["node_id"] == info["node_id"] for i in infos)
        node = min(int(two_nodes[info["node_id"]]), len(os.sched_getaffinity(0)))
        assert info["threads"] == info["torch_threads"] == max(1, node // on_node)
        assert info["threads"] < cluster_cpus // len(infos)  # the old rule: 8 // 2 = 4
    assert pool.threads == [i["threads"] for i in infos]


@pytest.mark.slow
@pytest.mark.ray
def test_concurrent_workers_get_their_own_teachers_logits(pool: TeacherPool) -> None:
    import ray

    refs_by_seed = {s: reference(s) for s in SEEDS}
    assert pool.weights_hashes() == [refs_by_seed[s].weights_hash() for s in SEEDS]
    before = pool.infos()
    pool.set_clients(4)

    def worker(w: int) -> list[tuple[np.ndarray, list[np.ndarray]]]:
        """A student worker: each step asks every teacher for its own batch's logits."""
        rng = np.random.default_rng(100 + w)
        steps = []
        for _ in range(6):
            x = inputs(rng, int(rng.integers(1, 33)))
            steps.append((x, ray.get([a.logits.remote(x) for a in pool.actors])))
        return steps

    with ThreadPoolExecutor(4) as ex:
        runs = list(ex.map(worker, range(4)))
    rng = np.random.default_rng(7)
    burst = [inputs(rng, int(rows)) for rows in rng.integers(1, 50, size=24)]
    burst_out = ray.get([pool.actors[i % 2].logits.remote(x) for i, x in enumerate(burst)])

    for steps in runs:
        for x, outs in steps:
            for seed, out in zip(SEEDS, outs, strict=True):
                assert_own_rows(x, out, refs_by_seed[seed])
    for i, (x, out) in enumerate(zip(burst, burst_out, strict=True)):
        assert_own_rows(x, out, refs_by_seed[SEEDS[i % 2]])
    after = pool.infos()
    for b, a in zip(before, after, strict=True):
        requests = a["requests"] - b["requests"]
        assert requests == 4 * 6 + 12
        assert a["forward_passes"] - b["forward_passes"] < requests  # requests were merged
