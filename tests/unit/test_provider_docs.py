"""The README's provider table is the registry's (``python -m devtools.provider_docs``)."""

from devtools.provider_docs import README, rendered


def test_the_readme_lists_every_registered_provider_as_the_registry_says():
    text = README.read_text()
    assert rendered(text) == text, "run: python -m devtools.provider_docs"
