"""The token validator (notarium.auth.tokens) on its own: a fixed clock, keys made here, tokens
minted with PyJWT; every refusal names its reason and never the token."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from notarium.auth.identity import token_key
from notarium.auth.tokens import (
    DEFAULT_AUDIENCE,
    MAX_TOKEN_BYTES,
    IssuerConfig,
    TokenError,
    TokenValidator,
    UnknownKeyError,
    parse_jwks,
)

ISS = "https://login.example.com/tenant/v2.0"
OID = "4f1b2c3d-0000-4000-8000-1234567890ab"
NOW = 1_800_000_000.0
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def jwk(key: Any, kid: str) -> dict[str, Any]:
    algo = jwt.algorithms.RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else jwt.algorithms.ECAlgorithm
    body: dict[str, Any] = algo.to_jwk(key.public_key(), as_dict=True)
    body.update({"kid": kid, "use": "sig"})
    return body


def token(key: Any = RSA_KEY, kid: str = "r1", alg: str = "RS256", **claims: Any) -> str:
    body = {"iss": ISS, "aud": DEFAULT_AUDIENCE, "oid": OID, "nbf": int(NOW) - 10, "exp": int(NOW) + 600}
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def validator(clock: Clock) -> TokenValidator:
    v = TokenValidator(clock=clock)
    v.configure({ISS: IssuerConfig(ISS)}, {ISS: parse_jwks({"keys": [jwk(RSA_KEY, "r1"), jwk(EC_KEY, "e1")]})})
    return v


def test_valid_tokens(validator: TokenValidator) -> None:
    p = validator.validate(token())
    assert (p.key, p.display_id, p.kind, p.issuer) == (token_key(ISS, OID), OID, "token", ISS)
    assert validator.validate(token(EC_KEY, "e1", "ES256")).key == token_key(ISS, OID)


def _none_token() -> str:
    def b64(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return b64({"alg": "none", "kid": "r1"}) + "." + b64({"iss": ISS, "aud": DEFAULT_AUDIENCE, "oid": OID}) + "."


OTHER_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
REFUSALS = {
    "expired": (lambda: token(exp=int(NOW) - 61), "expired"),
    "not yet valid": (lambda: token(nbf=int(NOW) + 61), "not valid yet"),
    "wrong audience": (lambda: token(aud="api://other"), "audience"),
    "wrong issuer": (lambda: token(iss="https://evil.example/v2.0"), "issuer is not trusted"),
    "wrong signature": (lambda: token(OTHER_RSA), "signature does not verify"),
    "alg none": (_none_token, "not accepted"),
    "HMAC": (lambda: jwt.encode({"iss": ISS}, "k" * 32, algorithm="HS256", headers={"kid": "r1"}), "not accepted"),
    "ES256 header on an RSA key": (lambda: token(EC_KEY, "r1", "ES256"), "does not fit its key"),
    "no exp": (lambda: token(exp=None), "exp"),
    "no user claim": (lambda: token(oid=None), "no oid claim"),
    "user claim not an id": (lambda: token(oid="root\nadmin"), "not a user id"),
    "empty user claim": (lambda: token(oid=""), "not a user id"),
    "user claim too long": (lambda: token(oid="x" * 257), "not a user id"),
    "user claim a number": (lambda: token(oid=12345), "no oid claim"),
    "oversized": (lambda: token(pad="x" * MAX_TOKEN_BYTES), "larger than"),
    "garbage": (lambda: "a.b.c", "not a well-formed JWT"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusals(validator: TokenValidator, case: str) -> None:
    make, reason = REFUSALS[case]
    text = make()
    with pytest.raises(TokenError, match=reason) as refused:
        validator.validate(text)
    assert text not in str(refused.value)


def test_unknown_key_id_is_its_own_error(validator: TokenValidator) -> None:
    with pytest.raises(UnknownKeyError) as unknown:
        validator.validate(token(OTHER_RSA, "r2"))
    assert (unknown.value.issuer, unknown.value.kid) == (ISS, "r2")


def test_leeway_and_cache_expiry(validator: TokenValidator, clock: Clock) -> None:
    t = token(exp=int(NOW) + 10)
    validator.validate(t)
    clock.now = NOW + 30  # past exp, within the 60 s leeway: still accepted, freshly validated
    validator.validate(t)
    clock.now = NOW + 100
    with pytest.raises(TokenError, match="expired"):
        validator.validate(t)


def test_new_keys_forget_cached_results(validator: TokenValidator) -> None:
    t = token()
    validator.validate(t)
    validator.configure({ISS: IssuerConfig(ISS)}, {ISS: parse_jwks({"keys": [jwk(EC_KEY, "e1")]})})
    with pytest.raises(UnknownKeyError):
        validator.validate(t)  # the retired key is gone, and so is the cached result


def test_configurable_audience_and_claim(clock: Clock) -> None:
    v = TokenValidator(clock=clock)
    config = IssuerConfig(ISS, audiences=("api://ledger",), user_id_claim="sub")
    v.configure({ISS: config}, {ISS: parse_jwks({"keys": [jwk(RSA_KEY, "r1")]})})
    assert v.validate(token(aud="api://ledger", sub=OID.upper(), oid=None)).key == token_key(ISS, OID)
    with pytest.raises(TokenError, match="audience"):
        v.validate(token())


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ([], "JSON object"),
        ({"issuer": ""}, "issuer"),
        ({"issuer": ISS, "audiences": []}, "audiences"),
        ({"issuer": ISS, "audiences": [1]}, "audiences"),
        ({"issuer": ISS, "userIdClaim": ""}, "userIdClaim"),
        ({"issuer": ISS, "jwksUri": "http://plain.example/keys"}, "https"),
        ({"issuer": ISS, "caCertificate": "nope"}, "PEM"),
        ({"issuer": ISS, "extra": 1}, "unknown issuer fields"),
    ],
)
def test_issuer_config_validation(body: Any, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        IssuerConfig.from_json(body)


def test_issuer_config_round_trip() -> None:
    config = IssuerConfig(ISS, ("a", "b"), "sub", "https://login.example.com/keys", None)
    assert IssuerConfig.from_json(config.to_json()) == config
    assert IssuerConfig.from_json({"issuer": ISS}).audiences == (DEFAULT_AUDIENCE,)


def test_parse_jwks_keeps_signing_keys_only() -> None:
    keys = [
        jwk(RSA_KEY, "r1"),
        {**jwk(EC_KEY, "enc"), "use": "enc"},
        {"kty": "oct", "k": "c2VjcmV0", "kid": "h"},
        {k: v for k, v in jwk(EC_KEY, "x").items() if k != "kid"},
        {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
    ]
    assert set(parse_jwks({"keys": keys})) == {"r1"}
    assert set(parse_jwks(json.dumps({"keys": keys}).encode())) == {"r1"}
    for bad in ({"keys": []}, {"nokeys": 1}, b"not json", {"keys": [keys[2]]}):
        with pytest.raises(ValueError, match="JWK set"):
            parse_jwks(bad)


OTHER_ISS = "https://dex.example.com"


@pytest.mark.parametrize(
    "claim",
    [
        "CgVhbGljZRIFbG9jYWw",  # Dex's sub
        "auth0|64f1a2b3c4d5e6f708192a3b",  # Auth0's
        "alice",  # a Keycloak username
        "0" * 36,  # an object id in ACL's own tests
        "Ünïcode user",
        "x" * 256,
    ],
)
def test_any_user_id_claim_is_a_token_user_of_its_issuer(clock: Clock, claim: str) -> None:
    v = TokenValidator(clock=clock)
    v.configure({ISS: IssuerConfig(ISS, user_id_claim="sub")}, {ISS: parse_jwks({"keys": [jwk(RSA_KEY, "r1")]})})
    p = v.validate(token(sub=claim))
    assert (p.key, p.display_id, p.issuer) == (token_key(ISS, claim), claim, ISS)
    assert p.key.startswith("jwt:")


def test_a_fingerprint_claim_is_never_a_certificate_user(validator: TokenValidator) -> None:
    fingerprint = ":".join(["5F"] * 32)
    for claim in (fingerprint, fingerprint.replace(":", ""), fingerprint.replace(":", "").lower()):
        p = validator.validate(token(oid=claim))
        assert p.kind == "token"
        assert p.key == token_key(ISS, claim) != "5f" * 32


def test_the_same_claim_of_two_issuers_is_two_users(clock: Clock) -> None:
    v = TokenValidator(clock=clock)
    keys = parse_jwks({"keys": [jwk(RSA_KEY, "r1")]})
    v.configure({ISS: IssuerConfig(ISS), OTHER_ISS: IssuerConfig(OTHER_ISS)}, {ISS: keys, OTHER_ISS: keys})
    mine, theirs = v.validate(token(oid=OID)), v.validate(token(oid=OID, iss=OTHER_ISS))
    assert (mine.issuer, theirs.issuer) == (ISS, OTHER_ISS)
    assert mine.key != theirs.key


@pytest.mark.parametrize("text", ["ey\udcff.a.b", "é.a.b", token() + "\udcff"])
def test_non_ascii_tokens_are_refused_as_malformed(validator: TokenValidator, text: str) -> None:
    """aiohttp hands header bytes over 0x7F on as surrogate escapes; PyJWT cannot encode them."""
    with pytest.raises(TokenError, match="not a well-formed JWT"):
        validator.validate(text)
