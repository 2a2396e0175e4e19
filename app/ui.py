"""The web page under /ui/: one server-rendered template and its static script and stylesheet.

Transport only, like the rest of app/: the page reads and writes nothing itself. Its script calls the
service's own JSON API (the same endpoints as curl), sending the admin token, which the user types into
the page and the browser keeps in sessionStorage, as the bearer header. The token never reaches this
blueprint: it is not in a URL, a cookie or the HTML.

Every response of the blueprint (the page and its static files) carries a Content-Security-Policy that
allows scripts, styles and connections from this origin only and no inline script or style, so that an
id or a feature name that slipped into the markup unescaped still could not run.
"""

from __future__ import annotations

from flask import Blueprint, current_app, render_template, request

ui = Blueprint("ui", __name__, url_prefix="/ui", template_folder="templates", static_folder="static")

#: no inline script or style, nothing from another origin; the page is never framed
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    "connect-src 'self'",
    "form-action 'self'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
])


@ui.get("/")
def index():
    """The page; what it shows is chosen by its query string (?user=, ?item=, ?view=model) in the browser."""
    settings = current_app.extensions["reco"].settings
    return render_template("ui/index.html", default_n=settings.default_n, max_n=settings.max_n,
                           api_root=request.script_root)


@ui.after_request
def security_headers(response):
    """The CSP and its companions on every /ui/ response (page and static files alike)."""
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    return response
