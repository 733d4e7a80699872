"""`notarium console --profile` in a real browser (the distribution's Chromium, driven by Playwright)
against a real `notarium serve`: the login token, browsing newest first with paging and filters,
append (Pending, then Committed, without a reload), receipts verified step by step (and altered
ones failing at the step that was altered), attacker-controlled entries shown as text, CSRF and
the Content-Security-Policy, users and roles, governance, the keyboard, 375 px, copy buttons, and
the refusal to listen on the network without TLS. One server, one console, one browser."""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import re
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from playwright.sync_api import Browser, BrowserContext, Page, expect

from integration.console_kit import Console, Dialogs, chromium, console, screenshot_path
from integration.server import Server, clean_env, new_identity, running
from notarium.client import Client, load_profile
from notarium.console.app import CSP
from notarium.ledger import init_service
from notarium.types import TxId

PAGING = 60  # entries of the collection "paging", interleaved with others
XSS = ['<script>alert("xss-1")</script>', '"><img src=x onerror=alert("xss-2")>', "</textarea><svg onload=alert(3)>"]
XSS_COLLECTION = "<b onmouseover=alert(4)>coll"
XSS_TAG = '"><img src=y onerror=alert(5)>'


@dataclass
class Setup:
    server: Server
    console: Console
    profile: Path
    paging: list[str]  # TxIds of the "paging" collection, oldest first
    even: list[str]  # those tagged "even"
    xss: list[str]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    work = tmp_path_factory.mktemp("console")
    directory = work / "ledger"
    init_service(directory, ledger_id="console-test")
    # a small API page, so that the console's newest-first windows meet nextLink and shrink
    with running(directory, "--page-size", "7") as server:
        profile = work / "profile.json"
        profile.write_text(
            json.dumps(
                {
                    "endpoint": server.url,
                    "service_cert": str(server.service_cert),
                    "cert": str(server.admin_pem),
                    "state": str(work / "trusted.json"),
                }
            )
        )
        paging, even, xss = [], [], []
        with Client.from_profile(load_profile(profile)) as client:
            for i in range(PAGING):
                tags = ["even"] if i % 2 == 0 else ["odd"]
                done = client.append(f"paging entry #{i}", collection="paging", tags=tags, wait=False)
                paging.append(str(done.txid))
                if i % 2 == 0:
                    even.append(str(done.txid))
                client.append(f"other #{i}", collection="other", wait=False)
                if i % 3 == 0:
                    client.append(f"third #{i}", collection="third", wait=False)
            for payload in XSS:
                xss.append(str(client.append(payload, collection=XSS_COLLECTION, tags=[XSS_TAG], wait=False).txid))
            client.wait(xss[-1])
        with console("--profile", str(profile), "--port", "0") as con:
            yield Setup(server, con, profile, paging, even, xss)
            assert con.process.poll() is None, "".join(con.output)
        assert server.stop() == 0, "".join(server.output[-40:])


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def context(browser: Browser, setup: Setup) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=setup.console.base)
    page = ctx.new_page()
    page.goto(setup.console.login_url)  # spends the one-time token
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    assert page.url == setup.console.base + "/"
    page.close()
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    p = context.new_page()
    p.dialogs = Dialogs(p)  # type: ignore[attr-defined]
    yield p
    assert not p.dialogs.seen, f"a page opened dialogs: {p.dialogs.seen}"  # type: ignore[attr-defined]
    p.close()


def cookies(context: BrowserContext) -> dict[str, str]:
    return {c["name"]: c["value"] for c in context.cookies()}


def txids(page: Page) -> list[str]:
    return page.locator("table.entries tbody tr td:first-child a").all_inner_texts()


# --------------------------------------------------------------------------- login


def test_every_page_needs_the_one_time_login_token(setup: Setup, context: BrowserContext) -> None:
    base = setup.console.base
    with httpx.Client(base_url=base, follow_redirects=False) as anonymous:
        for path in ("/", "/entries", "/entries/2.5", "/append", "/verify", "/users", "/governance"):
            r = anonymous.get(path)
            assert r.status_code == 401, path
            assert "one-time login token" in r.text
        assert anonymous.post("/append", data={"contents": "x"}).status_code == 401
        assert anonymous.get("/login", params={"token": "not-the-token"}).status_code == 401
        # the browser already spent the token: the same URL opens no second session
        again = anonymous.get(setup.console.login_url)
        assert again.status_code == 401
        assert "already used" in again.text
        assert not again.cookies
        assert anonymous.get("/static/console.css").status_code == 200  # assets are not pages
    token = setup.console.token
    assert sum(token in line for line in setup.console.output) == 1, "the token is printed once, in the URL"
    with httpx.Client(base_url=base, cookies=cookies(context)) as logged_in:
        assert logged_in.get("/entries").status_code == 200


# --------------------------------------------------------------------------- overview


def test_overview_shows_identity_signed_root_and_the_virtual_platform(setup: Setup, page: Page) -> None:
    page.goto(setup.console.base + "/")
    main = page.locator("main")
    expect(main).to_contain_text("console-test")
    service = x509.load_pem_x509_certificate(setup.server.service_cert.read_bytes())
    expect(main).to_contain_text(hashlib.sha256(service.public_bytes(serialization.Encoding.DER)).hexdigest())
    expect(main).to_contain_text("The ledger presents the pinned service certificate.")
    expect(page.locator("#sync-status")).to_contain_text("signed root")
    expect(main).to_contain_text("Virtual platform — no hardware attestation")
    expect(main).to_contain_text("Trusted")  # the node
    expect(main).to_contain_text("majority-of-active-members")
    # a second visit checks that the ledger still extends the root verified on the first
    with Client.from_profile(load_profile(setup.profile)) as client:
        client.append("grows the ledger", collection="growth")
    page.reload()
    expect(page.locator("#sync-status")).to_contain_text("still extends what was verified before")


# --------------------------------------------------------------------------- entries


def test_entries_newest_first_paged_and_each_receipt_verified(setup: Setup, page: Page) -> None:
    newest_first = list(reversed(setup.paging))
    page.goto(setup.console.base + "/entries?collection=paging")
    assert txids(page) == newest_first[:25]
    expect(page.locator("td .badge.ok")).to_have_count(25)  # every row's receipt verified, for what it shows
    page.get_by_role("link", name="Older »").click()
    assert txids(page) == newest_first[25:50]
    page.get_by_role("link", name="Older »").click()
    assert txids(page) == newest_first[50:]
    expect(page.get_by_role("link", name="Older »")).to_have_count(0)
    page.get_by_role("link", name="« Newest").click()
    assert txids(page) == newest_first[:25]


def test_entries_filtered_by_tag_and_transaction_range(setup: Setup, page: Page) -> None:
    page.goto(setup.console.base + "/entries?collection=paging")
    page.get_by_label("Tag").fill("even")
    page.get_by_role("button", name="Show").click()
    assert txids(page) == list(reversed(setup.even))[:25]
    first, last = setup.paging[10], setup.paging[19]
    page.goto(setup.console.base + f"/entries?collection=paging&from={first}&to={last}")
    assert txids(page) == list(reversed(setup.paging[10:20]))
    page.goto(setup.console.base + "/entries?collection=paging&from=nonsense")
    expect(page.locator("main")).to_contain_text("From must be a transaction id")


def test_entry_receipt_verified_step_by_step(setup: Setup, page: Page) -> None:
    txid = setup.paging[7]
    page.goto(setup.console.base + "/entries?collection=paging&to=" + setup.paging[9])
    page.get_by_role("link", name=txid, exact=True).click()
    expect(page.locator("#entry-contents")).to_have_text("paging entry #7")
    expect(page.locator("#verdict")).to_contain_text("Verified.")
    expect(page.locator("#verdict")).to_contain_text(f"proves transaction {txid}")
    steps = page.locator("li.step")
    keys = [steps.nth(i).get_attribute("data-step") for i in range(steps.count())]
    assert keys[:5] == ["format", "write_set_digest", "claims", "commit_evidence", "leaf"]
    assert keys[-3:] == ["node_cert", "signature", "endorsement"]
    assert any(k and k.startswith("path-") for k in keys)
    assert "root" in keys
    expect(page.locator("li.step.failed")).to_have_count(0)
    expect(page.locator('li.step[data-step="claims"] .badge')).to_have_text("ok")  # the contents are proven
    if (path := screenshot_path()) is not None:
        page.set_viewport_size({"width": 1280, "height": 1000})
        page.screenshot(path=str(path))


def _altered_answer(setup: Setup, txid: str, edit: Any) -> str:
    with Client.from_profile(load_profile(setup.profile)) as client:
        body = client.receipt(txid).to_json()
    changed = copy.deepcopy(body)
    edit(changed)
    return json.dumps(changed)


@pytest.mark.parametrize(
    ("name", "edit", "failed_step"),
    [
        (
            "write-set digest",
            lambda b: b["receipt"]["leafComponents"].update(writeSetDigest="00" * 32),
            "Node signature over the root",
        ),
        (
            "contents",
            lambda b: b["applicationClaims"][0]["ledgerEntry"].update(contents="forged"),
            "Leaf: claims digest",
        ),
        ("proof", lambda b: b["receipt"]["proof"][0].update({"x": "y"}), "Merkle path"),
        ("node id", lambda b: b["receipt"].update(nodeId="ab" * 32), "Node certificate and node id"),
    ],
)
def test_an_altered_receipt_fails_at_the_altered_step(
    setup: Setup, page: Page, name: str, edit: Any, failed_step: str
) -> None:
    page.goto(setup.console.base + "/verify")
    page.get_by_label("Receipt (JSON)").fill(_altered_answer(setup, setup.paging[3], edit))
    page.get_by_role("button", name="Verify").click()
    verdict = page.locator("#verdict")
    expect(verdict).to_contain_text("Not verified.")
    expect(verdict.locator(".failed-step")).to_have_text(failed_step)


def test_verify_page_accepts_a_good_receipt_and_refuses_another_service(
    setup: Setup, page: Page, tmp_path: Path
) -> None:
    good = _altered_answer(setup, setup.paging[3], lambda b: None)
    page.goto(setup.console.base + "/verify")
    page.get_by_label("Receipt (JSON)").fill(good)
    page.get_by_role("button", name="Verify").click()
    expect(page.locator("#verdict")).to_contain_text("Verified.")
    init_service(tmp_path / "other")
    page.get_by_label("Service certificate (PEM, optional").fill((tmp_path / "other" / "service_cert.pem").read_text())
    page.get_by_role("button", name="Verify").click()
    expect(page.locator("#verdict .failed-step")).to_have_text("Node certificate endorsed by the service certificate")


# --------------------------------------------------------------------------- append


def test_append_is_pending_then_committed_without_a_reload(setup: Setup, page: Page) -> None:
    page.goto(setup.console.base + "/append")
    page.evaluate("window.__sameDocument = true")
    page.evaluate(
        """() => { window.__states = [];
        new MutationObserver(() => { const s = document.querySelector('#append-status .badge');
          if (s) window.__states.push(s.textContent); })
        .observe(document.querySelector('#append-result'), {childList: true, subtree: true}); }"""
    )
    page.get_by_label("Contents").fill("appended from the console")
    page.get_by_label("Collection (optional)").fill("console")
    page.get_by_label("Tags (comma-separated, optional)").fill("ui,test")
    page.get_by_role("button", name="Append").click()
    expect(page.locator("#append-status .badge")).to_have_text("Committed")
    states = page.evaluate("window.__states")
    assert states[0] == "Pending", states
    assert states[-1] == "Committed", states
    assert page.evaluate("window.__sameDocument") is True  # no navigation happened
    txid = page.locator("#append-status a").inner_text()
    with Client.from_profile(load_profile(setup.profile)) as client:
        entry = client.get(txid)
    assert (entry.contents, entry.collection_id, entry.tags) == ("appended from the console", "console", ["ui", "test"])


def test_empty_append_is_refused_and_changes_nothing(setup: Setup, context: BrowserContext) -> None:
    with Client.from_profile(load_profile(setup.profile)) as client:
        before = client.latest(collection="console")
    with httpx.Client(base_url=setup.console.base, cookies=cookies(context)) as session:
        html = session.get("/append").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', html)
        assert csrf
        r = session.post("/append", data={"csrf": csrf.group(1), "contents": "", "collection": "console"})
        assert r.status_code == 400
        assert "The entry is empty" in r.text
    with Client.from_profile(load_profile(setup.profile)) as client:
        assert client.latest(collection="console") == before


# --------------------------------------------------------------------------- security


def test_attacker_controlled_entries_render_as_text(setup: Setup, page: Page) -> None:
    page.goto(setup.console.base + "/entries?collection=" + httpx.QueryParams({"c": XSS_COLLECTION})["c"])
    cells = page.locator("td.contents .text").all_inner_texts()
    assert sorted(cells) == sorted(XSS)
    expect(page.locator("main")).to_contain_text(XSS_TAG)
    expect(page.locator('img[src="x"], img[src="y"], svg, b')).to_have_count(0)
    for txid, payload in zip(setup.xss, XSS, strict=True):
        page.goto(f"{setup.console.base}/entries/{txid}")
        expect(page.locator("#entry-contents")).to_have_text(payload)
        expect(page.locator("main")).to_contain_text(XSS_COLLECTION)
        expect(page.locator('img[src="x"], img[src="y"], svg, main b')).to_have_count(0)
        expect(page.locator("#verdict")).to_contain_text("Verified.")
    # pasted into the verifier, the receipt's claims show the payload as text too
    page.goto(setup.console.base + "/verify")
    page.get_by_label("Receipt (JSON)").fill(_altered_answer(setup, setup.xss[1], lambda b: None))
    page.get_by_role("button", name="Verify").click()
    expect(page.locator("#verdict")).to_contain_text("Verified.")
    expect(page.locator('img[src="x"], svg')).to_have_count(0)


def test_pages_carry_a_strict_csp_and_no_inline_script(setup: Setup, context: BrowserContext) -> None:
    with httpx.Client(base_url=setup.console.base, cookies=cookies(context)) as session:
        for path in ("/", "/entries?collection=paging", f"/entries/{setup.xss[0]}", "/append", "/verify", "/users"):
            r = session.get(path)
            assert r.status_code == 200, path
            assert r.headers["Content-Security-Policy"] == CSP
            assert "'unsafe-inline'" not in CSP
            assert "'unsafe-eval'" not in CSP
            assert r.headers["X-Frame-Options"] == "DENY"
            assert r.headers["Referrer-Policy"] == "same-origin"
            assert r.headers["Cache-Control"] == "no-store"
            scripts = re.findall(r"<script([^>]*)>(.*?)</script>", r.text, re.DOTALL)
            assert scripts, path
            assert all('src="/static/' in attrs and not body.strip() for attrs, body in scripts), path
            assert not _event_handler_attributes(r.text), path
            assert "javascript:" not in r.text


def _event_handler_attributes(html: str) -> list[str]:
    """``on…`` attributes of the page's elements (an escaped payload inside a value is not one)."""
    found: list[str] = []

    class Finder(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found.extend(f"{tag} {name}" for name, _ in attrs if name.startswith("on"))

    Finder().feed(html)
    return found


def test_cross_site_and_tokenless_posts_are_refused(setup: Setup, context: BrowserContext) -> None:
    with Client.from_profile(load_profile(setup.profile)) as client:
        before = client.latest(collection="csrf")
    jar = cookies(context)
    with httpx.Client(base_url=setup.console.base, cookies=jar) as session:
        csrf = re.search(r'name="csrf" value="([^"]+)"', session.get("/append").text)
        assert csrf
        form = {"contents": "forged", "collection": "csrf"}
        assert session.post("/append", data=form).status_code == 403
        assert session.post("/append", data={**form, "csrf": "wrong"}).status_code == 403
        evil = {"Origin": "https://evil.example"}
        assert session.post("/append", data={**form, "csrf": csrf.group(1)}, headers=evil).status_code == 403
        cross = {"Sec-Fetch-Site": "cross-site"}
        assert session.post("/append", data={**form, "csrf": csrf.group(1)}, headers=cross).status_code == 403
        assert session.post("/users/remove", data={"user_id": "x"}).status_code == 403
    with httpx.Client(base_url=setup.console.base, cookies=jar, headers={"Host": "rebound.example"}) as rebound:
        assert rebound.get("/").status_code == 421  # DNS rebinding: another name for this address
    with Client.from_profile(load_profile(setup.profile)) as client:
        assert client.latest(collection="csrf") == before


def test_the_console_does_not_listen_on_the_network_without_tls(setup: Setup, tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "notarium", "console", "--profile", str(setup.profile), *args]
        return subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), timeout=60, check=False)

    everywhere = "0.0.0.0"  # noqa: S104  (what is refused without TLS)
    refused = run("--bind", everywhere, "--port", "0")
    assert refused.returncode == 2
    assert "without TLS" in refused.stderr
    half = run("--bind", everywhere, "--port", "0", "--tls-cert", "c.pem")
    assert half.returncode == 2
    assert "go together" in half.stderr
    cert, key = _tls_identity(tmp_path)
    tls_args = ("--tls-cert", str(cert), "--tls-key", str(key))
    with console("--profile", str(setup.profile), "--bind", everywhere, "--port", "0", *tls_args) as con:
        assert con.login_url.startswith(f"https://{everywhere}:")
        url = con.login_url.replace(everywhere, "127.0.0.1")  # only loopback is ever connected to
        with httpx.Client(verify=ssl.create_default_context(cafile=str(cert)), follow_redirects=False) as tls:
            r = tls.get(url)
            assert r.status_code == 303
            assert "__Host-notarium_console=" in r.headers["set-cookie"]
            assert "Secure" in r.headers["set-cookie"]
            assert "HttpOnly" in r.headers["set-cookie"]
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(url.replace("https://", "http://"), timeout=5)


def _tls_identity(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "console_cert.pem", directory / "console_key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


# --------------------------------------------------------------------------- users and governance


def test_users_added_given_roles_and_removed(setup: Setup, page: Page, tmp_path: Path) -> None:
    _, user_id = new_identity(tmp_path, "carol")
    page.goto(setup.console.base + "/users")
    expect(page.locator("main")).to_contain_text("Administrator")
    page.get_by_label("User id (certificate fingerprint").fill(user_id)
    page.get_by_role("button", name="Add user").click()
    row = page.locator("tr", has_text=user_id)
    expect(row.get_by_label("Reader")).to_be_checked()
    row.get_by_label("Contributor").check()
    row.get_by_label("Reader").uncheck()
    row.get_by_role("button", name="Save roles").click()
    with Client.from_profile(load_profile(setup.profile)) as client:
        roles = {u.user_id: u.roles for u in client.users()}
    assert roles[user_id] == ["Contributor"]
    page.locator("tr", has_text=user_id).get_by_role("button", name=f"Remove user {user_id}").click()
    expect(page.locator("tr", has_text=user_id)).to_have_count(0)
    with Client.from_profile(load_profile(setup.profile)) as client:
        assert user_id not in {u.user_id for u in client.users()}
    expect(page.locator("main")).to_contain_text("This ledger trusts no token issuer")


def test_governance_shows_members_and_proposals(setup: Setup, page: Page) -> None:
    page.goto(setup.console.base + "/governance")
    expect(page.locator("main")).to_contain_text("No proposals yet.")
    member = next((setup.server.directory).glob("member0_cert.pem"))
    der = x509.load_pem_x509_certificate(member.read_bytes()).public_bytes(serialization.Encoding.DER)
    expect(page.locator("main")).to_contain_text(hashlib.sha256(der).hexdigest())


# --------------------------------------------------------------------------- usable


def test_keyboard_copy_buttons_and_a_narrow_screen(setup: Setup, page: Page) -> None:
    page.goto(setup.console.base + "/")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent") == "Entries":
            break
    else:
        pytest.fail("the Entries link is not reachable with the keyboard")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/entries$"))
    page.get_by_label("Collection").fill("paging")
    page.get_by_label("Collection").press("Enter")
    page.wait_for_url(re.compile(r"collection=paging"))
    first = page.locator("table.entries tbody tr").first
    txid = first.locator("a").inner_text()
    first.get_by_role("button", name=f"Copy transaction id {txid}").click()
    assert page.evaluate("navigator.clipboard.readText()") == txid
    page.set_viewport_size({"width": 375, "height": 800})
    for path in ("/", "/entries?collection=paging", f"/entries/{setup.paging[0]}", "/verify", "/users"):
        page.goto(setup.console.base + path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, (path, width)
    TxId.parse(txid)
