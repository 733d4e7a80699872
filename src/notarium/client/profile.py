"""Connection profiles: where the ledger is and how to trust and reach it, so commands stay short.

A profile is a JSON file::

    {"endpoint": "https://127.0.0.1:8443",
     "service_cert": "/path/service_cert.pem",     # pinned: TLS trust anchor and receipts' root
     "cert": "/path/user0_combined.pem",            # client certificate (and key, if combined)
     "key": null,                                   # the key, if not in the cert file
     "state": "/path/trusted-root.json",            # optional: the last verified signed root
     "e2e_key": "/path/alice.key",                  # optional: the default end-to-end key file
     "e2e": {"secrets": {"key": "alice.key",        # optional: collections sealed end to end,
                         "writers": ["<writer id>"]}}}  # each with its key and trusted writers

Relative paths are relative to the profile file. The file is ``--profile FILE``, else
``$NOTARIUM_PROFILE``, else ``~/.config/notarium/profile.json`` if it exists. Each field can be set
(or overridden) by ``NOTARIUM_ENDPOINT``, ``NOTARIUM_SERVICE_CERT``, ``NOTARIUM_CERT``,
``NOTARIUM_KEY``, ``NOTARIUM_STATE``, ``NOTARIUM_TOKEN_COMMAND``, ``NOTARIUM_E2E_KEY``.

``e2e`` marks collections as end-to-end encrypted (``notarium.client.e2e``): appends to them are
sealed on the client, reads are opened with the collection's ``key`` (else ``e2e_key``); the
grants of their data keys count only when signed by this key's own writer key or one of
``writers`` (writer ids, printed by ``notarium keys show``).

A bearer token (instead of a client certificate) comes from ``NOTARIUM_TOKEN``, or from the output
of ``token_command`` (e.g. ``az account get-access-token --resource
https://confidential-ledger.azure.com --query accessToken -o tsv``), run when the profile is
loaded. A token itself is never read from a profile file (files get shared).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from notarium.client.errors import ClientError

DEFAULT_PATH = Path("~/.config/notarium/profile.json")
_FIELDS = ("endpoint", "service_cert", "cert", "key", "state", "token_command", "e2e_key")
ENV = {field: f"NOTARIUM_{field.upper()}" for field in _FIELDS}


@dataclass(frozen=True)
class E2ESetting:
    """One end-to-end encrypted collection: its key file (``None``: the profile's ``e2e_key``) and
    the writer ids trusted to sign its key grants (besides the key's own)."""

    key: Path | None = None
    writers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Profile:
    endpoint: str
    service_cert: Path
    cert: Path | None = None
    key: Path | None = None
    state: Path | None = None
    token_command: str | None = None
    token: str | None = None
    e2e_key: Path | None = None
    e2e: dict[str, E2ESetting] = field(default_factory=dict)

    def e2e_setting(self, collection: str) -> E2ESetting | None:
        """The collection's end-to-end setting (``None``: the profile does not mark it)."""
        return self.e2e.get(collection)

    def to_json(self) -> dict[str, object]:
        return {
            "endpoint": self.endpoint,
            "service_cert": str(self.service_cert),
            "cert": str(self.cert) if self.cert else None,
            "key": str(self.key) if self.key else None,
            "state": str(self.state) if self.state else None,
            "token_command": self.token_command,
            **({"e2e_key": str(self.e2e_key)} if self.e2e_key else {}),
            **(
                {
                    "e2e": {
                        c: {"key": str(s.key) if s.key else None, "writers": list(s.writers)}
                        for c, s in self.e2e.items()
                    }
                }
                if self.e2e
                else {}
            ),
        }

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        tmp.replace(path)


def _profile_file(explicit: Path | None, env: Mapping[str, str]) -> Path | None:
    if explicit is not None:
        return explicit
    if env.get("NOTARIUM_PROFILE"):
        return Path(env["NOTARIUM_PROFILE"])
    default = DEFAULT_PATH.expanduser()
    return default if default.exists() else None


def load_profile(
    path: Path | None = None, *, env: Mapping[str, str] | None = None, **overrides: str | Path | None
) -> Profile:
    """The profile from ``path`` (or the environment's), then environment variables, then
    ``overrides`` (command-line options; ``None`` values are ignored)."""
    env = os.environ if env is None else env
    values: dict[str, str | None] = dict.fromkeys(_FIELDS)
    file = _profile_file(path, env)
    base = Path.cwd()
    e2e_raw: object = None
    if file is not None:
        try:
            data = json.loads(file.read_text())
        except OSError as exc:
            raise ClientError(f"cannot read the profile {file}: {exc.strerror}") from None
        except ValueError:
            raise ClientError(f"the profile {file} is not valid JSON") from None
        if not isinstance(data, dict):
            raise ClientError(f"the profile {file} must hold a JSON object")
        unknown = set(data) - set(_FIELDS) - {"e2e"}
        e2e_raw = data.get("e2e")
        if unknown:
            raise ClientError(f"the profile {file} has unknown fields: {', '.join(sorted(unknown))}")
        for field in _FIELDS:
            value = data.get(field)
            if value is not None and not isinstance(value, str):
                raise ClientError(f"the profile {file}: {field} must be a string")
            values[field] = value
        base = file.parent
    for field, var in ENV.items():
        if env.get(var):
            values[field] = env[var]
    for field, value in overrides.items():
        if field not in _FIELDS:
            raise ValueError(f"unknown profile field {field}")
        if value is not None:
            values[field] = str(value)
    if not values["endpoint"]:
        raise ClientError(
            "no ledger endpoint: pass --endpoint, set NOTARIUM_ENDPOINT, or use a profile "
            "(`make run` prints one: export NOTARIUM_PROFILE=...)"
        )
    if not values["service_cert"]:
        raise ClientError(
            "no pinned service certificate: pass --service-cert or set NOTARIUM_SERVICE_CERT "
            "(the service_cert.pem of the ledger, obtained from its operator, never over the network unverified)"
        )

    def path_of(field: str) -> Path | None:
        value = values[field]
        if value is None:
            return None
        p = Path(value).expanduser()
        return p if p.is_absolute() else base / p

    def resolve(value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else base / p

    e2e = _e2e_settings(e2e_raw, file, resolve)
    service_cert = path_of("service_cert")
    if service_cert is None:  # checked above; keeps the type checker informed
        raise ClientError("no pinned service certificate")
    profile = Profile(
        endpoint=str(values["endpoint"]).rstrip("/"),
        service_cert=service_cert,
        cert=path_of("cert"),
        key=path_of("key"),
        state=path_of("state"),
        token_command=values["token_command"],
        e2e_key=path_of("e2e_key"),
        e2e=e2e,
    )
    token = env.get("NOTARIUM_TOKEN") or (run_token_command(profile.token_command) if profile.token_command else None)
    return replace(profile, token=token) if token else profile


def _e2e_settings(raw: object, file: Path | None, resolve: Callable[[str], Path]) -> dict[str, E2ESetting]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ClientError(f"the profile {file}: e2e must map collection ids to settings")
    out = {}
    for collection, setting in raw.items():
        if not isinstance(setting, dict) or set(setting) - {"key", "writers"}:
            raise ClientError(f"the profile {file}: e2e[{collection!r}] takes only key and writers")
        key, writers = setting.get("key"), setting.get("writers", [])
        if key is not None and not isinstance(key, str):
            raise ClientError(f"the profile {file}: e2e[{collection!r}].key must be a path")
        if not isinstance(writers, list) or not all(isinstance(w, str) for w in writers):
            raise ClientError(f"the profile {file}: e2e[{collection!r}].writers must be a list of writer ids")
        out[collection] = E2ESetting(resolve(key) if key else None, tuple(writers))
    return out


def run_token_command(command: str) -> str:
    """The token a command prints (its whole standard output, stripped)."""
    try:
        done = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=60, check=False)
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        raise ClientError(f"the token command failed to run: {exc}") from None
    token = done.stdout.strip()
    if done.returncode != 0 or not token:
        raise ClientError(f"the token command exited {done.returncode} without a token: {done.stderr.strip()[:300]}")
    return token
