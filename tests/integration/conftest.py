"""Real servers on loopback for the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.smtpd import SmtpServer


@pytest.fixture
def smtp_server(request: pytest.FixtureRequest) -> Iterator[SmtpServer]:
    """A plain SMTP server for one test; `@pytest.mark.smtp(tls=..., require_auth=...)`
    asks for TLS or AUTH."""
    marker = request.node.get_closest_marker("smtp")
    with SmtpServer(**(marker.kwargs if marker else {})) as server:
        yield server
