"""Entry point for worker processes: ``celery -A service.make_celery worker -Q normal``."""

from service import create_app

flask_app = create_app()
celery_app = flask_app.extensions["celery"]
