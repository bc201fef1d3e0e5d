"""Finding a Bluesky account's PDS (``sync.instances``): the DID document's service entry,
and URLs that must not be called."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from sync import instances

DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"


def document(*services):
    return {"id": DID, "alsoKnownAs": ["at://alice.example"], "service": list(services)}


PDS = {
    "id": "#atproto_pds",
    "type": "AtprotoPersonalDataServer",
    "serviceEndpoint": "https://pds.example.net",
}


def test_the_pds_is_the_atproto_pds_service():
    labeler = {"id": "#atproto_labeler", "type": "AtprotoLabeler", "serviceEndpoint": "https://l"}
    assert instances.pds_endpoint(document(labeler, PDS)) == "https://pds.example.net"
    assert instances.pds_endpoint(document({**PDS, "id": f"{DID}#atproto_pds"})) == (
        "https://pds.example.net"
    )


@pytest.mark.parametrize(
    "doc",
    [
        None,
        [],
        document(),
        document({**PDS, "type": "Other"}),
        document({**PDS, "id": "#other"}),
        document({**PDS, "serviceEndpoint": ["https://x"]}),
        {"service": "nope"},
    ],
)
def test_no_pds_in_a_document_is_none(doc):
    assert instances.pds_endpoint(doc) is None


def services(redis_client, key_prefix, allow=()):
    settings = SimpleNamespace(
        key_prefix=key_prefix,
        outbound_allow_private=allow,
        bluesky_plc_url="https://plc.invalid",
        api_url=lambda name: "https://entryway.invalid",
        http_connect_timeout=1.0,
        http_read_timeout=1.0,
    )
    return SimpleNamespace(redis=redis_client, settings=settings)


@pytest.mark.parametrize("did", ["did:web:127.0.0.1", "did:web:localhost", "did:web:10.0.0.5"])
def test_a_did_web_host_that_is_not_public_is_never_called(redis_client, key_prefix, did):
    with pytest.raises(instances.ResolutionError) as refused:
        instances.resolve_pds(services(redis_client, key_prefix), did)
    assert refused.value.error.rule.kind == "instance_not_allowed"


def test_a_cached_pds_is_used_until_it_is_forgotten(redis_client, key_prefix):
    svc = services(redis_client, key_prefix)
    redis_client.set(instances.pds_key(svc, DID), "https://pds.example.net")
    assert instances.resolve_pds(svc, DID) == "https://pds.example.net"
    instances.forget_pds(svc, DID)
    assert redis_client.get(instances.pds_key(svc, DID)) is None


def test_an_unsupported_did_method_finds_no_pds(redis_client, key_prefix):
    with pytest.raises(instances.ResolutionError) as refused:
        instances.did_document(services(redis_client, key_prefix), "did:key:z6Mk")
    assert refused.value.error.rule.kind == "pds_not_found"
