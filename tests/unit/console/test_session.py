"""The console's login token, sessions and CSRF tokens; where it may listen; the standalone page's policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from notarium.console.run import ConsoleUsageError, check_listen, is_loopback
from notarium.console.session import Sessions
from notarium.verify import standalone


def test_the_login_token_opens_one_session_once() -> None:
    sessions = Sessions()
    assert sessions.login("wrong") is None
    opened = sessions.login(sessions.login_token)
    assert opened is not None
    cookie, session = opened
    assert sessions.find(cookie) is session
    assert sessions.login(sessions.login_token) is None  # spent
    assert sessions.find("another") is None
    assert sessions.find(None) is None
    assert session.csrf_ok(session.csrf)
    assert not session.csrf_ok(session.csrf[:-1] + "x")
    assert not session.csrf_ok(None)
    assert cookie != sessions.login_token


def test_only_digests_of_the_secrets_are_kept() -> None:
    sessions = Sessions()
    opened = sessions.login(sessions.login_token)
    assert opened is not None
    cookie, _ = opened
    kept = repr(vars(sessions))
    assert cookie not in kept


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_needs_no_tls(address: str) -> None:
    assert is_loopback(address)
    assert check_listen(address, 8600, None, None).bind == address


@pytest.mark.parametrize("address", ["0.0.0.0", "192.0.2.10", "::", "2001:db8::1"])  # noqa: S104
def test_any_other_address_needs_tls(address: str, tmp_path: Path) -> None:
    assert not is_loopback(address)
    with pytest.raises(ConsoleUsageError, match="without TLS"):
        check_listen(address, 8600, None, None)
    listen = check_listen(address, 8600, tmp_path / "c.pem", tmp_path / "k.pem")
    assert listen.secure


def test_bad_listen_options() -> None:
    with pytest.raises(ConsoleUsageError, match="go together"):
        check_listen(None, 8600, Path("c.pem"), None)
    with pytest.raises(ConsoleUsageError, match="IP address"):
        check_listen("example.com", 8600, Path("c.pem"), Path("k.pem"))
    with pytest.raises(ConsoleUsageError, match="--port"):
        check_listen(None, 70000, None, None)
    assert check_listen(None, 8600, None, None).bind == "127.0.0.1"


def test_the_standalone_page_carries_its_own_policy() -> None:
    html = standalone.page().decode()
    assert standalone.embedded_policy(html) == standalone.policy(html), "run python -m notarium.verify.standalone"
    policy = standalone.header_policy()
    assert "connect-src 'none'" in policy
    assert "'unsafe-inline'" not in policy
    assert policy.count("'sha256-") == 2  # one script, one style
    assert "<script src" not in html  # self-contained
