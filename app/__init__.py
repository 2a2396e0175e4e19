"""Flask app factory: transport only (parse, validate, call recommender/, serialise, map errors)."""

from __future__ import annotations

import logging

from flask import Flask

from recommender.service import RecommendationService
from recommender.settings import Settings

from . import metrics
from .errors import register_error_handlers
from .jsonprovider import OrjsonProvider
from .ui import ui
from .views import api


def create_app(settings: Settings | None = None) -> Flask:
    """Build the app: settings from the environment unless given, resources started once per process."""
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.json = OrjsonProvider(app)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    app.extensions["reco"] = RecommendationService.start(settings, metrics.hooks())
    register_error_handlers(app)
    metrics.init_app(app)
    app.register_blueprint(api)
    app.register_blueprint(ui)
    return app
