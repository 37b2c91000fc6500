"""The service's state: what the app's lifespan builds and every route reaches."""

from __future__ import annotations

from dataclasses import dataclass

from raykd.service.capacity import ClusterView
from raykd.service.ray_head import OwnedHead
from raykd.service.ray_jobs import RayJobs
from raykd.service.scheduler import Scheduler
from raykd.service.settings import Settings
from raykd.service.store import Store


@dataclass
class ServiceState:
    """What the routes reach through ``request.app.state.raykd``."""

    settings: Settings
    store: Store
    ray: RayJobs
    scheduler: Scheduler
    head: OwnedHead | None = None
    cluster: ClusterView | None = None  # the cluster's resources, for refusing what never fits
