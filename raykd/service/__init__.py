"""The control plane: a FastAPI service that submits, queues, follows and manages jobs on Ray.

It imports the spec, the result schema and the events, plus ``ray.job_submission``;
never torch. Build the app with :func:`raykd.service.app.create_app`.
"""
