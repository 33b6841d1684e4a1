"""The API's own documentation: the OpenAPI spec and a Swagger UI page that works offline.

The spec is at `/api/openapi.json` and, where tools look for it first, `/openapi.json`.
The page loads Swagger UI from the npm package `swagger-ui-dist` (served by the web layer
under /vendor/swagger-ui, like every front-end library; no CDN) and starts it from a
script file, not an inline script: the Content-Security-Policy allows no inline script.
Both are plain routes, like FastAPI's own docs routes: public and outside the spec.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

SPEC_URL = "/api/openapi.json"
DOCS_URL = "/api/docs"
INIT_URL = "/api/docs/init.js"
ASSETS = "/vendor/swagger-ui"

PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>KVM Manager API</title>
<link rel="stylesheet" href="{ASSETS}/swagger-ui.css">
<link rel="icon" type="image/png" href="{ASSETS}/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui" data-spec="{SPEC_URL}"></div>
<script src="{ASSETS}/swagger-ui-bundle.js"></script>
<script src="{INIT_URL}"></script>
</body>
</html>
"""

# validatorUrl null: Swagger UI would otherwise send the spec to an online validator.
INIT_JS = """"use strict";
window.ui = SwaggerUIBundle({
  url: document.getElementById("swagger-ui").dataset.spec,
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
"""


def install_docs(app: FastAPI) -> None:
    async def spec(_request: Request) -> JSONResponse:
        return JSONResponse(app.openapi())

    async def page(_request: Request) -> HTMLResponse:
        return HTMLResponse(PAGE)

    async def init(_request: Request) -> Response:
        return Response(INIT_JS, media_type="text/javascript")

    app.add_route("/openapi.json", spec, include_in_schema=False)
    app.add_route(DOCS_URL, page, include_in_schema=False)
    app.add_route(INIT_URL, init, include_in_schema=False)
