"""``notarium recovery share|submit|status``: a member's part in a disaster recovery.

The service runs ``notarium serve DIR --recover`` and waits. Each member fetches its encrypted
share and decrypts it **locally** with its RSA encryption key (``share``; the share goes to a
0600 file, never to the screen), then submits it (``submit``); ``status`` shows how many of the
threshold have arrived. The connection comes from the profile (endpoint and the pinned service
certificate: the one the members had before the disaster). A member is named by its id (the
SHA-256 fingerprint of its certificate) or by its certificate (``--member-cert``).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import ssl
import sys
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key

from notarium.cli.ledger import add_ledger_options
from notarium.client.errors import ApiError, ClientError, UnreachableError
from notarium.client.profile import load_profile
from notarium.recovery.shares import decrypt_share

EXIT_OK, EXIT_FAILED, EXIT_UNREACHABLE = 0, 1, 4


def register(sub: Any) -> None:
    p = sub.add_parser("recovery", help="a member's part in a disaster recovery (share, submit, status)")
    p.add_argument("action", choices=("share", "submit", "status"))
    p.add_argument("file", nargs="?", type=Path, help="share: where to write the decrypted share; submit: the file")
    p.add_argument("--member-id", help="the member's id (SHA-256 fingerprint of its certificate)")
    p.add_argument("--member-cert", type=Path, help="the member's certificate (gives its id)")
    p.add_argument("--member-enc-key", type=Path, help="share: the member's RSA encryption private key (PEM)")
    add_ledger_options(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=handle)


def _member_id(args: argparse.Namespace) -> str:
    if args.member_id:
        return str(args.member_id).replace(":", "").lower()
    if args.member_cert is not None:
        cert = x509.load_pem_x509_certificate(args.member_cert.read_bytes())
        return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()
    raise ClientError("name the member: --member-id ID or --member-cert FILE")


def _answer(r: httpx.Response, what: str) -> Any:
    if r.status_code != 200:
        code, message = "HttpError", r.text[:200]
        try:
            err = r.json().get("error", {})
            code, message = str(err.get("code", code)), str(err.get("message", message))
        except ValueError:
            pass
        raise ApiError(r.status_code, code, message, method="", path=what)
    return r.json()


def handle(args: argparse.Namespace) -> int:
    try:
        profile = load_profile(args.profile, endpoint=args.endpoint, service_cert=args.service_cert)
        ctx = ssl.create_default_context(cadata=profile.service_cert.read_text())
        with httpx.Client(base_url=profile.endpoint, verify=ctx, timeout=30) as http:
            if args.action == "status":
                body = _answer(http.get("/gov/recovery/status"), "status")
                human = f"{body['status']}: {body['submitted']} of {body['threshold']} shares"
            elif args.action == "share":
                body, human = _share(args, http)
            else:
                body, human = _submit(args, http)
    except httpx.HTTPError as exc:
        print(f"error: cannot reach the ledger: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except (ClientError, UnreachableError) as exc:
        print(f"error: {exc.diagnostics()}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps({"ok": True, **body}) if args.json else human)
    return EXIT_OK


def _share(args: argparse.Namespace, http: httpx.Client) -> tuple[dict[str, Any], str]:
    if args.file is None or args.member_enc_key is None:
        raise ClientError("share needs an output FILE and --member-enc-key")
    member = _member_id(args)
    body = _answer(http.get(f"/gov/recovery/encrypted-shares/{member}"), "encrypted share")
    key = load_pem_private_key(args.member_enc_key.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ClientError("the member's encryption key must be an RSA private key")
    try:
        share = decrypt_share(base64.b64decode(body["encryptedShare"]), key)
    except ValueError:
        raise ClientError("this key does not decrypt the member's share: is it the member's encryption key?") from None
    fd = os.open(args.file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(share).decode() + "\n")
    return {"memberId": member, "file": str(args.file)}, f"the decrypted share of {member[:16]}… is in {args.file}"


def _submit(args: argparse.Namespace, http: httpx.Client) -> tuple[dict[str, Any], str]:
    if args.file is None:
        raise ClientError("submit needs the share FILE written by `notarium recovery share`")
    member = _member_id(args)
    share = args.file.read_text().strip()
    body = _answer(http.post(f"/gov/recovery/members/{member}:recover", json={"share": share}), "submit")
    return body, f"accepted: {body['submitted']} of {body['threshold']} shares ({body['status']})"
