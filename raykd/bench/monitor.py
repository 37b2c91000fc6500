"""What a benchmark row costs the machine: :class:`RowMonitor` samples this process tree's
memory and CPU while a row runs (see :mod:`raykd.bench.speed`); :func:`ray_for` gives a row
the Ray it needs (running for a Ray row, shut down for a plain one)."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from raykd.engine import ensure_ray


def load_psutil() -> Any:
    """psutil: installed, or the copy Ray vendors (importing ray puts it on ``sys.path``)."""
    import importlib

    try:
        return importlib.import_module("psutil")
    except ModuleNotFoundError:
        importlib.import_module("ray")
        return importlib.import_module("psutil")


class RowMonitor(threading.Thread):
    """Samples this process tree every second while a row runs: memory and CPU.

    - ``peak_workers_mb``: peak of the summed RSS of the ``ray::`` worker processes under
      this driver (train controller and workers, teacher actors), split by process title
      in ``peak_by_title``; pre-started idle workers and the head's own processes (GCS,
      raylet, dashboard, agents) are summed apart as ``peak_head_mb``. Shared
      object-store pages count in every process that maps them.
    - ``own_cpu_s``: CPU seconds this tree used; ``other_share``: the share of the
      machine's CPU that processes outside this tree took during the row (other users'
      work disturbs the timings). Each process's CPU time is read while it lives, since
      the raylet's exited workers leave no trace in its children's times; a process's
      last second may be missed.
    """

    SYSTEM = ("ray::IDLE", "ray::DashboardAgent", "ray::RuntimeEnvAgent")

    def __init__(self, interval_s: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.interval_s = interval_s
        self.peak_workers_mb = self.peak_head_mb = self.other_share = self.own_cpu_s = 0.0
        self.peak_by_title: dict[str, float] = {}
        self._cpu: dict[tuple[int, float], list[float]] = {}  # (pid, created): [first, last]
        self._stop_event = threading.Event()
        self._start: tuple[float, float] = (0.0, 0.0)

    def sample(self, *, first: bool = False) -> None:
        psutil = load_psutil()
        me = psutil.Process()
        head, by_title = 0.0, {}
        for proc in [me, *me.children(recursive=True)]:
            try:
                with proc.oneshot():
                    key, times = (proc.pid, proc.create_time()), proc.cpu_times()
                    title, mb = (proc.cmdline() or [""])[0], proc.memory_info().rss / 2**20
            except (psutil.Error, OSError):
                continue
            used = times.user + times.system
            self._cpu.setdefault(key, [used if first else 0.0, used])[1] = used
            if proc.pid == me.pid:
                continue
            if title.startswith("ray::") and not title.startswith(self.SYSTEM):
                name = title.split(".")[0].split()[0]
                by_title[name] = by_title.get(name, 0.0) + mb
            else:
                head += mb
        if sum(by_title.values()) > self.peak_workers_mb:
            self.peak_workers_mb, self.peak_by_title = sum(by_title.values()), by_title
        self.peak_head_mb = max(self.peak_head_mb, head)

    @staticmethod
    def _busy() -> float:
        total = load_psutil().cpu_times()
        return sum(total) - total.idle - getattr(total, "iowait", 0.0)

    def run(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> RowMonitor:
        self._start = (time.perf_counter(), self._busy())
        self.sample(first=True)
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop_event.set()
        self.join()
        self.sample()
        wall, busy = time.perf_counter() - self._start[0], self._busy() - self._start[1]
        self.own_cpu_s = sum(last - first for first, last in self._cpu.values())
        capacity = max(1e-9, wall * (os.cpu_count() or 1))
        self.other_share = max(0.0, min(1.0, (busy - self.own_cpu_s) / capacity))


def wait_for_ray_exit(timeout_s: float = 20.0) -> None:
    """Shut down the local Ray this bench started and wait for its processes to go."""
    import ray

    psutil = load_psutil()
    children = psutil.Process().children(recursive=True)
    ray.shutdown()
    psutil.wait_procs(children, timeout=timeout_s)


def ray_for(ray_row: bool, started_ray: bool) -> None:
    """Ray running for a Ray row; shut down (if this bench started it) for a plain row."""
    import ray

    if ray_row and not ray.is_initialized():
        ensure_ray()
    elif not ray_row and started_ray and ray.is_initialized():
        wait_for_ray_exit()
