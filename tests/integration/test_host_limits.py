"""Per-ledger settings and metrics of a ledger host, on a real ``notarium host`` process.

- Each ledger's largest entry (the ARM tag ``notarium.maxEntryBytes``, at most the host's
  ``--max-entry-bytes``): over it, the data plane's 400 ``EntrySizeCapacityExceeded`` and nothing
  written; another ledger's limit is untouched; an update applies at once; ``notarium ledgers update``
  sets and removes it.
- Each ledger's request rate (``notarium.requestsPerSecond``): beyond it 429 ``TooManyRequests`` with
  ``Retry-After``, nothing applied, while another ledger under load answers every request.
- Malformed settings are refused with 400 ``InvalidRequestContent`` and change nothing.
- ``GET /metrics`` (the host credential only): every ledger's requests, appends, commit latency and
  size, labelled ``ledger``, read with prometheus_client's own parser.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from integration.host_kit import API, GROUP, SUBSCRIPTION, HostKit, append, host_kit, wait_committed
from integration.server import clean_env

CEILING = 65536  # the host's --max-entry-bytes


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostKit]:
    with host_kit(tmp_path_factory.mktemp("hostlimits"), "--max-entry-bytes", str(CEILING)) as k:
        yield k


def _error(r: httpx.Response) -> str:
    return str(r.json()["error"]["code"])


def _samples(kit: HostKit) -> list[tuple[str, dict[str, str], float]]:
    r = kit.metrics()
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(r.text) for s in f.samples]


def _value(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float | None:
    found = [v for n, lab, v in samples if n == name and all(lab.get(k) == w for k, w in labels.items())]
    return sum(found) if found else None


def test_entry_size_is_per_ledger_and_changes_at_once(kit: HostKit) -> None:
    assert kit.create("tight", {"notarium.maxEntryBytes": "100", "team": "a"}).status_code == 201
    assert kit.create("roomy").status_code == 201
    tight, roomy = kit.ledger("tight"), kit.ledger("roomy")

    over = append(tight, "x" * 101, "big")
    assert over.status_code == 400
    assert over.json()["error"] == {
        "code": "EntrySizeCapacityExceeded",
        "message": "Entry contents of 101 bytes exceed the limit of 100 bytes.",
    }
    assert "Retry-After" not in over.headers
    assert tight.get("/app/transactions/current", params={"collectionId": "big"}).status_code == 404  # nothing written
    assert append(tight, "x" * 100, "big").status_code == 200
    assert append(roomy, "x" * 101, "big").status_code == 200  # the other ledger has the host's limit

    # an update applies at once; the ledger's other tags are kept by `ledgers update`
    assert kit.patch_tags("tight", {"notarium.maxEntryBytes": "1000", "team": "a"}).status_code == 200
    assert append(tight, "x" * 101, "big").status_code == 200
    assert _error(append(tight, "x" * 1001, "big")) == "EntrySizeCapacityExceeded"

    env = {**clean_env(), "NOTARIUM_HOST_DIR": str(kit.dir)}
    cli = [sys.executable, "-m", "notarium", "ledgers"]
    common = ["--subscription", SUBSCRIPTION, "-g", GROUP]
    run = subprocess.run(
        [*cli, "update", "tight", "--max-entry-bytes", "default", *common, "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["tags"] == {"team": "a"}
    assert append(tight, "x" * 5000, "big").status_code == 200  # the host's limit again
    assert _error(append(tight, "x" * (CEILING + 1), "big")) == "EntrySizeCapacityExceeded"

    shown = subprocess.run(
        [*cli, "update", "tight", "--requests-per-second", "500", *common],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert "settings:     notarium.requestsPerSecond=500" in shown.stdout


@pytest.mark.parametrize(
    "tags",
    [
        {"notarium.maxEntryBytes": "abc"},
        {"notarium.maxEntryBytes": "0"},
        {"notarium.maxEntryBytes": str(CEILING + 1)},
        {"notarium.maxEntryBytes": "-5"},
        {"notarium.requestsPerSecond": "-1"},
        {"notarium.requestsPerSecond": "0"},
        {"notarium.requestsPerSecond": "nan"},
        {"notarium.requestsPerSecond": "inf"},
        {"notarium.requestsPerSecond": "fast"},
        {"notarium.maxEntrybyte": "100"},  # a misspelt setting is never silently ignored
    ],
)
def test_bad_settings_are_refused_and_change_nothing(kit: HostKit, tags: dict[str, str]) -> None:
    made = kit.create("refused", tags)
    assert made.status_code == 400, made.text
    assert _error(made) == "InvalidRequestContent"
    assert kit.mgmt.get(kit.arm("refused"), params=API).status_code == 404  # not created, name free
    if kit.mgmt.get(kit.arm("steady"), params=API).status_code == 404:
        assert kit.create("steady", {"notarium.maxEntryBytes": "50"}).status_code == 201
    before = kit.mgmt.get(kit.arm("steady"), params=API).json()
    changed = kit.patch_tags("steady", tags)
    assert changed.status_code == 400
    assert _error(changed) == "InvalidRequestContent"
    after = kit.mgmt.get(kit.arm("steady"), params=API).json()
    assert after["tags"] == {"notarium.maxEntryBytes": "50"}
    assert after["systemData"]["lastModifiedAt"] == before["systemData"]["lastModifiedAt"]
    assert _error(append(kit.ledger("steady"), "y" * 51)) == "EntrySizeCapacityExceeded"


def test_request_rate_is_per_ledger(kit: HostKit) -> None:
    # one request every 100 s: the first is admitted, the next ones are refused, whatever the timing
    assert kit.create("slow", {"notarium.requestsPerSecond": "0.01"}).status_code == 201
    assert kit.create("busy").status_code == 201
    slow = kit.ledger("slow")
    busy_answers: list[int] = []

    loaded = kit.ledger("busy", fresh=True)  # a client of its own, for the thread

    def load() -> None:  # the other ledger, under load at the same time
        with loaded:
            for n in range(30):
                busy_answers.append(append(loaded, f"busy {n}").status_code)

    worker = threading.Thread(target=load)
    worker.start()
    assert slow.get("/app/transactions", params={"collectionId": "c"}).status_code == 200
    refused = [slow.get("/app/transactions", params={"collectionId": "c"}) for _ in range(10)]
    writes = [append(slow, f"refused {n}") for n in range(5)]
    worker.join()
    for r in refused + writes:
        assert r.status_code == 429, r.text
        assert _error(r) == "TooManyRequests"
        assert 1 <= int(r.headers["Retry-After"]) <= 100
    assert busy_answers == [200] * 30

    samples = _samples(kit)
    assert _value(samples, "notarium_ledger_throttled_requests_total", ledger="slow") == 15
    assert _value(samples, "notarium_ledger_throttled_requests_total", ledger="busy") is None
    assert _value(samples, "notarium_ledger_appends_total", ledger="busy") == 30

    # a new rate applies at once (a full bucket); nothing of the refused writes was applied
    assert kit.patch_tags("slow", {"notarium.requestsPerSecond": "1000"}).status_code == 200
    listed = slow.get("/app/transactions", params={"collectionId": "c"})
    assert listed.status_code == 200
    assert listed.json()["entries"] == []
    assert slow.get("/app/transactions/current", params={"collectionId": "c"}).status_code == 404


def test_metrics_are_labelled_by_ledger_and_need_the_host_credential(kit: HostKit) -> None:
    assert kit.create("m-one").status_code == 201
    assert kit.create("m-two").status_code == 201
    counts = {"m-one": 4, "m-two": 7}
    last: dict[str, str] = {}
    for name, count in counts.items():
        for n in range(count):
            r = append(kit.ledger(name), f"{name} entry {n}")
            assert r.status_code == 200
            last[name] = r.headers["x-ms-ccf-transaction-id"]
        assert _error(append(kit.ledger(name), "z" * (CEILING + 1))) == "EntrySizeCapacityExceeded"
        wait_committed(kit.ledger(name), last[name])

    samples = _samples(kit)
    for name, count in counts.items():
        assert _value(samples, "notarium_ledger_appends_total", ledger=name) == count
        # every append's commit was timed, from its arrival to the engine's commit notice
        assert _value(samples, "notarium_ledger_commit_seconds_count", ledger=name) == count
        assert (_value(samples, "notarium_ledger_commit_seconds_sum", ledger=name) or 0) > 0
        assert (_value(samples, "notarium_ledger_bytes", ledger=name) or 0) > 0
        assert _value(samples, "notarium_committed_seqno", ledger=name) >= int(last[name].split(".")[1])
        assert _value(samples, "notarium_ledger_up", ledger=name) == 1
        posts = {"ledger": name, "method": "POST", "route": "/app/transactions"}
        assert _value(samples, "notarium_http_requests_total", **posts, status="200") == count
        assert _value(samples, "notarium_http_requests_total", **posts, status="400") == 1
    assert all("ledger" in labels for n, labels, _ in samples if n.startswith("notarium_http_requests"))

    # the host credential only: no credential, or a ledger user's certificate, is refused
    with httpx.Client(verify=kit.pinned(), timeout=10) as pinned:
        anonymous = pinned.get(f"{kit.url}/metrics")
        assert anonymous.status_code == 401
        assert _error(anonymous) == "AuthenticationFailed"
    user = kit.ledger("m-one").get(f"{kit.url}/metrics")
    assert user.status_code == 401

    # a deleted ledger's figures go
    gone = kit.mgmt.delete(kit.arm("m-two"), params=API)
    assert gone.status_code == 202
    for _ in range(100):
        if kit.mgmt.get(gone.headers["Azure-AsyncOperation"]).json()["status"] == "Succeeded":
            break
        time.sleep(0.1)
    assert all(labels.get("ledger") != "m-two" for _, labels, _ in _samples(kit))
