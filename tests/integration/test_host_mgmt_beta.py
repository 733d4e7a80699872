"""The ledger host and the newest management SDK; error bodies on every path (issue #15, point 12).

One real host process (real TLS). ``mgmtbeta_scenario.py`` runs in .venv-mgmtbeta
(azure-mgmt-confidentialledger 2.0.0b6, api-version 2026-05-22-preview): a ledger created, read,
listed, updated and deleted, an invalid and an empty name refused. Then, over raw HTTPS: every
api-version of the provider's published specification is accepted and others refused; an empty
ledger name (``…/ledgers/``) is a 400 ``InvalidResourceName`` whatever the method, and creates
nothing; paths no route matches and methods a route does not take answer error bodies, never
aiohttp's plain-text pages.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from integration.oracle import MGMT_BETA_SDK_VERSION
from integration.server import new_identity, running
from integration.test_host import GROUP, SUBSCRIPTION, Host, _cert_text, _run, assert_checks

# the api-versions of Microsoft.ConfidentialLedger/ledgers in the published specification
# (azure-rest-api-specs: specification/confidentialledger/resource-manager)
SPEC_API_VERSIONS = [
    "2020-12-01-preview",
    "2021-05-13-preview",
    "2022-05-13",
    "2022-09-08-preview",
    "2023-01-26-preview",
    "2023-06-28-preview",
    "2024-07-09-preview",
    "2024-09-19-preview",
    "2025-06-10-preview",
    "2026-02-23",
    "2026-05-22-preview",
]
PROVIDER = "/providers/Microsoft.ConfidentialLedger"
BETA_GROUP = "rg-beta"


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    work = tmp_path_factory.mktemp("host")
    directory = work / "host"
    with running(directory, command="host") as server:
        yield Host(server, work)


def _group_url(host: Host, group: str = GROUP, version: str = "2022-05-13") -> str:
    return f"{host.url}/subscriptions/{SUBSCRIPTION}/resourceGroups/{group}{PROVIDER}/ledgers?api-version={version}"


def _arm_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json"), r.headers
    error: dict[str, Any] = r.json()["error"]
    assert error["code"] == code, r.text
    assert error["message"], r.text
    return error


def test_the_newest_beta_sdk_manages_ledgers(host: Host) -> None:
    admin, _ = new_identity(host.work, "beta-admin")
    config = {
        "base_url": host.url,
        "ca_cert": str(host.ca),
        "token": host.token,
        "subscription": SUBSCRIPTION,
        "resource_group": BETA_GROUP,
        "name": "beta-ledger",
        "admin_cert": _cert_text(admin),
        "invalid_name": "bad_name",
    }
    report = _run("mgmtbeta", "mgmtbeta_scenario.py", config)
    assert report["sdk_version"] == MGMT_BETA_SDK_VERSION, "run `make oracles`"
    assert report["api_versions"] == ["2026-05-22-preview"]
    assert_checks(
        report,
        "create",
        "get",
        "list",
        "check_name_availability",
        "update_tags",
        "operations",
        "refuse_invalid_name",
        "refuse_empty_name",
        "delete",
    )


def test_every_api_version_of_the_published_spec_is_accepted(host: Host) -> None:
    with host.client(token=host.token) as http:
        for version in SPEC_API_VERSIONS:
            r = http.get(_group_url(host, version=version))
            assert r.status_code == 200, (version, r.text)
            assert r.json() == {"value": []}
        for version in ("2019-01-01", "2026-05-22", "latest"):
            error = _arm_error(http.get(_group_url(host, version=version)), 400, "InvalidApiVersionParameter")
            assert "2026-05-22-preview" in error["message"]


@pytest.mark.parametrize("method", ["PUT", "GET", "PATCH", "DELETE"])
def test_an_empty_ledger_name_is_an_arm_error_and_changes_nothing(host: Host, method: str) -> None:
    admin, _ = new_identity(host.work, f"empty-{method.lower()}")
    body = {
        "location": "local",
        "properties": {
            "ledgerType": "Private",
            "certBasedSecurityPrincipals": [{"cert": _cert_text(admin), "ledgerRoleName": "Administrator"}],
        },
    }
    url = f"{host.url}/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}{PROVIDER}/ledgers/?api-version=2022-05-13"
    kw: dict[str, Any] = {"json": body} if method in ("PUT", "PATCH") else {}
    with host.client(token=host.token) as http:
        error = _arm_error(http.request(method, url, **kw), 400, "InvalidResourceName")
        assert "missing" in error["message"]
        assert http.get(_group_url(host)).json() == {"value": []}  # nothing was created
    with host.client() as anonymous:  # the host credential is asked for first, as on every management path
        _arm_error(anonymous.request(method, url, **kw), 401, "AuthenticationFailed")


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/", "NotFound"),
        ("/nothing/here", "NotFound"),
        (f"/subscriptions/{SUBSCRIPTION}", "NotFound"),
        (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{PROVIDER}/ledgers/x?api-version=2022-05-13", "NotFound"),
        (f"/subscriptions/{SUBSCRIPTION}{PROVIDER}/unknownType?api-version=2022-05-13", "NotFound"),
        ("/ledgers/", "LedgerNotFound"),
        ("/ledgers//app/transactions", "LedgerNotFound"),
        ("/ledgerIdentity/", "LedgerNotFound"),
    ],
)
def test_paths_no_route_matches_answer_an_error_body(host: Host, path: str, code: str) -> None:
    with host.client(token=host.token) as http:
        for method in ("GET", "PUT", "DELETE"):
            _arm_error(http.request(method, host.url + path), 404, code)


def test_a_method_a_route_does_not_take_answers_an_error_body(host: Host) -> None:
    one = f"{host.url}/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}{PROVIDER}/ledgers/some-ledger"
    with host.client(token=host.token) as http:
        r = http.post(f"{one}?api-version=2022-05-13", json={})
        _arm_error(r, 405, "MethodNotAllowed")
        assert {"GET", "PUT", "PATCH", "DELETE"} <= {m.strip() for m in r.headers["Allow"].split(",")}
        r = http.delete(
            f"{host.url}/subscriptions/{SUBSCRIPTION}{PROVIDER}/checkNameAvailability?api-version=2022-05-13"
        )
        _arm_error(r, 405, "MethodNotAllowed")
