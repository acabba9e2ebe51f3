"""schemathesis against the console's OpenAPI description: for every operation, generated valid
and invalid requests get no 5xx, and every response matches its documented status, content
type and schema (all of schemathesis' checks)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from starlette.testclient import TestClient

from swf.web.app import Settings, create_app

pytest_plugins = ["console_fixtures"]

EXAMPLES = 10  # generated requests per operation beyond the boundary cases
# The same requests on every run: a CI failure is reproducible, never a lucky draw.


@pytest.fixture(scope="module")
def console_app(recorded_url: str) -> Iterator[Any]:
    app = create_app(Settings(db_url=recorded_url))
    with TestClient(app):  # runs the lifespan: the live hub follows the store meanwhile
        yield app


@pytest.fixture(scope="module")
def api_schema(console_app: Any) -> Any:
    loaded = schemathesis.openapi.from_asgi("/openapi.json", console_app)
    # The live stream never ends by itself: check its first event (``hello``) and move on.
    loaded.config.max_stream_events = 1
    return loaded


# The console's own operations; upstream's monitor endpoints are test_dropin_schema.py's (with
# the token their clients send).
schema = schemathesis.pytest.from_fixture("api_schema").exclude(path_regex=r"^/api/(?!v1/)")


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
def test_every_operation_keeps_its_description(case: Any) -> None:
    case.call_and_validate()
