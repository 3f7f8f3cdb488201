"""``/docs`` (and ``/ui/``): Swagger UI over ``/openapi.json``, its files served
from the package, never a CDN."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from asu_ci.errors import ConfigError

#: Where the API docs' own assets are served.
DOCS_ASSETS = "/docs/assets"


def router() -> APIRouter:
    routes = APIRouter()
    for path in ("/docs", "/ui/"):
        routes.add_api_route(path, docs, methods=["GET"], include_in_schema=False)
    return routes


def mount_assets(app: FastAPI) -> None:
    app.mount(DOCS_ASSETS, StaticFiles(directory=swagger_ui_static()), name="docs-assets")


def docs() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="asu-ci API",
        swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
    )


def swagger_ui_static() -> Path:
    """The Swagger UI files shipped by the ``swagger-ui-py`` package (not imported:
    only its static folder is used)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the swagger-ui-py package is missing; reinstall asu-ci with pip")
    return Path(next(iter(spec.submodule_search_locations))) / "static"
