"""Provider modules: one per provider, each a ``Provider`` description plus
its profile and page task classes (see ``providers.base``)."""
from __future__ import annotations

import importlib

#: provider name → module holding its task classes
PROVIDER_MODULES = {
    "github": "providers.github",
    "twitter": "providers.twitter",
    "facebook": "providers.facebook",
    "linkedin": "providers.linkedin",
    "mastodon": "providers.mastodon",
}


def task_classes():
    from providers.base import ProviderTask

    for module_name in PROVIDER_MODULES.values():
        module = importlib.import_module(module_name)
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, ProviderTask) and getattr(obj, "name", None):
                yield obj


def register_tasks(celery_app) -> None:
    for cls in task_classes():
        celery_app.register_task(cls())
