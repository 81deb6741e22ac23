"""Property-based conformance: generated requests against the live WSGI application.

schemathesis reads /api/schema/ from the application, generates requests for
every operation (valid and invalid input, random ids and filters) and sends
them as a tenant admin through Django's WSGI handler. No answer may be a
server error, and every answer must match the schema: a documented status,
content type, headers and body shape.
"""

from __future__ import annotations

import importlib
import sys
from collections import Counter

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from hypothesis.internal.conjecture import providers as hypothesis_providers
from hypothesis.internal.constants_ast import Constants
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.endpoints import tenant_objects_build
from tests.factories import ProviderConfigFactory, UserTokenFactory

pytestmark = pytest.mark.django_db

# Examples per operation and mode: 38 operations x 2 modes x 20 keeps the run
# to about three minutes on two cores.
MAX_EXAMPLES = 20
# Calls to providers run first, while every provider config of the tenant is
# still a Fake one: generated PUTs may later turn a config into a real
# provider type, and a completion routed to it would reach the network.
CALL_PATHS = ("/api/v1/completions/", "/api/v1/embeddings/")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


@pytest.fixture
def wsgi_app(settings):
    """The project's WSGI app, sharing the test's database transaction.

    Django closes "old" connections when a request starts and ends; inside a
    test transaction that would drop it, so those hooks are off meanwhile, as
    in Django's own test client. Throttling is off: thousands of requests
    come from one admin.
    """
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"user": None, "service_key": None, "anon": None},
    }
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield get_wsgi_application()
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def source_constants_ignored(monkeypatch):
    """Generation that depends on the schema and the seed only.

    Hypothesis draws a share of its strings and numbers from a pool of the
    constants written in every project module (outside tests/) imported so
    far, and the pool grows as modules are imported. Which modules those are
    depends on the test modules collected (through their imports) and on
    what earlier tests imported; their text is any part of the code base.
    The requests generated here would then change with the collection or
    with an edit anywhere, and with them whether an operation is reached
    with valid input at all: `derandomize` fixes the seed, not the pool.
    The pool is empty here, so only Hypothesis's own constants are drawn.
    """
    monkeypatch.setattr(hypothesis_providers, "_get_local_constants", Constants)
    # Choices already filtered from the pool are cached per kind of draw.
    hypothesis_providers.CONSTANTS_CACHE.cache.clear()
    yield
    hypothesis_providers.CONSTANTS_CACHE.cache.clear()


@pytest.fixture
def admin_headers(admin_user):
    return {"Authorization": f"Token {UserTokenFactory(user=admin_user).secret}"}


@pytest.fixture
def real_ids(tenant) -> dict[str, str]:
    """Ids of existing objects per collection, to aim generated requests at them."""
    objects = tenant_objects_build(tenant)
    # Connection tests get a Fake config of their own: generated PUTs may turn
    # the other ones into real provider types, which would reach the network.
    probe = ProviderConfigFactory(tenant=tenant, name="probe", options={"latency_ms": 1})
    return {
        "providers/test": str(probe.pk),
        "providers": str(objects.provider.pk),
        "overrides": str(objects.override.pk),
        "calls": str(objects.call.pk),
        "service-keys": objects.service_key.prefix,
        "budgets": str(objects.budget.pk),
        "alerts": str(objects.alert.pk),
    }


def _aim_at_real_objects(case, real_ids: dict[str, str]) -> None:
    """Point the request at an existing object of the caller's own tenant."""
    collection = case.operation.path.split("/")[3]
    if case.operation.path.endswith("/test/"):
        collection = f"{collection}/test"
    for name in ("id", "prefix"):
        if case.path_parameters and name in case.path_parameters:
            case.path_parameters[name] = real_ids[collection]
    if case.headers:
        case.headers.pop("X-Tenant", None)
    if case.query:
        case.query.pop("tenant", None)


def _run_operation(
    operation, mode: GenerationMode, headers: dict, real_ids: dict, statuses: Counter
) -> None:
    @hypothesis_settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode), aim=st.booleans())
    def run(case, aim):
        if aim:
            _aim_at_real_objects(case, real_ids)
        response = case.call_and_validate(headers=headers, checks=CHECKS)
        statuses[(operation.label, response.status_code)] += 1

    run()


def test_api_conforms_to_its_schema(wsgi_app, admin_headers, real_ids, source_constants_ignored):
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", wsgi_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    operations.sort(key=lambda operation: operation.path not in CALL_PATHS)
    failures = []
    statuses: Counter = Counter()

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _run_operation(operation, mode, admin_headers, real_ids, statuses)
            except Unsatisfiable:
                # An operation without input (health) has no invalid variant.
                assert mode is GenerationMode.NEGATIVE and not operation.query, operation.label
            except (Exception, FailureGroup) as exc:  # report every failing operation
                failures.append(f"{operation.label} ({mode.value}): {exc}")

    assert len(operations) == 38
    assert failures == [], "\n\n".join(failures)
    # The run reached the application's real answers, not only its refusals.
    answered = {status for (_, status) in statuses}
    assert {200, 201, 204, 400, 404} <= answered, sorted(statuses.items())
    for label in (
        "POST /api/v1/providers/",
        "POST /api/v1/service-keys/",
        "POST /api/v1/budgets/",
    ):
        assert statuses[(label, 201)] > 0, label
    for label in (
        "PATCH /api/v1/providers/{id}/",
        "PATCH /api/v1/overrides/{id}/",
        "PATCH /api/v1/budgets/{id}/",
        "POST /api/v1/completions/",
        "POST /api/v1/embeddings/",
        "GET /api/v1/usage/by-customer/",
        "GET /api/v1/providers/{id}/usage/",
    ):
        assert statuses[(label, 200)] > 0, label


def _generated_requests(operation) -> list[str]:
    """The requests Hypothesis generates for `operation` (invalid input), in order."""
    requests = []

    @hypothesis_settings(
        max_examples=50,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))
    def draw(case):
        requests.append(repr((case.path_parameters, case.query, case.headers)))

    draw()
    return requests


def test_generated_requests_do_not_depend_on_the_modules_imported(
    wsgi_app, source_constants_ignored, tmp_path, monkeypatch
):
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", wsgi_app)
    operation = schema["/api/v1/providers/{id}/usage/"]["GET"]
    before = _generated_requests(operation)
    # A module of the project's imported in between, as collecting one more
    # test module imports the code it tests.
    words = ", ".join(f'"window-{n}"' for n in range(200))
    numbers = ", ".join(str(7919 * n) for n in range(200))
    (tmp_path / "imported_in_between.py").write_text(f"WORDS = ({words})\nNUMBERS = ({numbers})\n")
    monkeypatch.syspath_prepend(tmp_path)
    importlib.import_module("imported_in_between")
    try:
        after = _generated_requests(operation)
    finally:
        del sys.modules["imported_in_between"]

    assert len(before) == 50
    assert after == before
