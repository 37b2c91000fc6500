"""Teacher placement: one GPU per teacher, tested with Ray's fake GPU resources.

On a machine with real GPUs the same pool puts each teacher on its own device; the `gpu`
marker test checks that for real (skipped here).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
import ray

from raykd.teachers import ResourceError, TeacherConfig, TeacherPool

pytestmark = pytest.mark.ray
MLP = {"name": "mlp", "hidden": [8]}


@pytest.fixture(scope="module")
def fake_gpus() -> Iterator[None]:
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, num_gpus=3, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


def pool(n: int, fraction: float = 1.0) -> TeacherPool:
    return TeacherPool([TeacherConfig(model=MLP, seed=i) for i in range(n)], input_shape=(4,),
                       num_classes=3, use_gpu=True, gpu_fraction=fraction, ready_timeout_s=20)


def test_each_teacher_gets_its_own_gpu(fake_gpus: None) -> None:
    p = pool(3)
    try:
        infos = p.infos()
        ids = [tuple(i["gpu_ids"]) for i in infos]
        assert all(len(g) == 1 for g in ids) and len(set(ids)) == 3
        assert len({i["cuda_visible_devices"] for i in infos}) == 3
        assert len({i["pid"] for i in infos}) == 3
    finally:
        p.shutdown()


def test_fractions_share_gpus_when_the_spec_allows(fake_gpus: None) -> None:
    """Fraction 0.5: six teachers fit on three GPUs, two per GPU, each on exactly one GPU."""
    p = pool(6, fraction=0.5)
    try:
        infos = p.infos()
        assert len(infos) == 6 and len({i["pid"] for i in infos}) == 6
        assert all(len(i["gpu_ids"]) == 1 for i in infos)
        per_gpu = Counter(i["gpu_ids"][0] for i in infos)
        assert per_gpu == {"0": 2, "1": 2, "2": 2}
        assert all(i["cuda_visible_devices"] == i["gpu_ids"][0] for i in infos)
    finally:
        p.shutdown()


def test_too_many_teachers_for_the_gpus_is_a_clear_error(fake_gpus: None) -> None:
    with pytest.raises(ResourceError, match="4 teachers .* need 4 GPUs, the cluster has 3"):
        pool(4)


@pytest.mark.gpu
def test_real_gpu_teacher_runs_on_cuda() -> None:  # pragma: no cover - needs a GPU
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here")
    ray.shutdown()
    ray.init(logging_level="WARNING")
    try:
        p = TeacherPool([TeacherConfig(model=MLP)], input_shape=(4,), num_classes=3, use_gpu=True)
        assert p.infos()[0]["device"] == "cuda"
        p.shutdown()
    finally:
        ray.shutdown()
