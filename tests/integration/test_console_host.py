"""`notarium console --host-dir` in a real browser against a real `notarium host`: the host's ledgers
like the portal shows them; a ledger created (its name checked as it is typed), opened (the
console's own identity is its Administrator: append and verify work), and deleted after typing its
name to confirm."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from integration.console_kit import Console, Dialogs, chromium, console
from integration.server import Server, running


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Console, Path]]:
    work = tmp_path_factory.mktemp("console-host")
    with running(work / "host", command="host") as server:
        home = work / "console-home"
        with console("--host-dir", str(work / "host"), "--port", "0", env={"NOTARIUM_CONSOLE_HOME": str(home)}) as con:
            yield server, con, home
            assert con.process.poll() is None, "".join(con.output)
        assert server.stop() == 0, "".join(server.output[-40:])


@pytest.fixture(scope="module")
def page(host: tuple[Server, Console, Path]) -> Iterator[Page]:
    _, con, _ = host
    with chromium() as browser:
        p = browser.new_page()
        dialogs = Dialogs(p)
        p.goto(con.login_url)
        yield p
        assert not dialogs.seen


def test_host_ledgers_created_opened_and_deleted(host: tuple[Server, Console, Path], page: Page) -> None:
    server, con, home = host
    expect(page.get_by_role("heading", name="Ledgers")).to_be_visible()
    expect(page.locator("main")).to_contain_text("This host serves no ledger yet.")
    token = (server.directory / "host_token").read_text().strip()
    assert token not in page.content()  # the host credential stays in the console's process
    assert (home / "console_privk.pem").stat().st_mode & 0o077 == 0

    page.get_by_role("link", name="Create a ledger").click()
    name = page.get_by_label("Name")
    name.press_sequentially("9bad")
    expect(page.locator("#l-check")).to_contain_text("A ledger name is 3 to 35")
    name.fill("")
    name.press_sequentially("audit-trail")
    expect(page.locator("#l-check [data-available]")).to_have_attribute("data-available", "yes")
    page.get_by_label("Public").check()
    page.get_by_role("button", name="Create").click()

    row = page.locator("tr[data-ledger='audit-trail']")
    expect(row).to_contain_text("Succeeded")
    expect(row).to_contain_text("Public")
    expect(row).not_to_contain_text("not a user")  # the console's identity is its Administrator

    # the name is now taken: the check says so as it is typed
    page.goto(con.base + "/ledgers/new")
    page.get_by_label("Name").press_sequentially("audit-trail")
    expect(page.locator("#l-check [data-available]")).to_have_attribute("data-available", "no")

    page.goto(con.base + "/")
    page.get_by_role("link", name="audit-trail", exact=True).click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    expect(page.locator("main")).to_contain_text("audit-trail")
    expect(page.locator("#sync-status")).to_contain_text("signed root")
    page.get_by_role("link", name="Append").click()
    page.get_by_label("Contents").fill("hosted entry")
    page.get_by_role("button", name="Append").click()
    expect(page.locator("#append-status .badge")).to_have_text("Committed")
    page.locator("#append-status a").click()
    expect(page.locator("#entry-contents")).to_have_text("hosted entry")
    expect(page.locator("#verdict")).to_contain_text("Verified.")

    page.goto(con.base + "/")
    page.get_by_role("link", name="Delete ledger audit-trail").click()
    page.get_by_label("Type the ledger's name to confirm").fill("audit")
    page.get_by_role("button", name="Delete audit-trail").click()
    expect(page.locator("main")).to_contain_text("Type the ledger's name (audit-trail) to confirm")
    page.go_back()
    page.get_by_label("Type the ledger's name to confirm").fill("audit-trail")
    page.get_by_role("button", name="Delete audit-trail").click()
    expect(page.locator("main")).to_contain_text("This host serves no ledger yet.")
    page.goto(con.base + "/ledgers/audit-trail/")
    expect(page.locator("h1")).to_have_text("ResourceNotFound")
