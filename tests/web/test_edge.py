"""The app's edge: the client address behind trusted proxies only, the Host check, and
redirects that never lead to a host the request named."""

from __future__ import annotations

import ipaddress

import httpx
import pytest
from pydantic import HttpUrl

from newsletter.config import Settings
from newsletter.signup import SIGNUPS_PER_CLIENT, client_network
from newsletter.web.edge import (
    client_behind,
    forwarded_client,
    host_name,
    parse_address,
    parse_forwarded,
)
from tests.web.site import BASE, Site, client_for, with_site

PROXY = "127.0.0.1"


def trusting(settings: Settings, *proxies: str) -> Settings:
    web = settings.web.model_copy(update={"trusted_proxies": proxies})
    return settings.model_copy(update={"web": web})


# --- the pure parts ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("203.0.113.9", "203.0.113.9"),
        (" 203.0.113.9 ", "203.0.113.9"),
        ("203.0.113.9:4711", "203.0.113.9"),
        ("2001:db8::7", "2001:db8::7"),
        ("2001:DB8:0:0::7", "2001:db8::7"),
        ("[2001:db8::7]", "2001:db8::7"),
        ("[2001:db8::7]:4711", "2001:db8::7"),
        ("::ffff:203.0.113.9", "203.0.113.9"),
        ("garbage", None),
        ("", None),
        ("unknown", None),
        ("_hidden", None),
        ("example.org", None),
        ("203.0.113.9:port", None),
        ("203.0.113.256", None),
        ("0203.0.113.9", None),
        ("[203.0.113.9]", None),
        ("[2001:db8::7]x", None),
        ("[2001:db8::7", None),
        ("fe80::1%eth0", None),  # a zone index is free text: "fe80::1%<anything>"
        ("[fe80::1%garbage]:80", None),
        ("203.0.113.9\x00", None),
    ],
)
def test_only_well_formed_addresses_are_read(text, address):
    parsed = parse_address(text)
    assert (str(parsed) if parsed else None) == address


def trusted_local(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return address in ipaddress.ip_network("10.0.0.0/8")


@pytest.mark.parametrize(
    ("hops", "client"),
    [
        (["203.0.113.9"], "203.0.113.9"),
        # What the client wrote before our proxy's entry is never read.
        (["198.51.100.1", "203.0.113.9"], "203.0.113.9"),
        (["garbage", "203.0.113.9"], "203.0.113.9"),
        # Our own proxies are skipped, nearest first.
        (["203.0.113.9", "10.0.0.2", "10.0.0.1"], "203.0.113.9"),
        (["10.0.0.3", "10.0.0.2"], "10.0.0.3"),
        # A malformed hop where the client should be: nothing is believed.
        (["203.0.113.9", "garbage"], None),
        (["203.0.113.9", "", "10.0.0.1"], None),
        ([], None),
    ],
)
def test_the_client_is_the_first_hop_that_is_not_a_trusted_proxy(hops, client):
    found = client_behind(hops, trusted_local)
    assert (str(found) if found else None) == client


@pytest.mark.parametrize(
    ("value", "elements"),
    [
        ("for=203.0.113.9", [{"for": "203.0.113.9"}]),
        (
            'for="[2001:db8::7]:4711";proto=https;by=10.0.0.1, For=10.0.0.2',
            [
                {"for": "[2001:db8::7]:4711", "proto": "https", "by": "10.0.0.1"},
                {"for": "10.0.0.2"},
            ],
        ),
        ('for="a\\"b"', [{"for": 'a"b'}]),
        ("for=", [{"for": ""}]),
        ("for", None),
        ("for=1.2.3.4;;", None),
        ("for=1.2.3.4,", None),
        ('for="unterminated', None),
        ("=1.2.3.4", None),
    ],
)
def test_forwarded_headers_parse_as_rfc_7239_writes_them(value, elements):
    assert parse_forwarded(value) == elements


def headers(**values: str) -> list[tuple[bytes, bytes]]:
    return [(name.replace("_", "-").encode(), value.encode()) for name, value in values.items()]


@pytest.mark.parametrize(
    ("given", "client", "scheme"),
    [
        (headers(x_forwarded_for="203.0.113.9", x_forwarded_proto="https"), "203.0.113.9", "https"),
        (headers(forwarded='for="[2001:db8::7]";proto=https'), "2001:db8::7", "https"),
        # Both, agreeing.
        (headers(x_forwarded_for="203.0.113.9", forwarded="for=203.0.113.9"), "203.0.113.9", None),
        # Both, disagreeing: the proxy rewrote one, the client wrote the other.
        (headers(x_forwarded_for="203.0.113.9", forwarded="for=198.51.100.1"), None, None),
        # A malformed one tells nothing; the other still counts.
        (headers(x_forwarded_for="203.0.113.9", forwarded="for=garbage"), "203.0.113.9", None),
        (headers(x_forwarded_for="garbage"), None, None),
        (headers(x_forwarded_proto="javascript"), None, None),
        (headers(x_forwarded_proto="https", forwarded="for=1.2.3.4;proto=http"), "1.2.3.4", None),
        (headers(user_agent="x"), None, None),
    ],
)
def test_forwarded_client_believes_only_what_is_well_formed_and_consistent(given, client, scheme):
    found, found_scheme = forwarded_client(given, trusted_local)
    assert (str(found) if found else None, found_scheme) == (client, scheme)


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("localhost:8000", "localhost"),
        ("Example.ORG", "example.org"),
        ("example.org.", "example.org"),
        ("[::1]:8000", "::1"),
        ("example.org:port", "example.org:port"),
    ],
)
def test_host_names_lose_their_port_and_case(header, name):
    assert host_name(header) == name


@pytest.mark.parametrize(
    ("ip", "counted_as"),
    [
        ("203.0.113.9", "203.0.113.9"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.9", "203.0.113.9"),
        ("", ""),
    ],
)
def test_ipv6_clients_are_counted_by_their_64_bit_prefix(ip, counted_as):
    assert client_network(ip) == counted_as


# --- through the app ---------------------------------------------------------------------


async def consent_ip(site: Site, email: str) -> str | None:
    subscriber = await site.subscriber(email)
    assert subscriber is not None, email
    return subscriber.consent["ip"]


def test_without_trusted_proxies_forwarded_headers_change_nothing(settings, tmp_path, smtp_server):
    async def scenario(site: Site) -> None:
        local = site.client_from(PROXY)
        for n in range(SIGNUPS_PER_CLIENT):
            forged = {"x-forwarded-for": f"198.51.100.{n}", "forwarded": f"for=198.51.100.{n}"}
            answer = await local.post(
                "/subscribe", data={"email": f"n{n}@example.com"}, headers=forged
            )
            assert answer.status_code == 303
        assert await consent_ip(site, "n0@example.com") == PROXY
        # A new forged address each time did not lift the per-IP limit.
        refused = await local.post(
            "/subscribe",
            data={"email": "more@example.com"},
            headers={"x-forwarded-for": "198.51.100.250"},
        )
        assert refused.status_code == 429
        await local.aclose()

    with_site(settings, tmp_path, smtp_server, scenario)


def test_a_trusted_proxy_names_the_client_and_a_malformed_name_is_ignored(
    settings, tmp_path, smtp_server
):
    async def scenario(site: Site) -> None:
        proxy = site.client_from(PROXY)

        async def via_proxy(email: str, **forwarded: str) -> None:
            answer = await proxy.post("/subscribe", data={"email": email}, headers=forwarded)
            assert answer.status_code == 303

        await via_proxy("a@example.com", **{"x-forwarded-for": "198.51.100.1, 203.0.113.9"})
        assert await consent_ip(site, "a@example.com") == "203.0.113.9"
        await via_proxy("b@example.com", **{"x-forwarded-for": "garbage"})
        assert await consent_ip(site, "b@example.com") == PROXY
        await via_proxy("c@example.com", forwarded='for="[2001:DB8::7]:4711"')
        assert await consent_ip(site, "c@example.com") == "2001:db8::7"
        await via_proxy("d@example.com", **{"x-forwarded-for": "fe80::1%garbage"})
        assert await consent_ip(site, "d@example.com") == PROXY

        # Anyone else's headers are not read at all.
        stranger = site.client_from("198.51.100.66")
        await stranger.post(
            "/subscribe",
            data={"email": "e@example.com"},
            headers={"x-forwarded-for": "203.0.113.9"},
        )
        assert await consent_ip(site, "e@example.com") == "198.51.100.66"
        await stranger.aclose()
        await proxy.aclose()

    with_site(trusting(settings, PROXY), tmp_path, smtp_server, scenario)


def test_trusted_proxies_may_be_networks_and_the_limit_counts_the_client_behind_them(
    settings, tmp_path, smtp_server
):
    async def scenario(site: Site) -> None:
        proxies = [site.client_from(f"10.1.2.{n}") for n in (3, 4)]
        client = {"x-forwarded-for": "203.0.113.9, 10.9.9.9"}  # via two of ours
        for n in range(SIGNUPS_PER_CLIENT):
            answer = await proxies[n % 2].post(
                "/subscribe", data={"email": f"n{n}@example.com"}, headers=client
            )
            assert answer.status_code == 303
        assert await consent_ip(site, "n1@example.com") == "203.0.113.9"
        refused = await proxies[0].post(
            "/subscribe", data={"email": "more@example.com"}, headers=client
        )
        assert refused.status_code == 429
        other = await proxies[0].post(
            "/subscribe",
            data={"email": "other@example.com"},
            headers={"x-forwarded-for": "203.0.113.10"},
        )
        assert other.status_code == 303
        for proxy in proxies:
            await proxy.aclose()

    with_site(trusting(settings, "10.0.0.0/8"), tmp_path, smtp_server, scenario)


def test_addresses_of_one_ipv6_network_share_one_signup_limit(settings, tmp_path, smtp_server):
    async def scenario(site: Site) -> None:
        for n in range(SIGNUPS_PER_CLIENT):
            client = site.client_from(f"2001:db8:5:6::{n + 1:x}")
            assert (await site.signup(f"n{n}@example.com", client=client)).status_code == 303
            await client.aclose()
        same_network = site.client_from("2001:db8:5:6:ffff::1")
        assert (await site.signup("more@example.com", client=same_network)).status_code == 429
        next_network = site.client_from("2001:db8:5:7::1")
        assert (await site.signup("more@example.com", client=next_network)).status_code == 303
        await same_network.aclose()
        await next_network.aclose()

    with_site(settings, tmp_path, smtp_server, scenario)


def test_a_host_that_is_not_ours_gets_a_400_page(settings, tmp_path, smtp_server):
    async def scenario(site: Site) -> None:
        for host in ("evil.example", "evil.example:8000", "localhost.evil.example", "[::1]"):
            answer = await site.client.get("/", headers={"host": host})
            assert answer.status_code == 400, host
            assert "This site is not at that address" in answer.text
            assert f"{BASE}/" in answer.text
            assert answer.headers["x-frame-options"] == "DENY"
            slash = await site.client.get("/check-your-email/", headers={"host": host})
            assert slash.status_code == 400
            assert "location" not in slash.headers
        signup = await site.client.post(
            "/subscribe", data={"email": "ana@example.com"}, headers={"host": "evil.example"}
        )
        assert signup.status_code == 400
        assert await site.subscriber("ana@example.com") is None
        # base_url's host, on any port, in any case, and the address the server was
        # reached at (here the transport's: localhost).
        for host in ("localhost:8000", "LOCALHOST", "localhost:9999"):
            assert (await site.client.get("/", headers={"host": host})).status_code == 200

    with_site(settings, tmp_path, smtp_server, scenario)


def test_the_address_the_server_was_reached_at_is_a_good_host(settings, tmp_path, smtp_server):
    async def scenario(site: Site) -> None:
        by_address = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=site.app, client=("127.0.0.1", 5000)),
            base_url="http://127.0.0.1:8000",
        )
        answer = await by_address.get("/")
        assert answer.status_code == 200
        await by_address.aclose()

    with_site(settings, tmp_path, smtp_server, scenario)


def test_a_trailing_slash_redirects_to_base_url_whatever_host_or_scheme_was_named(
    settings, tmp_path, smtp_server
):
    async def scenario(site: Site) -> None:
        proxy = client_for(site.app, PROXY)
        forged = {"host": "LOCALHOST:9999", "x-forwarded-proto": "https"}
        answer = await proxy.get("/check-your-email/?a=1&b=%2F", headers=forged)
        assert answer.status_code == 307
        assert answer.headers["location"] == f"{BASE}/check-your-email?a=1&b=%2F"
        _, preferences = site.personal_paths(1)
        assert (await proxy.get(f"{preferences}//")).headers["location"] == BASE + preferences
        for path in (b"/nowhere/", b"//evil.example/", b"/\\evil.example/"):
            url = httpx.URL(BASE).copy_with(raw_path=path)  # not read as a host by httpx
            assert (await proxy.get(url)).status_code == 404, path
        await proxy.aclose()

    with_site(trusting(settings, PROXY), tmp_path, smtp_server, scenario)


def test_a_redirect_under_a_base_url_with_a_path_keeps_the_path(settings, tmp_path, smtp_server):
    site_settings = settings.site.model_copy(
        update={"base_url": HttpUrl("https://example.org/news")}
    )
    under_path = settings.model_copy(update={"site": site_settings})

    async def scenario(site: Site) -> None:
        client = client_for(site.app)
        answer = await client.get("/check-your-email/", headers={"host": "example.org"})
        assert answer.headers["location"] == "https://example.org/news/check-your-email"
        await client.aclose()

    with_site(under_path, tmp_path, smtp_server, scenario)
