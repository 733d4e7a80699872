"""``notarium anchor`` and ``notarium verify-anchors``: this ledger's signed roots, anchored in a
second ledger, and the check that this ledger still extends every one (docs/design/anchoring.md).

The watched ledger comes from the usual connection options (``--profile``, ``$NOTARIUM_PROFILE``,
``--endpoint``…); the anchoring ledger from a profile file of its own (``--to`` / ``--anchors``),
read as it is: the ``NOTARIUM_*`` variables are the watched ledger's and do not apply to it.

Exit codes: 0 success; 1 the ledger refused or something could not be checked (the message says
what); 2 usage; 3 verification failed (a fork or rollback of the watched ledger, or a receipt of the
anchoring ledger that does not verify: the evidence is printed); 4 a ledger is unreachable.
"""

from __future__ import annotations

import argparse
import datetime
import json
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from notarium.cli.ledger import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_VERIFY, _fail, connection_options
from notarium.client.anchor import Anchorer, LedgerUnavailableError
from notarium.client.anchors import Report, verify_anchors
from notarium.client.client import Client
from notarium.client.errors import ClientError, ForkError, UnreachableError
from notarium.client.profile import Profile, load_profile
from notarium.errors import NotariumError, VerificationError

MAX_BACKOFF = 30.0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0.1 <= value <= 86400:
        raise argparse.ArgumentTypeError("--every takes 0.1 to 86400 seconds")
    return value


def register(sub: Any) -> None:
    text = "anchor this ledger's newest signed root in another ledger, every --every seconds"
    p = sub.add_parser("anchor", help=text, description=text + ". Runs until stopped (or --once).")
    connection_options(p)
    p.add_argument("--to", type=Path, required=True, metavar="PROFILE", help="the anchoring ledger's profile")
    p.add_argument("--every", type=_seconds, default=60.0, metavar="SECONDS", help="how often (default 60)")
    p.add_argument("--once", action="store_true", help="anchor once and exit (for cron)")
    p.set_defaults(handler=_anchor)

    text = "check that this ledger extends every root of it anchored in another ledger"
    p = sub.add_parser("verify-anchors", help=text, description=text + "; exit 3 with the evidence if not.")
    connection_options(p)
    p.add_argument("--anchors", type=Path, required=True, metavar="PROFILE", help="the anchoring ledger's profile")
    p.add_argument("--evidence", type=Path, metavar="FILE", help="also write the full report (JSON) to FILE")
    p.set_defaults(handler=_verify)


def _profiles(args: argparse.Namespace, other: Path) -> tuple[Profile, Profile]:
    watched = load_profile(
        args.profile, endpoint=args.endpoint, service_cert=args.service_cert, cert=args.cert, key=args.key
    )
    return watched, load_profile(other, env={})


def _guarded(args: argparse.Namespace, run: Any) -> int:
    """Run a command, turning the errors it can meet into exit codes (evidence printed for forks)."""
    try:
        return int(run())
    except ForkError as exc:
        return _fail(args, exc, EXIT_VERIFY, evidence=exc.evidence())
    except VerificationError as exc:
        return _fail(args, exc, EXIT_VERIFY)
    except LedgerUnavailableError as exc:
        return _fail(args, exc, EXIT_UNREACHABLE if isinstance(exc.cause, UnreachableError) else EXIT_FAILED)
    except UnreachableError as exc:
        return _fail(args, exc, EXIT_UNREACHABLE)
    except (ClientError, NotariumError) as exc:
        return _fail(args, exc, EXIT_FAILED)
    except OSError as exc:
        return _fail(args, ClientError(f"{exc.filename or ''}: {exc.strerror or exc}"), EXIT_FAILED)


# --- anchor --------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _anchor(args: argparse.Namespace) -> int:
    return _guarded(args, lambda: _anchor_loop(args))


def _anchor_loop(args: argparse.Namespace) -> int:
    watched_profile, anchoring_profile = _profiles(args, args.to)
    stop = threading.Event()
    if not args.once and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with Client.from_profile(watched_profile) as watched, Client.from_profile(anchoring_profile) as anchoring:
        anchorer = Anchorer(watched, anchoring)
        delay = 1.0
        while not stop.is_set():
            try:
                done = anchorer.once()
            except LedgerUnavailableError as exc:
                if args.once:
                    raise
                print(
                    f"{_now()} notarium anchor: {exc}; retrying in {delay:g} s (nothing is skipped: the next "
                    "anchor holds the newest root, which extends every root not anchored)",
                    file=sys.stderr,
                    flush=True,
                )
                stop.wait(delay)
                delay = min(delay * 2, max(MAX_BACKOFF, args.every))
                continue
            delay = 1.0
            _report_anchor(args, done, anchorer, anchoring_profile)
            if args.once:
                return EXIT_OK
            stop.wait(args.every)
    return EXIT_OK


def _report_anchor(args: argparse.Namespace, done: Any, anchorer: Anchorer, anchoring: Profile) -> None:
    root = done.root if done is not None else anchorer.last
    if done is None and not args.once:
        return  # the loop reports anchors and outages, not idle rounds
    if args.json:
        body: dict[str, Any] = {"ok": True, "anchored": done is not None, "collection": anchorer.collection}
        if root is not None:
            body["signedRoot"] = root.to_json()
        if done is not None:
            body["anchorTransactionId"] = str(done.txid)
        print(json.dumps(body), flush=True)
    elif done is not None:
        print(
            f"{_now()} anchored {done.root.txid} (tree size {done.root.tree_size}) as {done.txid} in "
            f"{anchoring.endpoint} ({anchorer.collection})",
            flush=True,
        )
    else:
        print(f"{_now()} nothing new: {root.txid if root else '-'} is anchored already", flush=True)


# --- verify-anchors ------------------------------------------------------------------------------


def _verify(args: argparse.Namespace) -> int:
    return _guarded(args, lambda: _verify_run(args))


def _verify_run(args: argparse.Namespace) -> int:
    watched_profile, anchoring_profile = _profiles(args, args.anchors)
    fresh = replace(watched_profile, state=None)  # no prior state: what anyone can check
    with Client.from_profile(fresh) as watched, Client.from_profile(anchoring_profile) as anchoring:
        report = verify_anchors(watched, anchoring)
    body = {
        "watched": watched_profile.endpoint,
        "anchoring": anchoring_profile.endpoint,
        **report.to_json(),
    }
    if report.failed:
        code, message = EXIT_VERIFY, _failure_message(report)
    elif not report.held:
        code, message = (
            EXIT_FAILED,
            (
                f"no anchor of this ledger in {anchoring_profile.endpoint} ({report.collection}): nothing was checked"
                + (f"; {len(report.rejected)} entries there are not anchors of this ledger" if report.rejected else "")
            ),
        )
    else:
        code, message = EXIT_OK, ""
    if args.evidence is not None:
        args.evidence.write_text(json.dumps({"ok": code == EXIT_OK, "exitCode": code, **body}, indent=2) + "\n")
    if args.json:
        out = {"ok": code == EXIT_OK, **({"error": message, "exitCode": code} if code else {}), **body}
        print(json.dumps(out))
    elif code == EXIT_OK:
        _print_success(report, anchoring_profile.endpoint)
    else:
        _print_failure(report, message)
    return code


def _failure_message(report: Report) -> str:
    kinds = sorted({f.check for f in report.failed})
    return (
        f"{len(report.failed)} of {len(report.failed) + len(report.held)} anchors do not hold ({', '.join(kinds)}): "
        "the watched ledger was rolled back or forked since they were anchored, or the anchoring ledger's receipts "
        "do not verify"
    )


def _print_success(report: Report, where: str) -> None:
    first, last = report.held[0].root, report.held[-1].root
    newest = report.newest
    print(
        f"{len(report.held)} anchors in {where} hold: this ledger"
        + (f" (now {newest.txid}, tree size {newest.tree_size})" if newest else "")
        + f" extends every anchored root, from {first.txid if first else '-'} to {last.txid if last else '-'}"
    )
    for f in report.rejected:
        print(f"  ignored {f.entry}: not an anchor of this ledger ({f.message})")
    for kid in report.other_identities:
        print(f"  not checked: {kid} holds anchors of another service key (see docs/design/anchoring.md)")


def _print_failure(report: Report, message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    for f in report.failed:
        ev = f.evidence or {}
        print(f"\n  anchor {f.entry} in the anchoring ledger [{f.check}]: {f.message}", file=sys.stderr)
        if f.root is not None:
            print(
                f"    anchored root: {f.root.txid}, tree size {f.root.tree_size}, root {f.root.root.hex()}\n"
                f"    its signature (COSE_Sign1, base64): {f.root.to_json()['signature']}",
                file=sys.stderr,
            )
        if "receipt" in ev.get("anchor", {}):
            print("    the anchor's receipt in the anchoring ledger verifies (in --json / --evidence)", file=sys.stderr)
        if ev.get("presented"):
            p = ev["presented"]
            print(f"    the ledger presents instead: {p['transactionId']}, root {p['root']}", file=sys.stderr)
        if ev.get("proof") is not None:
            print(f"    the failed consistency proof: {ev['proof']}", file=sys.stderr)
    for f in report.rejected:
        print(f"  ignored {f.entry}: not an anchor of this ledger ({f.message})", file=sys.stderr)
    print(
        "\n  keep this evidence (--json or --evidence FILE prints all of it) and see docs/operations/anchoring.md",
        file=sys.stderr,
    )
