"""The OpenAPI document (src/notarium/server/openapi.json) against the server that serves it.

- The document is valid OpenAPI 3.1 (schemathesis's validator: the OAS 3.1 meta-schema). 3.1 and
  not 3.0 because only 3.1 can declare a mutual-TLS security scheme, which is how clients log in.
- It describes exactly the routes the aiohttp router registers (an app built without a network
  from a real ledger), each with the role its handler requires, and ``GET /openapi.json`` serves
  the checked-in file byte for byte.
- Each documented path allows exactly its documented methods (and HEAD beside GET): any other is
  the router's 405, whose ``Allow`` names them.
- A bounded fuzz of the whole document against a real ``notarium serve`` (mutual TLS, the
  Administrator's certificate), the same at every run (a fixed seed, derandomized), with every
  check schemathesis has: no server error (a documented 501 aside), no undocumented status, and
  the documented content type, body schema and headers (``x-ms-ccf-transaction-id``); input valid
  per the document accepted (but for refusals no schema can express), invalid input refused; every
  undeclared method 405 with the right ``Allow``; and, along the links between operations, what
  was created is there and what was deleted is gone. For a deeper review run, raise ``EXAMPLES``
  and ``STATEFUL_SCENARIOS``: the checks stay the same.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from hypothesis import HealthCheck, Phase, assume, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    ensure_resource_availability,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
    use_after_free,
)

import notarium.server
from integration.server import Server, running
from notarium.ledger import EngineConfig, init_service, open_ledger
from notarium.ledger.engine_service import EngineService
from notarium.ledger.remote import RemoteLedger
from notarium.server.app import create_app
from notarium.server.config import API_VERSIONS, ServerConfig
from notarium.server.context import ServerContext

DOCUMENT = Path(notarium.server.__file__).with_name("openapi.json")
SPEC: dict[str, Any] = json.loads(DOCUMENT.read_text())
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
OPERATIONS = [(path, method) for path, item in SPEC["paths"].items() for method in item if method in METHODS]
LABELS = [f"{method.upper()} {path}" for path, method in OPERATIONS]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("openapi") / "ledger"
    init_service(directory)
    # A small page size, so that fuzzed listings carry nextLink and it is checked against the schema too.
    with running(directory, "--page-size", "3", "--max-entry-bytes", "8192") as srv:
        yield srv
        assert srv.stop() == 0, "".join(srv.output[-50:])


@pytest.fixture(scope="module")
def session(server: Server) -> Iterator[requests.Session]:
    s = requests.Session()
    s.trust_env = False  # REQUESTS_CA_BUNDLE would otherwise override the pinned service certificate
    s.verify = str(server.service_cert)
    s.cert = str(server.admin_pem)
    yield s
    s.close()


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[web.Application, asyncio.AbstractEventLoop]]:
    """The real application (real ledger, users, routes) built without listening anywhere."""
    directory = tmp_path_factory.mktemp("router") / "ledger"
    init_service(directory)
    ledger = open_ledger(directory, EngineConfig(auto_sign=False))
    ours, theirs = socket.socketpair()
    engine = EngineService(ledger, ours)
    engine.start()
    loop = asyncio.new_event_loop()
    try:
        remote = loop.run_until_complete(RemoteLedger.connect(theirs))
        ctx = loop.run_until_complete(ServerContext.create(remote, ServerConfig()))
        yield create_app(ctx), loop
        ctx.commits.close()
        loop.run_until_complete(remote.aclose())
    finally:
        engine.stop()
        ledger.close()
        loop.close()


def registered_routes(application: web.Application) -> dict[tuple[str, str], Any]:
    """``(METHOD, path template) -> handler`` for every route but the implicit HEAD routes."""
    routes: dict[tuple[str, str], Any] = {}
    for route in application.router.routes():
        assert route.resource is not None
        routes[(route.method, route.resource.canonical)] = route.handler
    # aiohttp's add_get registers HEAD beside every GET (and nothing else registers HEAD): the
    # document says so once, in its description, rather than doubling every GET operation
    heads = {path for method, path in routes if method == "HEAD"}
    assert heads == {path for method, path in routes if method == "GET"}
    return {key: handler for key, handler in routes.items() if key[0] != "HEAD"}


def sample_path(path: str) -> str:
    """The path template with each ``{parameter}`` filled in with a value of the right shape."""
    values = {"transactionId": "2.15", "userId": "AB" * 32, "ledgerId": "ledger", "functionId": "f1"}
    values["name"] = "ledger_1-2.committed"
    values.update(proposalId="ab" * 32, memberId="cd" * 32)
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, path
    return path


def resolve(application: web.Application, loop: asyncio.AbstractEventLoop, method: str, path: str) -> Any:
    """The route the router picks for ``method path`` (None when it answers 404 or 405)."""
    request = make_mocked_request(method, path, app=application)
    match = loop.run_until_complete(application.router.resolve(request))
    return None if match.http_exception is not None else match.route


# --------------------------------------------------------------------------- the document


def test_document_is_valid_openapi() -> None:
    schema = schemathesis.openapi.from_path(str(DOCUMENT))
    schema.validate()  # raises on anything that violates the OpenAPI 3.1 meta-schema
    assert SPEC["openapi"] == "3.1.0"
    operations = [result.ok() for result in schema.get_all_operations()]  # .ok() raises on a broken operation
    assert sorted(op.label for op in operations) == sorted(LABELS)
    assert SPEC["components"]["securitySchemes"]["clientCertificate"]["type"] == "mutualTLS"
    ids = [SPEC["paths"][p][m]["operationId"] for p, m in OPERATIONS]
    assert len(set(ids)) == len(ids), "operationIds must be unique"


def test_api_version_parameter_lists_every_supported_version() -> None:
    parameter = SPEC["components"]["parameters"]["ApiVersion"]
    assert parameter["name"] == "api-version"
    assert parameter["in"] == "query"
    assert sorted(parameter["schema"]["enum"]) == sorted(API_VERSIONS)
    for path, method in OPERATIONS:
        operation = SPEC["paths"][path][method]
        refs = [p.get("$ref") for p in operation["parameters"]]
        assert "#/components/parameters/ApiVersion" in refs, f"{method} {path}"
        # the api-version check runs before routing to a handler: every operation can answer 400
        assert "400" in operation["responses"], f"{method} {path}"


def test_every_response_documents_the_transaction_id_header() -> None:
    def headers_of(response: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in response:
            response = SPEC["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
        return dict(response.get("headers", {}))

    for path, method in OPERATIONS:
        for status, response in SPEC["paths"][path][method]["responses"].items():
            assert "x-ms-ccf-transaction-id" in headers_of(response), f"{method} {path} {status}"


def test_document_lists_exactly_the_registered_routes(app: tuple[web.Application, asyncio.AbstractEventLoop]) -> None:
    application, loop = app
    routes = registered_routes(application)
    documented = {(method.upper(), path) for path, method in OPERATIONS}
    # every route is registered for its own methods (no catch-all "*"), exactly those documented
    assert set(routes) == documented

    # every documented operation is served by its own route, whatever ids fill the path: none would
    # be a 404 or a 405, or reach another operation's handler
    for method, path in sorted(documented):
        route = resolve(application, loop, method, sample_path(path))
        assert route is not None, f"{method} {path} is documented but not routed"
        assert (route.method, route.resource.canonical) == (method, path)


def test_each_path_allows_exactly_its_documented_methods(
    app: tuple[web.Application, asyncio.AbstractEventLoop],
) -> None:
    """Another method on a documented path is 405 naming exactly the path's documented methods
    (and HEAD beside GET): the router's own answer, which the server sends as is (RFC 9110 §15.5.6)."""
    application, loop = app
    for path, item in SPEC["paths"].items():
        allowed = {method.upper() for method in item if method in METHODS}
        if "GET" in allowed:
            allowed.add("HEAD")
        for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND"):
            request = make_mocked_request(method, sample_path(path), app=application)
            match = loop.run_until_complete(application.router.resolve(request))
            if method in allowed:
                assert match.http_exception is None, f"{method} {path}"
                assert match.route.resource is not None
                assert match.route.resource.canonical == path, f"{method} {path}"
            else:
                assert match.http_exception is not None, f"{method} {path} is routed but not documented"
                assert match.http_exception.status == 405, f"{method} {path}"
                assert set(match.http_exception.headers["Allow"].split(",")) == allowed, f"{method} {path}"


def test_required_roles_match_the_handlers(app: tuple[web.Application, asyncio.AbstractEventLoop]) -> None:
    """``x-notarium-required-action`` is the action each handler's ``requires`` decorator enforces,
    ``x-notarium-required-role`` the least built-in role holding it (by default)."""
    application, loop = app
    actions = set(SPEC["components"]["schemas"]["Action"]["enum"])
    for path, method in OPERATIONS:
        operation = SPEC["paths"][path][method]
        route = resolve(application, loop, method.upper(), sample_path(path))
        required = route.handler.required_role
        action = route.handler.required_action
        documented = operation["x-notarium-required-role"]
        assert documented == (None if required is None else required.value), f"{method} {path}"
        assert operation.get("x-notarium-required-action") == (None if action is None else action.value), path
        assert action is None or action.value in actions, f"{method} {path}: {action} is not in the Action schema"
        # unauthenticated operations say so; the others inherit the document's mutual-TLS requirement
        assert (operation.get("security") == []) == (required is None), f"{method} {path}"
        if required is not None:
            assert "401" in operation["responses"], f"{method} {path}"
            # a user-defined role may lack any action: every authenticated operation can answer 403
            assert "403" in operation["responses"], f"{method} {path}"


def test_served_document_is_the_checked_in_file(server: Server, session: requests.Session) -> None:
    response = session.get(f"{server.url}/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.content == DOCUMENT.read_bytes()


# --------------------------------------------------------------------------- schemathesis

# Governance requests are COSE_Sign1 bodies: fuzzed as raw bytes (none is a member's signature, so
# each is refused with a documented 4xx, and nothing is written).
schemathesis.serializer.alias("application/cose", "application/octet-stream")

# The bounded fuzz of the whole document, the same for every run: a fixed seed, derandomized
# generation, and for each of the 60 operations its examples, schemathesis's coverage cases
# (boundary values, missing and malformed parameters, every method the path does not declare) and
# EXAMPLES generated cases, positive (valid per the document) and negative (violating it); then
# STATEFUL_SCENARIOS short sequences along the links schemathesis infers (a created user read back,
# deleted, read again...): some 4,700 requests, 30-40 s for this module on the 2-core VM.
SEED = 15
EXAMPLES = 30
STATEFUL_SCENARIOS = 30
SCHEMA = schemathesis.openapi.from_dict(SPEC)
SCHEMA.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=EXAMPLES, deterministic=True
)
SCHEMA.config.seed = SEED
HYPOTHESIS = settings(
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: each failure report has a curl reproducer
    suppress_health_check=list(HealthCheck),
)
MAX_LINE = 8190  # aiohttp's limit on a request line and a header line (ServerConfig.max_header_bytes)

# 400s that refuse input the document cannot call invalid, by the error code that says why (each
# answer is still checked against the operation's documented 400): a member's COSE_Sign1 signature,
# a node's signed join request, an issuer's keys, a signed root's transaction, the last
# Administrator, an issuer or role that must exist, a role named twice, ACL's redirection of
# /app/users changes to /app/ledgerUsers under the newest api-versions.
GOVERNANCE_SIGNATURE = frozenset({"InvalidGovernanceRequest"})
SEMANTIC_REFUSALS: dict[str, frozenset[str]] = {
    "POST /gov/members/proposals:create": GOVERNANCE_SIGNATURE,
    "POST /gov/members/proposals/{proposalId}:withdraw": GOVERNANCE_SIGNATURE,
    "POST /gov/members/proposals/{proposalId}/ballots/{memberId}:submit": GOVERNANCE_SIGNATURE,
    "POST /gov/members/state-digests/{memberId}:update": GOVERNANCE_SIGNATURE,
    "POST /gov/members/state-digests/{memberId}:ack": GOVERNANCE_SIGNATURE,
    "POST /node/join": frozenset({"InvalidInput"}),
    "PUT /app/jwtIssuers": frozenset({"InvalidInput"}),
    "GET /app/consistency": frozenset({"InvalidQueryParameterValue"}),
    "PATCH /app/users/{userId}": frozenset({"InvalidInput", "ApiVersionRedirect"}),
    "DELETE /app/users/{userId}": frozenset({"InvalidInput", "ApiVersionRedirect"}),
    "PATCH /app/ledgerUsers/{userId}": frozenset({"InvalidInput"}),
    "DELETE /app/ledgerUsers/{userId}": frozenset({"InvalidInput"}),
    "PUT /app/roles": frozenset({"InvalidInput"}),
    "PATCH /app/roles": frozenset({"InvalidInput"}),
    "DELETE /app/roles": frozenset({"InvalidInput"}),
}


def no_server_error(ctx: Any, response: Any, case: Any) -> bool | None:
    """``not_a_server_error``, except a documented 501 NotImplemented.

    501 is the designed answer for what notarium does not support (user-defined endpoints,
    functions, and entries with preHooks/postHooks): ACL's own choice, and clients never retry it.
    Any other 5xx, or a 501 the operation does not document, is still a failure.
    """
    if response.status_code == 501 and "501" in case.operation.definition.raw["responses"]:
        assert response.json()["error"]["code"] == "NotImplemented"
        return True
    return not_a_server_error(ctx, response, case)


def valid_input_accepted(ctx: Any, response: Any, case: Any) -> bool | None:
    """``positive_data_acceptance`` (input valid per the document is not refused), except the
    refusals of :data:`SEMANTIC_REFUSALS`, which no JSON schema can express."""
    if response.status_code == 400:
        allowed = SEMANTIC_REFUSALS.get(case.operation.label, frozenset())
        if _error_code(response) in allowed:
            return True
    return positive_data_acceptance(ctx, response, case)


def _error_code(response: Any) -> str | None:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return None


CHECKS = [
    no_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    valid_input_accepted,
    negative_data_rejection,
    missing_required_header,
    unsupported_method,
    allow_header_conformance,
    ignored_auth,
    use_after_free,
    ensure_resource_availability,
]


def too_long_for_http(request: Any) -> bool:
    """Whether the request has a line longer than the HTTP layer reads (a long query or header value,
    e.g. 2048 characters of ``issuer`` outside ASCII, percent-encoded): such a request is refused
    before routing, with 400 in plain text, as the document's description says."""
    lines = [f"{request.method} {request.path_url} HTTP/1.1"] + [f"{k}: {v}" for k, v in request.headers.items()]
    return any(len(line) > MAX_LINE for line in lines)


def send(case: Any, server: Server, session: requests.Session) -> Any:
    """``case``'s request and its answer; None for a request the HTTP layer cut off.

    A request line longer than the HTTP layer reads is answered 400 and the connection closed
    before the rest of the request is read; a client still sending then may see a reset instead of
    the answer (the HTTP layer does not linger after a parse error). That is the HTTP layer's
    business, not the document's: only such a request may end so.
    """
    kwargs = {"base_url": server.url, "session": session, "timeout": 30}
    try:
        return case.call(**kwargs, verify=str(server.service_cert), cert=str(server.admin_pem))
    except requests.ConnectionError as exc:
        if exc.request is not None and too_long_for_http(exc.request):
            return None
        raise


def validate(case: Any, response: Any, **kwargs: Any) -> None:
    if response is None:
        return
    if too_long_for_http(response.request):
        assert response.status_code == 400, response.text[:200]
        assert response.headers["content-type"][0].startswith("text/plain"), response.headers
        return
    case.validate_response(response, checks=CHECKS, **kwargs)


def test_pending_and_unsigned_answers_conform(server: Server, session: requests.Session) -> None:
    """The rarely fuzzed answers conform too: a write read back before it commits (Pending, Loading),
    and the receipts of the last signature transaction, which no later signature covers yet (JSON
    receipt ``Loading`` with ``receipt: null``, COSE receipt 202 with ``Retry-After``)."""

    def check(label: str, txid: str) -> int:
        operation = SCHEMA.find_operation_by_label(label)
        assert operation is not None
        case = operation.Case(path_parameters={"transactionId": txid}, query={"api-version": "2022-05-13"})
        response = send(case, server, session)
        validate(case, response)
        return int(response.status_code)

    labels = [
        "GET /app/transactions/{transactionId}",
        "GET /app/transactions/{transactionId}/status",
        "GET /app/transactions/{transactionId}/receipt",
        "GET /app/transactions/{transactionId}/receipt/cose",
    ]
    written = session.post(f"{server.url}/app/transactions", json={"contents": "just written"})
    assert written.status_code == 200
    for label in labels:
        assert check(label, written.headers["x-ms-ccf-transaction-id"]) in (200, 202)
    deadline = time.monotonic() + 30
    while "notarium_commit_lag_transactions 0.0" not in session.get(f"{server.url}/metrics").text:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    last = session.get(f"{server.url}/readyz").json()["committed"]  # idle: the last commit is a signature
    statuses = {label: check(label, last) for label in labels}
    assert statuses[labels[1]] == 200
    assert statuses[labels[3]] in (200, 202), statuses


# Nothing is excluded. Operations that refuse on purpose answer with documented 4xx (e.g. DELETE of
# the last Administrator is 400) or a documented 501 (not supported); random user ids never hit the
# Administrator, so the fuzzer cannot lock itself out. One test per operation (pytest names it).
@SCHEMA.parametrize()
@HYPOTHESIS
def test_schemathesis(case: Any, server: Server, session: requests.Session) -> None:
    validate(case, send(case, server, session))


def test_schemathesis_stateful(server: Server, session: requests.Session) -> None:
    """Sequences of calls along the links schemathesis infers between operations (what one answers
    feeds the next), with the same checks, including those about state: a deleted resource is gone
    (``use_after_free``), a created one is there (``ensure_resource_availability``)."""

    class Stateful(SCHEMA.as_state_machine()):  # type: ignore[misc]
        def call(self, case: Any, **kwargs: Any) -> Any:
            response = send(case, server, session)
            assume(response is not None)  # cut off by the HTTP layer: no answer to go on from
            return response

        def validate_response(self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any) -> None:
            validate(case, response, recorder=self.recorder)

    Stateful.run(settings=settings(HYPOTHESIS, max_examples=STATEFUL_SCENARIOS, stateful_step_count=6))
    assert session.get(f"{server.url}/healthz").status_code == 200
