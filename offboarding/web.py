"""The one web app: HRIS intake and the approval pages."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import RedirectResponse

from approvals.web import approvals_router
from offboarding.intake import intake_router
from offboarding.runs import RunGateway
from offboarding.services import Services


def create_app(services: Services, gateway: RunGateway | None = None) -> FastAPI:
    gateway = gateway or RunGateway(services.settings.deployment)
    app = FastAPI(
        title="Offboarding service",
        version="0.1.0",
        description=(
            "Receives signed employee.terminated events from the HR system and serves the "
            "four-eyes approval pages. Offboarding runs are visible in the Prefect UI."
        ),
    )
    app.include_router(intake_router(services, gateway))
    app.include_router(approvals_router(services, gateway))

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/docs")

    return app
