"""Every provider netsync syncs, registered by one line each.

A provider is one module holding one ``Provider`` subclass (see
``providers.provider``): every fact about it (base URL, default quota, auth
kind, page size, pagination, error table, relations) is on that class.
Everything else is derived from this registry: the settings
(``<PROVIDER>_API_URL``), the default quotas, the Celery task names and
classes (``sync.tasks``), the OpenAPI enum, the CLI choices and the docs.

This package is plain data and parsing: it imports no web framework, broker,
store or HTTP client (``tests/unit/test_layering.py`` enforces it).
"""

from __future__ import annotations

import functools
import importlib

#: ``module:Class`` of each provider, in the order the docs list them.
REGISTRY = (
    "providers.github:GitHub",
    "providers.twitter:Twitter",
    "providers.facebook:Facebook",
    "providers.linkedin:LinkedIn",
    "providers.mastodon:Mastodon",
    "providers.bluesky:Bluesky",
)


@functools.cache
def provider_classes() -> dict:
    """Provider name → its class, each checked (a bad fact fails here, naming the provider)."""
    from providers.provider import check_provider_class

    classes = {}
    for entry in REGISTRY:
        module_name, _, class_name = entry.partition(":")
        cls = getattr(importlib.import_module(module_name), class_name, None)
        if cls is None:
            raise ProviderDefinitionError(f"{entry}: no class {class_name} in {module_name}")
        check_provider_class(cls, where=entry)
        if cls.NAME in classes:
            raise ProviderDefinitionError(f"{entry}: provider name {cls.NAME!r} registered twice")
        classes[cls.NAME] = cls
    return classes


def names() -> tuple[str, ...]:
    """Every provider's name, in registry order."""
    return tuple(provider_classes())


def provider_class(name: str):
    """The class of provider ``name`` (KeyError when there is none)."""
    return provider_classes()[name]


class ProviderDefinitionError(RuntimeError):
    """A provider class misses a fact or states one that cannot be right."""
