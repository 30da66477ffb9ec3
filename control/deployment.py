"""The control API as a Ray Serve application (mounted under /api)."""

from __future__ import annotations

from ray import serve
from ray.serve.deployment import Application

from control.app import create_app
from control.config import AuthConfig
from pipelines.actor import PipelinesClient
from serve.metrics.actor import MetricsClient


def build_control(
    *,
    database_url: str,
    metrics: MetricsClient,
    num_cpus: float,
    auth: AuthConfig | None = None,
    pipelines: PipelinesClient | None = None,
    home: str | None = None,
    static_models: list[str] | tuple[str, ...] = (),
) -> Application:
    # A builder, evaluated in the replica: the FastAPI app is created there, not pickled.
    def app():
        return create_app(
            database_url=database_url, usage=metrics, auth=auth, pipelines=pipelines, home=home,
            static_models=static_models, echo_request_id=False,  # Serve's ingress sends it back
        )  # fmt: skip

    @serve.deployment(
        name="ControlAPI",
        ray_actor_options={"num_cpus": num_cpus},
        # Serve's default is 5: five `foundry pipelines run --wait` streams would queue every other call.
        max_ongoing_requests=256,
        graceful_shutdown_wait_loop_s=0.5,
        graceful_shutdown_timeout_s=30,
    )
    @serve.ingress(app)
    class ControlAPI:
        pass

    return ControlAPI.bind()
