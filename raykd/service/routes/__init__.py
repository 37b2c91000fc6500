"""The routers: health (no auth) and jobs (``/api/v1``)."""
