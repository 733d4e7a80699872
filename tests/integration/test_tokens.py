"""Bearer tokens against a real `notarium serve`, from a real test issuer (its JWK set served over
HTTPS with a certificate of its own, which the ledger is told to trust).

- An Administrator (certificate) trusts the issuer through /app/jwtIssuers; token users registered
  by object id write and read; the issuer and its keys are ledger state.
- Refused with 401 InvalidAuthenticationInfo, and nothing written: expired, not yet valid, wrong
  audience, wrong issuer, wrong signature, unknown key id, alg none, HMAC (a shared secret),
  oversized, a user without a role, a token sent over plain HTTP; a Reader's token cannot write
  (403 NotAllowed).
- Key rotation at the issuer is picked up without a restart; the retired key no longer works;
  the change is recorded in the ledger. Inline keys (offline installs), removal of an issuer.
- Issue 15: a token is only ever a user of its own issuer, never a certificate user (a claim that
  spells the Administrator's fingerprint) nor another issuer's user; OIDC user ids that are not
  GUIDs (Dex, Auth0, Keycloak, ACL's "0" * 36) work, through the API and `users add`; users added
  before any issuer, several issuers and `?issuer=`; a ledger written before issuer scoping keeps
  its token users; a token with bytes that are not UTF-8 is a 401 with one short log line.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jwt
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding

from integration.issuer import AUDIENCE, Issuer
from integration.oracle import interpreter
from integration.server import Server, clean_env, running
from notarium.auth.identity import acl_fingerprint
from notarium.client import ApiError, Client
from notarium.ledger import EngineConfig, init_service, open_ledger
from notarium.server import issuers as issuers_module
from notarium.types import TxStatus
from notarium.verify import tables

CA_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
TIMEOUT = 10


@pytest.fixture(autouse=True)
def no_system_ca(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CA_VARIABLES:
        monkeypatch.delenv(name, raising=False)


class Ledger:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.url = server.url
        self.verify = str(server.service_cert)
        self.admin_pem = str(server.admin_pem)

    def admin(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(
            method, self.url + path, verify=self.verify, cert=self.admin_pem, timeout=TIMEOUT, **kwargs
        )

    def bearer(self, token: str, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
        return requests.request(method, self.url + path, verify=self.verify, headers=headers, timeout=TIMEOUT, **kwargs)

    def add_user(self, oid: str, role: str, issuer: str | None = None) -> None:
        r = self.admin(
            "PATCH",
            f"/app/users/{quote(oid, safe='')}",
            params={"issuer": issuer} if issuer is not None else None,
            data=json.dumps({"assignedRole": role}),
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert r.status_code == 200, r.text

    def committed(self) -> str:
        r = self.admin("GET", "/app/ping")
        assert r.status_code == 200
        return r.headers["x-ms-ccf-transaction-id"]

    def quiet_committed(self) -> str:
        """The committed TxId once nothing is pending (signatures come within 10 ms)."""
        time.sleep(0.1)
        return self.committed()


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    it = Issuer()
    yield it
    it.close()


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory, issuer: Issuer) -> Iterator[Ledger]:
    directory = tmp_path_factory.mktemp("tokens") / "ledger"
    init_service(directory)
    with running(directory, "--identity-http-port", "0") as srv:
        led = Ledger(srv)
        r = led.admin("PUT", "/app/jwtIssuers", json=issuer.config())
        assert r.status_code == 200, r.text
        assert set(r.json()["keyIds"]) == {"rsa-1", "ec-1"}
        yield led


CONTRIBUTOR = str(uuid.uuid4())
READER = str(uuid.uuid4())


@pytest.fixture(scope="module")
def users(ledger: Ledger) -> None:
    ledger.add_user(CONTRIBUTOR, "Contributor")
    ledger.add_user(READER, "Reader")


def test_token_users_write_and_read(ledger: Ledger, issuer: Issuer, users: None) -> None:
    for kid in ("rsa-1", "ec-1"):
        token = issuer.token(CONTRIBUTOR, kid=kid)
        r = ledger.bearer(token, "POST", "/app/transactions", params={"collectionId": "tokens"}, json={"contents": kid})
        assert r.status_code == 200, r.text
        txid = r.headers["x-ms-ccf-transaction-id"]
        deadline = time.monotonic() + TIMEOUT
        while ledger.bearer(token, "GET", f"/app/transactions/{txid}/status").json()["state"] != "Committed":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        r = ledger.bearer(issuer.token(READER, kid=kid), "GET", f"/app/transactions/{txid}")
        assert r.status_code == 200, r.text
        assert r.json()["entry"]["contents"] == kid


def _unsigned(claims: dict[str, Any]) -> str:
    def b64(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': 'rsa-1'})}.{b64(claims)}."


def refused_tokens(issuer: Issuer) -> dict[str, str]:
    now = int(time.time())
    stranger_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims = {"iss": issuer.iss, "aud": AUDIENCE, "oid": CONTRIBUTOR, "exp": now + 600}
    return {
        "expired": issuer.token(CONTRIBUTOR, exp=now - 3600, nbf=now - 7200, iat=now - 7200),
        "not yet valid": issuer.token(CONTRIBUTOR, nbf=now + 3600),
        "wrong audience": issuer.token(CONTRIBUTOR, aud="https://management.azure.com"),
        "wrong issuer": issuer.token(CONTRIBUTOR, iss="https://login.example.com/other/v2.0"),
        "wrong signature": jwt.encode(claims, stranger_key, algorithm="RS256", headers={"kid": issuer.published[0]}),
        "unknown key id": jwt.encode(claims, stranger_key, algorithm="RS256", headers={"kid": "nobody"}),
        "alg none": _unsigned(claims),
        "HMAC": jwt.encode(claims, "a shared secret of 32 bytes!!!!!", algorithm="HS256", headers={"kid": "ec-1"}),
        "oversized": issuer.token(CONTRIBUTOR, padding="x" * 4800),  # about 7 KiB: over 6 KiB, within 8190
        "no expiry": issuer.token(CONTRIBUTOR, exp=None),
        "user without a role": issuer.token(str(uuid.uuid4())),
        "not a JWT": "not-a-token",
    }


@pytest.mark.parametrize(
    "case",
    [
        "expired",
        "not yet valid",
        "wrong audience",
        "wrong issuer",
        "wrong signature",
        "unknown key id",
        "alg none",
        "HMAC",
        "oversized",
        "no expiry",
        "user without a role",
        "not a JWT",
    ],
)
def test_refused_tokens_write_nothing(ledger: Ledger, issuer: Issuer, users: None, case: str) -> None:
    token = refused_tokens(issuer)[case]
    before = ledger.quiet_committed()
    r = ledger.bearer(token, "POST", "/app/transactions", json={"contents": f"refused: {case}"})
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == "InvalidAuthenticationInfo"
    assert token not in r.text
    assert ledger.quiet_committed() == before


def test_a_reader_token_cannot_write(ledger: Ledger, issuer: Issuer, users: None) -> None:
    before = ledger.quiet_committed()
    r = ledger.bearer(issuer.token(READER), "POST", "/app/transactions", json={"contents": "no"})
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] == "NotAllowed"
    assert ledger.quiet_committed() == before


def test_other_authorization_schemes_are_refused(ledger: Ledger) -> None:
    r = requests.get(
        ledger.url + "/app/ping", verify=ledger.verify, headers={"Authorization": "Basic YWJjOmRlZg=="}, timeout=10
    )
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "InvalidAuthenticationInfo"


def test_a_token_over_plain_http_is_refused(ledger: Ledger, issuer: Issuer, users: None) -> None:
    out = "".join(ledger.server.output)
    m = re.search(r"identity over plain HTTP: (http://\S+)", out)
    plain = m.group(1) if m else None
    assert plain is not None, out
    before = ledger.quiet_committed()
    headers = {"Authorization": f"Bearer {issuer.token(CONTRIBUTOR)}"}
    for method, path in (("POST", "/app/transactions"), ("GET", "/ledgerIdentity/x")):
        r = requests.request(method, plain + path, headers=headers, json={"contents": "in clear"}, timeout=10)
        assert r.status_code == 401, r.text
        assert r.json()["error"]["code"] == "InvalidAuthenticationInfo"
        assert "HTTPS" in r.json()["error"]["message"]
    assert ledger.quiet_committed() == before


def test_key_rotation_is_picked_up_without_a_restart(ledger: Ledger, issuer: Issuer, users: None) -> None:
    retired = issuer.published[0]
    old = issuer.token(CONTRIBUTOR, kid=retired)
    assert ledger.bearer(old, "GET", "/app/ping").status_code == 200
    new_kid = issuer.rotate()
    time.sleep(issuers_module.REFETCH_MIN_S + 0.2)
    new = issuer.token(CONTRIBUTOR, kid=new_kid)
    r = ledger.bearer(new, "GET", "/app/ping")
    assert r.status_code == 200, r.text
    listed = ledger.admin("GET", "/app/jwtIssuers").json()["issuers"]
    assert [i["keyIds"] for i in listed if i["issuer"] == issuer.iss] == [[new_kid]]  # recorded in the ledger
    r = ledger.bearer(issuer.token(CONTRIBUTOR, kid=retired), "GET", "/app/ping")  # a fresh token, retired key
    assert r.status_code == 401, r.text
    assert ledger.bearer(old, "GET", "/app/ping").status_code == 401  # cached results went with the old keys


def test_inline_keys_and_removal(ledger: Ledger, users: None) -> None:
    offline = Issuer("offline")
    try:
        config = {"issuer": offline.iss, "jwks": offline.jwks(), "userIdClaim": "sub", "audiences": ["api://ledger"]}
        r = ledger.admin("PUT", "/app/jwtIssuers", json=config)
        assert r.status_code == 200, r.text
        assert r.json()["userIdClaim"] == "sub"
        user = str(uuid.uuid4())
        ledger.add_user(user, "Reader", issuer=offline.iss)  # two issuers: the user's is named
        token = offline.token(user, aud="api://ledger", oid=None)
        assert ledger.bearer(token, "GET", "/app/ping").status_code == 200
        assert offline.fetches == 0  # never fetched: the keys came with the request
        r = ledger.admin("DELETE", "/app/jwtIssuers", params={"issuer": offline.iss})
        assert r.status_code == 204, r.text
        assert ledger.bearer(token, "GET", "/app/ping").status_code == 401
        assert offline.iss not in {i["issuer"] for i in ledger.admin("GET", "/app/jwtIssuers").json()["issuers"]}
    finally:
        offline.close()


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"issuer": "https://x.example", "jwksUri": "http://x.example/keys"},
        {"issuer": "https://x.example", "jwksUri": "https://127.0.0.1:1/keys"},
        {"issuer": "https://x.example", "jwks": {"keys": []}},
        {"issuer": "https://x.example", "jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}},
        {"issuer": "https://x.example"},
        {"issuer": "https://x.example", "audiences": [], "jwks": {"keys": []}},
        {"issuer": "https://x.example", "caCertificate": "not a certificate", "jwksUri": "https://x.example/k"},
        {"issuer": "https://x.example", "surprise": 1},
    ],
)
def test_bad_issuers_are_refused_and_change_nothing(ledger: Ledger, body: dict[str, Any]) -> None:
    before = ledger.quiet_committed()
    r = ledger.admin("PUT", "/app/jwtIssuers", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "InvalidInput"
    assert ledger.quiet_committed() == before


def test_only_administrators_manage_issuers(ledger: Ledger, issuer: Issuer, users: None) -> None:
    token = issuer.token(CONTRIBUTOR)
    assert ledger.bearer(token, "GET", "/app/jwtIssuers").status_code == 403
    assert ledger.bearer(token, "PUT", "/app/jwtIssuers", json={"issuer": "https://evil.example"}).status_code == 403
    assert ledger.bearer(token, "DELETE", "/app/jwtIssuers", params={"issuer": issuer.iss}).status_code == 403


def test_issuers_survive_a_restart(tmp_path: Path) -> None:
    it = Issuer("restart")
    oid = str(uuid.uuid4())
    try:
        directory = tmp_path / "ledger"
        init_service(directory)
        with running(directory) as srv:
            led = Ledger(srv)
            assert led.admin("PUT", "/app/jwtIssuers", json=it.config()).status_code == 200
            led.add_user(oid, "Reader")
        with running(directory) as srv:
            assert Ledger(srv).bearer(it.token(oid), "GET", "/app/ping").status_code == 200
    finally:
        it.close()


@pytest.mark.parametrize("oracle", ["acl1", "acl2"])
def test_the_sdk_with_a_token_credential(ledger: Ledger, issuer: Issuer, users: None, oracle: str) -> None:
    """azure-confidentialledger 1.1.1 and 2.0.0b2, unmodified, with a TokenCredential of the test issuer."""
    script = Path(__file__).with_name("sdk_token_scenario.py")
    config = {
        "endpoint": ledger.url,
        "service_cert": ledger.verify,
        "token": issuer.token(CONTRIBUTOR),
        "collection": f"sdk-{oracle}",
    }
    proc = subprocess.run(
        [str(interpreter(oracle)), "-I", str(script)],
        input=json.dumps(config),
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout)
    assert report["contents"] == "written with a token"
    assert report["scopes"] == ["https://confidential-ledger.azure.com/.default"]
    r = ledger.admin("GET", f"/app/transactions/{report['transactionId']}", params={"collectionId": f"sdk-{oracle}"})
    assert r.json()["entry"]["contents"] == "written with a token"


def test_cli_and_client_with_tokens(ledger: Ledger, issuer: Issuer, users: None, tmp_path: Path) -> None:
    """The CLI takes a token from NOTARIUM_TOKEN or NOTARIUM_TOKEN_COMMAND; the client from token=."""
    base = {
        **clean_env(),
        "HOME": str(tmp_path),
        "NOTARIUM_ENDPOINT": ledger.url,
        "NOTARIUM_SERVICE_CERT": ledger.verify,
    }
    token_file = tmp_path / "token"
    token_file.write_text(issuer.token(CONTRIBUTOR) + "\n")
    for extra in (
        {"NOTARIUM_TOKEN": issuer.token(CONTRIBUTOR)},
        {"NOTARIUM_TOKEN_COMMAND": f"cat {token_file}"},
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "notarium", "append", "cli with a token", "--json"],
            env={**base, **extra},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["state"] == "Committed"
    bad = subprocess.run(
        [sys.executable, "-m", "notarium", "status", "2.1", "--json"],
        env={**base, "NOTARIUM_TOKEN": issuer.token(CONTRIBUTOR, exp=int(time.time()) - 3600)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 1
    assert "expired" in json.loads(bad.stdout)["error"]
    with Client(ledger.url, Path(ledger.verify), token=issuer.token(READER)) as reader:
        root = reader.sync()
        assert reader.status(root.txid).value == "Committed"
        with pytest.raises(ApiError) as refused:
            reader.issuers()
        assert refused.value.status == 403


def test_cli_manages_issuers(ledger: Ledger, users: None, tmp_path: Path) -> None:
    """`notarium issuers add|list|remove` as an Administrator (keys from a JWK set file)."""
    cli_issuer = Issuer("cli")
    try:
        jwks = tmp_path / "jwks.json"
        jwks.write_text(json.dumps(cli_issuer.jwks()))
        env = {
            **clean_env(),
            "HOME": str(tmp_path),
            "NOTARIUM_ENDPOINT": ledger.url,
            "NOTARIUM_SERVICE_CERT": ledger.verify,
            "NOTARIUM_CERT": ledger.admin_pem,
        }

        def cli(*args: str) -> Any:
            proc = subprocess.run(
                [sys.executable, "-m", "notarium", "issuers", *args, "--json"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert proc.returncode == 0, proc.stdout + proc.stderr
            return json.loads(proc.stdout)

        added = cli("add", cli_issuer.iss, "--jwks", str(jwks), "--audience", "api://cli", "--user-id-claim", "sub")
        assert added["issuer"]["keyIds"] == sorted(cli_issuer.published)
        listed = {i["issuer"]: i for i in cli("list")["issuers"]}
        assert listed[cli_issuer.iss]["audiences"] == ["api://cli"]
        token = cli_issuer.token("cli|reader", aud="api://cli")
        assert ledger.bearer(token, "GET", "/app/ping").status_code == 401  # not a user of this issuer yet
        proc = subprocess.run(
            [sys.executable, "-m", "notarium", "users", "add", "cli|reader", "--issuer", cli_issuer.iss, "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        added_user = json.loads(proc.stdout)
        assert (added_user["userId"], added_user["roles"]) == ("cli|reader", ["Reader"])
        assert ledger.bearer(token, "GET", "/app/ping").status_code == 200
        assert cli("remove", cli_issuer.iss)["removed"] is True
        assert ledger.bearer(token, "GET", "/app/ping").status_code == 401
    finally:
        cli_issuer.close()


# --- issue 15: token identities are scoped by issuer; any OIDC user id; malformed tokens ---------


def _admin_fingerprint(ledger: Ledger) -> str:
    cert = x509.load_pem_x509_certificate(Path(ledger.admin_pem).read_bytes())
    return acl_fingerprint(cert.public_bytes(Encoding.DER))


def test_a_token_is_never_a_certificate_user(ledger: Ledger, issuer: Issuer, users: None) -> None:
    """A token whose user-id claim is an Administrator's certificate fingerprint is nobody (it was
    that Administrator: /app/users answered 200)."""
    fingerprint = _admin_fingerprint(ledger)
    before = ledger.quiet_committed()
    for claim in (fingerprint, fingerprint.replace(":", ""), fingerprint.replace(":", "").lower()):
        token = issuer.token(claim)
        r = ledger.bearer(token, "GET", "/app/users")
        assert r.status_code == 401, r.text
        assert r.json()["error"]["code"] == "InvalidAuthenticationInfo"
        assert "not a user of this ledger" in r.json()["error"]["message"]
        r = ledger.bearer(token, "PATCH", f"/app/users/{claim}", json={"assignedRole": "Reader"})
        assert r.status_code == 401, r.text
    assert ledger.quiet_committed() == before
    assert ledger.admin("GET", "/app/users").status_code == 200  # the certificate still is the Administrator


def test_a_token_is_never_another_issuers_user(ledger: Ledger, issuer: Issuer, users: None) -> None:
    """CONTRIBUTOR is a user of the first issuer: a second issuer's token naming it is nobody, and
    a user of the second issuer is nobody for the first."""
    other = Issuer("other")
    try:
        r = ledger.admin("PUT", "/app/jwtIssuers", json={"issuer": other.iss, "jwks": other.jwks()})
        assert r.status_code == 200, r.text
        before = ledger.quiet_committed()
        r = ledger.bearer(other.token(CONTRIBUTOR), "POST", "/app/transactions", json={"contents": "impostor"})
        assert r.status_code == 401, r.text
        assert r.json()["error"]["code"] == "InvalidAuthenticationInfo"
        assert ledger.quiet_committed() == before
        assert ledger.bearer(issuer.token(CONTRIBUTOR), "GET", "/app/ping").status_code == 200
        theirs = str(uuid.uuid4())
        ledger.add_user(theirs, "Reader", issuer=other.iss)
        assert ledger.bearer(other.token(theirs), "GET", "/app/ping").status_code == 200
        assert ledger.bearer(issuer.token(theirs), "GET", "/app/ping").status_code == 401
        r = ledger.admin("GET", f"/app/users/{theirs}")  # shown as it was written, without its issuer
        assert r.json() == {"assignedRole": "Reader", "userId": theirs}
    finally:
        assert ledger.admin("DELETE", "/app/jwtIssuers", params={"issuer": other.iss}).status_code == 204
        other.close()


OIDC_USER_IDS = {
    "Dex": "CgVhbGljZRIFbG9jYWw",
    "Auth0": "auth0|64f1a2b3c4d5e6f708192a3b",
    "Keycloak": "alice.smith",
    "ACL test id": "0" * 36,
    "email": "bob/ops@example.com",
}


@pytest.mark.parametrize("name", list(OIDC_USER_IDS))
def test_oidc_user_ids_that_are_not_guids(ledger: Ledger, issuer: Issuer, users: None, name: str) -> None:
    user_id = OIDC_USER_IDS[name]
    path = quote(user_id, safe="")
    r = ledger.admin(
        "PATCH",
        f"/app/ledgerUsers/{path}",
        json={"assignedRoles": ["Contributor"]},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"assignedRoles": ["Contributor"], "userId": user_id}
    token = issuer.token(user_id)
    r = ledger.bearer(token, "POST", "/app/transactions", params={"collectionId": "oidc"}, json={"contents": name})
    assert r.status_code == 200, r.text
    assert ledger.admin("GET", f"/app/users/{path}").json() == {"assignedRole": "Contributor", "userId": user_id}
    assert {"assignedRole": "Contributor", "userId": user_id} in ledger.admin("GET", "/app/users").json()["ledgerUsers"]
    assert ledger.admin("DELETE", f"/app/users/{path}").status_code == 204
    assert ledger.bearer(token, "GET", "/app/ping").status_code == 401
    assert ledger.admin("GET", f"/app/ledgerUsers/{path}").status_code == 404


def test_a_token_with_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    """401 with one short access-log line each, not a 500 with a traceback (about 1.7 KB) each."""
    directory = tmp_path / "ledger"
    init_service(directory)
    with running(directory, verbose=1) as srv:
        host, port = srv.url.removeprefix("https://").rsplit(":", 1)
        ctx = ssl.create_default_context(cafile=str(srv.service_cert))
        ctx.check_hostname = False  # the node certificate names the host it was made for; pinned all the same
        start = len(srv.output)
        tokens = [b"eyJ\xff\xfe.e30.sig", b"\xc3\x28", b"abc\x80", "é.a.b".encode()]
        for token in tokens:
            with socket.create_connection((host, int(port)), timeout=TIMEOUT) as raw, ctx.wrap_socket(raw) as tls:
                tls.sendall(b"GET /app/users HTTP/1.1\r\nHost: ledger\r\nAuthorization: Bearer " + token + b"\r\n\r\n")
                answer = b""
                while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
                    chunk = tls.recv(1 << 16)
                    assert chunk, answer
                    answer += chunk
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 401 "), answer
            error = json.loads(body)["error"]
            assert error["code"] == "InvalidAuthenticationInfo"
            assert "not a well-formed JWT" in error["message"]
        deadline = time.monotonic() + TIMEOUT
        while sum('"status":401' in line for line in srv.output[start:]) < len(tokens):
            assert time.monotonic() < deadline, "".join(srv.output[start:])
            time.sleep(0.05)
        logged = srv.output[start:]
    assert len(logged) == len(tokens), "".join(logged)
    assert all(len(line) < 400 for line in logged), "".join(logged)
    assert "Traceback" not in "".join(logged)


def _set_issuer(led: Ledger, it: Issuer) -> None:
    r = led.admin("PUT", "/app/jwtIssuers", json={"issuer": it.iss, "jwks": it.jwks()})
    assert r.status_code == 200, r.text


def test_token_users_when_a_ledger_trusts_several_issuers(tmp_path: Path) -> None:
    """A user added before any issuer is trusted is the first issuer's, stays its own when a second
    comes; with two issuers a new token user's issuer must be named; ids are shown as written."""
    a, b = Issuer("a"), Issuer("b")
    early, later = "0" * 36, "auth0|later"
    try:
        directory = tmp_path / "ledger"
        init_service(directory)
        with running(directory) as srv:
            led = Ledger(srv)
            led.add_user(early, "Reader")  # no issuer yet: the ACL API takes any id
            _set_issuer(led, a)
            assert led.bearer(a.token(early), "GET", "/app/ping").status_code == 200
            _set_issuer(led, b)
            assert led.bearer(a.token(early), "GET", "/app/ping").status_code == 200
            assert led.bearer(b.token(early), "GET", "/app/ping").status_code == 401  # a's user, not b's
            before = led.quiet_committed()
            for params in (None, {"issuer": "https://untrusted.example"}):
                r = led.admin("PATCH", f"/app/users/{quote(later)}", params=params, json={"assignedRole": "Reader"})
                assert r.status_code == 400, r.text
                assert r.json()["error"]["code"] == "InvalidInput"
            assert (
                "several token issuers"
                in led.admin("PATCH", f"/app/users/{quote(later)}", json={"assignedRole": "Reader"}).json()["error"][
                    "message"
                ]
            )
            assert led.quiet_committed() == before
            led.add_user(later, "Contributor", issuer=b.iss)
            assert led.bearer(b.token(later), "GET", "/app/ping").status_code == 200
            assert led.bearer(a.token(later), "GET", "/app/ping").status_code == 401
            assert led.admin("GET", f"/app/users/{quote(later)}").json() == {
                "assignedRole": "Contributor",
                "userId": later,
            }
            # the same id at both issuers: two users, told apart by ?issuer=
            led.add_user(early, "Contributor", issuer=b.iss)
            r = led.admin("GET", f"/app/users/{early}")
            assert r.status_code == 400, r.text
            assert "several token users" in r.json()["error"]["message"]
            assert led.admin("GET", f"/app/users/{early}", params={"issuer": a.iss}).json()["assignedRole"] == "Reader"
            assert (
                led.admin("GET", f"/app/users/{early}", params={"issuer": b.iss}).json()["assignedRole"]
                == "Contributor"
            )
            listed = led.admin("GET", "/app/users").json()["ledgerUsers"]
            assert sorted(u["assignedRole"] for u in listed if u["userId"] == early) == ["Contributor", "Reader"]
            assert led.admin("DELETE", f"/app/users/{early}", params={"issuer": b.iss}).status_code == 204
            assert led.bearer(b.token(early), "GET", "/app/ping").status_code == 401
            assert led.bearer(a.token(early), "GET", "/app/ping").status_code == 200
        with running(directory) as srv:  # all of it is ledger state
            led = Ledger(srv)
            assert led.bearer(a.token(early), "GET", "/app/ping").status_code == 200
            assert led.bearer(b.token(early), "GET", "/app/ping").status_code == 401
            assert led.bearer(b.token(later), "GET", "/app/ping").status_code == 200
    finally:
        a.close()
        b.close()


def test_token_users_of_a_ledger_from_before_issuer_scoping(tmp_path: Path) -> None:
    """Ledgers written before token users were scoped by issuer keep a token user under its bare
    lower-case object id. Such a user still authenticates with its (only) issuer's tokens, and is
    bound to that issuer, not handed to the next one, when a second issuer is trusted."""
    a, b = Issuer("legacy-a"), Issuer("legacy-b")
    oid = str(uuid.uuid4()).upper()
    try:
        directory = tmp_path / "ledger"
        init_service(directory)
        with running(directory) as srv:
            _set_issuer(Ledger(srv), a)
        with open_ledger(directory, EngineConfig()) as engine:  # the row as earlier versions wrote it
            row = json.dumps({"assignedRoles": ["Contributor"], "userId": oid}, separators=(",", ":")).encode()
            txid = engine.append({tables.USERS: {oid.lower().encode(): row}})
            assert engine.wait_committed(txid, timeout=TIMEOUT) == TxStatus.COMMITTED
        with running(directory) as srv:
            led = Ledger(srv)
            r = led.bearer(a.token(oid.lower()), "POST", "/app/transactions", json={"contents": "still works"})
            assert r.status_code == 200, r.text
            assert led.admin("GET", f"/app/users/{oid}").json() == {"assignedRole": "Contributor", "userId": oid}
            _set_issuer(led, b)
            assert led.bearer(b.token(oid.lower()), "GET", "/app/ping").status_code == 401
            assert led.bearer(a.token(oid.lower()), "GET", "/app/ping").status_code == 200
            assert led.admin("GET", f"/app/users/{oid.lower()}").json() == {
                "assignedRole": "Contributor",
                "userId": oid,
            }
    finally:
        a.close()
        b.close()
