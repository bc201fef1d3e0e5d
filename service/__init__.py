"""netsync: keeps users' social networks in sync from third-party providers.

``create_app`` builds the Flask app (triggers, status API, ops CLI) and the
Celery app that runs the provider tasks, both from one ``Settings``.
"""

from __future__ import annotations

from flask import Flask

from service.config import Settings, load_settings


def create_app(test_config: dict | None = None, settings: Settings | None = None) -> Flask:
    app = Flask(__name__)
    settings = settings or load_settings()
    app.config.update(NETSYNC_SETTINGS=settings, MAX_CONTENT_LENGTH=settings.max_body_bytes)
    if test_config:
        app.config.update(test_config)

    from service import (
        api,
        cli,
        dashboard,
        db_cli,
        extensions,
        metrics,
        observability,
        ops_cli,
        webhooks,
    )
    from service.celery_app import celery_init_app

    extensions.init_app(app)
    observability.init_app(app)
    metrics.init_app(app)
    celery_init_app(app)
    webhooks.init_app(app)
    api.init_app(app)
    dashboard.init_app(app)
    cli.init_app(app)
    db_cli.init_app(app)
    ops_cli.init_app(app)
    return app
