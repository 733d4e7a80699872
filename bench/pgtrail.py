"""The database trail (``notarium pg``, docs/design/pg-trail.md) under pgbench, on this machine.

PostgreSQL (wal_level = logical, fsync and synchronous_commit on, shared_buffers 128MB), the ledger
(``notarium serve``, default settings), the capture agent (``notarium pg capture``) and pgbench all
run on this (2-core, shared) machine. For each scale (1, then 10; ``--quick``: 1 only):

1. ``pgbench -i -s SCALE``; ``ALTER TABLE pgbench_history REPLICA IDENTITY FULL``; a warm-up run.
2. PAIRS pairs of rounds (scale 1: one pair of 10 s; scale 10: five pairs of 20 s; ``--quick``:
   one pair of 5 s), each pair a round **without** capture and a round **with** it, in the order
   without-with, with-without, ... (the last pair without-with), both
   ``pgbench -n -c 4 -j 2 -T SECONDS`` on the same database:
   - without: no agent, and no replication slot or publication in the cluster at all (dropped
     after the previous round with capture), so no WAL is retained and nothing decodes;
   - with: ``pg init --all-tables`` into a fresh collection (``pg:<db>-rN``: a new slot,
     publication and trail), ``pg capture --stats FILE`` takes its baseline (timed: the whole
     database into the ledger), then pgbench runs. Capture throughput = transactions in the
     entries written (``at`` of the stats lines) inside pgbench's window / the window; the lag
     (commit in PostgreSQL → entry Committed in the ledger) of every transaction of the round;
     the catch-up = from pgbench's exit to the entry holding its last transaction.
   Afterwards the agent is stopped (SIGTERM) and the slot and publication dropped — except after
   the last round, where
   Each pair also has a third round, **decoding only**: the same publication and a slot consumed by
   PostgreSQL's own ``pg_recvlogical`` (a C client writing to /dev/null, pgoutput protocol 1): what
   PostgreSQL's logical decoding alone costs pgbench, the floor under any capture agent.
3. ``pg verify --json`` compares the database (pgbench_accounts: 100k rows per scale unit) with the
   last round's trail (its baseline plus the run's history), the agent still running; then the
   agent is stopped, and
4. ``pg restore --json`` rebuilds the tables in an empty database (checked: the same rows).
Wall times are measured around the commands; peak resident memory (ru_maxrss) from ``wait4`` of
each command's process (restore's includes its pg_dump and psql children). CPU seconds of each
party (agent, server, PostgreSQL, pgbench) over every round, from /proc, show where the time goes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.http import OUT, Service, _env, init_service_cli, start_server, stop_server, wait_quiet
from bench.loadgen import server_processes

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from pg import PgCluster  # the test fixture's PostgreSQL server, reused as it is

# pgbench's load: two threads, one a core; four clients so that while some wait for their commit's
# WAL flush the others use the CPU (group commit); more clients only add contention on the
# branches' rows (10 at scale 10) and context switches on two cores.
CLIENTS, THREADS = 4, 2
SETTINGS: dict[str, str | int] = {
    "wal_level": "logical",
    "max_replication_slots": 20,
    "max_wal_senders": 20,
    "max_connections": 60,
    "shared_buffers": "128MB",
}
PGBENCH = shutil.which("pgbench") or "pgbench"
NOTARIUM = (sys.executable, "-m", "notarium")
TICK = os.sysconf("SC_CLK_TCK")
TARGETS = {
    "capture_over_pgbench": 0.9,
    "lag_p99_ms": 1000.0,
    "pgbench_with_over_without": 0.8,
    "verify_s": 60.0,
    "restore_s": 120.0,
}


@dataclass
class Run:
    """A finished command: exit code, wall time, peak RSS (MiB), output."""

    code: int
    seconds: float
    rss_mb: float
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout.strip().splitlines()[-1])


@dataclass
class Agent:
    """A running ``pg capture``."""

    process: subprocess.Popen[bytes]
    stats: Path
    log: Path
    result: Run | None = None

    def lines(self) -> list[dict[str, Any]]:
        try:
            text = self.stats.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.endswith("}")]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _reap(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, float]:
    """Wait for ``proc`` with ``wait4``: its exit code and peak RSS (MiB, its waited children included)."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                return proc.returncode, usage.ru_maxrss / 1024
            if time.monotonic() > deadline:
                raise RuntimeError(f"{proc.args!r} did not finish in {timeout:.0f} s")
            time.sleep(0.02)
    except BaseException:  # timed out, or the bench is interrupted: leave no process behind
        if proc.returncode is None:
            proc.kill()
            _, status, _ = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        raise


class Bench:
    """One PostgreSQL cluster and one ledger server, shared by both scales."""

    def __init__(self, scratch: Path, pg: PgCluster, server: Service) -> None:
        self.scratch = scratch
        self.pg = pg
        self.server = server
        self.env = _env()
        self.env["NOTARIUM_PROFILE"] = str(server.directory / "user0_profile.json")
        self.env["NOTARIUM_ENDPOINT"] = server.url
        self.agents: list[Agent] = []
        self._n = 0

    # -- commands --------------------------------------------------------------------------------

    def notarium(self, *args: str, timeout: float = 600) -> Run:
        self._n += 1
        out, err = self.scratch / f"cmd{self._n}.out", self.scratch / f"cmd{self._n}.err"
        start = time.perf_counter()
        with out.open("wb") as o, err.open("wb") as e:
            proc = subprocess.Popen([*NOTARIUM, *args], stdout=o, stderr=e, env=self.env)
        code, rss = _reap(proc, timeout)
        return Run(code, time.perf_counter() - start, rss, out.read_text(), err.read_text())

    def pg_cmd(self, *args: str, timeout: float = 600, check: bool = True) -> Run:
        run = self.notarium("pg", *args, timeout=timeout)
        if check and run.code != 0:
            raise RuntimeError(f"notarium pg {' '.join(args)} exited {run.code}:\n{run.stdout}\n{run.stderr[-3000:]}")
        return run

    def start_agent(self, dsn: str, collection: str, name: str) -> Agent:
        stats, log = self.scratch / f"{name}.stats", self.scratch / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*NOTARIUM, "pg", "capture", "--db", dsn, "--collection", collection, "--stats", str(stats)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        agent = Agent(proc, stats, log)
        self.agents.append(agent)
        return agent

    def stop_agent(self, agent: Agent) -> Run:
        start = time.perf_counter()
        if agent.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                agent.process.send_signal(signal.SIGTERM)
            code, rss = _reap(agent.process, 60)
            agent.result = Run(code, time.perf_counter() - start, rss, "", agent.log_text())
        assert agent.result is not None
        return agent.result

    def wait_log(self, agent: Agent, text: str, timeout: float) -> float:
        """Wait until the agent's output says ``text``; the wall time (time.time()) it was seen."""
        deadline = time.monotonic() + timeout
        while text not in agent.log_text():
            if agent.process.poll() is not None:
                raise RuntimeError(
                    f"the capture agent exited ({agent.process.returncode}):\n{agent.log_text()[-3000:]}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the capture agent did not say {text!r} in {timeout:.0f} s:\n{agent.log_text()[-3000:]}"
                )
            time.sleep(0.05)
        return time.time()

    def pgbench(self, dsn: str, seconds: float) -> dict[str, Any]:
        """One pgbench run; its committed transactions, its tps, its window (time.time())."""
        cmd = [PGBENCH, "-n", "-c", str(CLIENTS), "-j", str(THREADS), "-T", str(int(seconds)), dsn]
        t0 = time.time()
        done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=seconds + 120, check=False)
        t1 = time.time()
        if done.returncode != 0:
            raise RuntimeError(f"pgbench failed ({done.returncode}):\n{done.stdout}\n{done.stderr[-3000:]}")
        processed = re.search(r"number of transactions actually processed: (\d+)", done.stdout)
        tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", done.stdout)
        if processed is None or tps is None:
            raise RuntimeError(f"cannot read pgbench's output:\n{done.stdout}")
        return {"transactions": int(processed.group(1)), "tps": float(tps.group(1)), "start": t0, "end": t1}

    # -- CPU use ---------------------------------------------------------------------------------

    def parties(self, agent: Agent | None) -> dict[str, list[int]]:
        postmaster = self.pg._server.pid if self.pg._server else 0
        return {
            "agent": [agent.process.pid] if agent else [],
            "server": server_processes(self.server.pid),
            "postgresql": [postmaster, *_children(postmaster)],
        }


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    return out


def _cpu(pids: list[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[pid] = (int(fields[11]) + int(fields[12])) / TICK
    return out


def _machine_busy() -> float:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / TICK


def _pgbench_round(b: Bench, dsn: str, seconds: float, agent: Agent | None) -> dict[str, Any]:
    """One measured pgbench run, after waiting (at most 10 s) for the rest of the machine to calm
    down; the CPU of each party is sampled every 0.25 s (PostgreSQL's backends come and go)."""
    waited, busy_before = wait_quiet(10.0)
    samples: dict[str, dict[int, tuple[float, float]]] = {"agent": {}, "server": {}, "postgresql": {}, "pgbench": {}}
    done = threading.Event()

    def sample() -> None:
        while True:
            parties = b.parties(agent)
            parties["pgbench"] = [p for p in _children(os.getpid()) if _comm(p) == "pgbench"]
            for name, pids in parties.items():
                for pid, used in _cpu(pids).items():
                    first = samples[name].get(pid, (used, used))[0]
                    samples[name][pid] = (first, used)
            if done.wait(0.25):
                return

    sampler = threading.Thread(target=sample)
    sampler.start()
    machine0 = _machine_busy()
    try:
        result = b.pgbench(dsn, seconds)
    finally:
        machine1 = _machine_busy()
        done.set()
        sampler.join()
    window = result["end"] - result["start"]
    used = {name: sum(last - first for first, last in pids.values()) for name, pids in samples.items()}
    result["cpu_cores"] = {name: round(v / window, 2) for name, v in used.items()}
    if result["transactions"]:
        result["cpu_us_per_tx"] = {name: round(v / result["transactions"] * 1e6) for name, v in used.items()}
    result["machine_busy_cores"] = round((machine1 - machine0) / window, 2)
    result["quiet_wait_s"], result["busy_cores_before"] = waited, busy_before
    return result


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def _drop_trail_objects(b: Bench, db: str) -> None:
    """No slot and no publication left in the cluster: the conditions of a round without capture."""
    slots = b.pg.psql("SELECT slot_name FROM pg_replication_slots")
    for (name,) in slots:
        b.pg.psql("SELECT pg_drop_replication_slot(%s)", [name])
    b.pg.psql(f'DROP PUBLICATION IF EXISTS "{_slot(db)}"', dbname=db)


def decoding_round(b: Bench, db: str, seconds: float) -> dict[str, Any]:
    """pgbench while ``pg_recvlogical`` consumes a pgoutput slot of the same publication: the cost
    of PostgreSQL's logical decoding alone."""
    dsn, slot = b.pg.dsn(db), _slot(db)
    b.pg.psql(f'CREATE PUBLICATION "{slot}" FOR ALL TABLES', dbname=db)
    recv = str(Path(b.pg.bin) / "pg_recvlogical")
    subprocess.run([recv, "-d", dsn, "--slot", slot, "--create-slot", "-P", "pgoutput"], check=True, env=_env())
    proc = subprocess.Popen(
        [
            recv,
            "-d",
            dsn,
            "--slot",
            slot,
            "--start",
            "-f",
            "/dev/null",
            "-o",
            "proto_version=1",
            "-o",
            f"publication_names={slot}",
        ],
        env=_env(),
    )
    try:
        return _pgbench_round(b, dsn, seconds, None)
    finally:
        proc.terminate()
        proc.wait(30)
        _drop_trail_objects(b, db)


def _slot(db: str) -> str:
    return f"notarium_{db}"


def capture_round(b: Bench, db: str, seconds: float, tag: str) -> tuple[dict[str, Any], Agent, str]:
    """pg init into a fresh collection, capture's baseline, then pgbench with capture on."""
    dsn, collection = b.pg.dsn(db), f"pg:{db}-{tag}"
    b.pg_cmd("init", "--db", dsn, "--collection", collection, "--all-tables", "--json")
    agent = b.start_agent(dsn, collection, f"{db}-{tag}")
    t = time.perf_counter()
    b.wait_log(agent, "baseline done", 600)
    baseline_s = time.perf_counter() - t
    b.wait_log(agent, "capturing ", 60)
    run = _pgbench_round(b, dsn, seconds, agent)
    # catch-up: until the entry holding pgbench's last transaction is Committed
    deadline = time.monotonic() + 120
    while True:
        lines = agent.lines()
        total = sum(line["n"] for line in lines)
        if total >= run["transactions"] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    caught_at = None
    cum = 0
    for line in lines:
        cum += line["n"]
        if cum >= run["transactions"]:
            caught_at = line["at"]
            break
    window = run["end"] - run["start"]
    in_window = sum(line["n"] for line in lines if run["start"] <= line["at"] <= run["end"])
    lags = [lag for line in lines for lag in line["lagMs"]]
    sizes = [line["n"] for line in lines]
    run.update(
        {
            "baseline_capture_s": round(baseline_s, 1),
            "captured_total": total,
            "captured_in_window": in_window,
            "capture_tps": round(in_window / window, 1),
            "capture_over_pgbench": round(in_window / run["transactions"], 3) if run["transactions"] else None,
            "caught_up_after_s": None if caught_at is None else round(max(0.0, caught_at - run["end"]), 2),
            "lag_ms": {
                "p50": _pct(lags, 0.5),
                "p99": _pct(lags, 0.99),
                "max": max(lags, default=0.0),
            },
            "entries": len(lines),
            "_lags": lags,
            "transactions_per_entry_median": statistics.median(sizes) if sizes else 0,
        }
    )
    if caught_at is None:
        run["not_caught_up"] = f"{total} of {run['transactions']} captured 120 s after pgbench ended"
    return run, agent, collection


PGBENCH_TABLES = ("pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history")


def _digest(b: Bench, db: str, table: str) -> list[tuple[Any, ...]]:
    """The row count and an md5 of a pgbench table's rows in a fixed order."""
    query = f"SELECT count(*), md5(string_agg(t::text, ',' ORDER BY t::text)) FROM {table} t"  # noqa: S608 (fixed names)
    rows: list[tuple[Any, ...]] = b.pg.psql(query, dbname=db)
    return rows


def _json_or_error(run: Run) -> dict[str, Any]:
    """The command's JSON answer; a failure (e.g. a broken working tree) is recorded, not raised."""
    try:
        body: dict[str, Any] = run.json()
    except (ValueError, IndexError):
        body = {"ok": False, "error": run.stderr.strip()[-2000:]}
    if run.code != 0:
        body.setdefault("error", run.stderr.strip()[-2000:])
    return body


def _brief_run(r: dict[str, Any]) -> dict[str, Any]:
    keep = {k: v for k, v in r.items() if k not in ("start", "end")}
    keep["tps"] = round(r["tps"], 1)
    return keep


def scale_phase(b: Bench, scale: int, pairs: int, seconds: float) -> dict[str, Any]:
    db = f"bench_s{scale}"
    b.pg.psql(f'CREATE DATABASE "{db}"')
    dsn = b.pg.dsn(db)
    t = time.perf_counter()
    subprocess.run([PGBENCH, "-i", "-s", str(scale), "-q", dsn], check=True, capture_output=True, env=_env())
    b.pg.psql("ALTER TABLE pgbench_history REPLICA IDENTITY FULL", dbname=db)
    init_s = time.perf_counter() - t
    b.pgbench(dsn, min(seconds, 5))  # warm-up, not counted
    without: list[dict[str, Any]] = []
    with_capture: list[dict[str, Any]] = []
    decoding: list[dict[str, Any]] = []
    agent: Agent | None = None
    collection = ""
    for i in range(pairs):
        # ABBA: odd pairs start without capture, even ones with it, so a drift of the machine's
        # speed within a pair does not always favour the same side; the last pair ends with capture
        # on (verify needs the agent)
        order = ("without", "with") if i % 2 == 0 or i == pairs - 1 else ("with", "without")
        for kind in ("decoding", *order):
            if kind == "decoding":
                if agent is not None and agent.result is None:
                    b.stop_agent(agent)
                _drop_trail_objects(b, db)
                decoding.append(decoding_round(b, db, seconds))
                print(f"  scale {scale} pair {i + 1}: decoding only {decoding[-1]['tps']:.0f} tps", flush=True)
                continue
            if kind == "without":
                if agent is not None and agent.result is None:
                    b.stop_agent(agent)
                _drop_trail_objects(b, db)
                without.append(_pgbench_round(b, dsn, seconds, None))
                print(f"  scale {scale} pair {i + 1}: without capture {without[-1]['tps']:.0f} tps", flush=True)
                continue
            if agent is not None and agent.result is None:
                b.stop_agent(agent)
            _drop_trail_objects(b, db)
            run, agent, collection = capture_round(b, db, seconds, f"r{i + 1}")
            with_capture.append(run)
            print(
                f"  scale {scale} pair {i + 1}: with capture {run['tps']:.0f} tps, captured "
                f"{run['capture_tps']:.0f}/s, lag p99 {run['lag_ms']['p99']} ms, "
                f"baseline {run['baseline_capture_s']} s",
                flush=True,
            )
    assert agent is not None
    # verify with the agent running (it records up to verify's consistent point), then stop it
    verify = b.pg_cmd("verify", "--db", dsn, "--collection", collection, "--json", "--timeout", "60", check=False)
    report = _json_or_error(verify)
    stopped = b.stop_agent(agent)
    target = f"restored_s{scale}"
    b.pg.psql(f'CREATE DATABASE "{target}"')
    restore = b.pg_cmd(
        "restore",
        "--db",
        b.pg.dsn(target),
        "--source-db",
        dsn,
        "--collection",
        collection,
        "--json",
        timeout=900,
        check=False,
    )
    restored = _json_or_error(restore)
    same = restore.code == 0 and all(_digest(b, db, t) == _digest(b, target, t) for t in PGBENCH_TABLES)
    pooled = [lag for r in with_capture for lag in r.pop("_lags")]
    tps_without = statistics.median(r["tps"] for r in without)
    tps_with = statistics.median(r["tps"] for r in with_capture)
    tps_decoding = statistics.median(r["tps"] for r in decoding)
    return {
        "scale": scale,
        "pgbench": f"-n -c {CLIENTS} -j {THREADS} -T {int(seconds)}",
        "pgbench_init_s": round(init_s, 1),
        "pairs": pairs,
        "pgbench_tps_without_capture_median": round(tps_without, 1),
        "pgbench_tps_with_capture_median": round(tps_with, 1),
        "with_over_without": round(tps_with / tps_without, 3),
        "with_over_without_per_pair": [
            round(w["tps"] / o["tps"], 3) for w, o in zip(with_capture, without, strict=True)
        ],
        "pgbench_tps_decoding_only_median": round(tps_decoding, 1),
        "decoding_only_over_without": round(tps_decoding / tps_without, 3),
        "decoding_only_over_without_per_pair": [
            round(d["tps"] / o["tps"], 3) for d, o in zip(decoding, without, strict=True)
        ],
        "capture_over_pgbench_median": statistics.median(r["capture_over_pgbench"] for r in with_capture),
        "capture_tps_median": statistics.median(r["capture_tps"] for r in with_capture),
        "lag_ms_all_rounds": {"p50": _pct(pooled, 0.5), "p99": _pct(pooled, 0.99), "max": max(pooled, default=0.0)},
        "lag_p99_ms_worst_round": max(r["lag_ms"]["p99"] for r in with_capture),
        "caught_up_after_s": [r["caught_up_after_s"] for r in with_capture],
        "baseline_capture_s": [r["baseline_capture_s"] for r in with_capture],
        "rounds_without": [_brief_run(r) for r in without],
        "rounds_with": [_brief_run(r) for r in with_capture],
        "rounds_decoding_only": [_brief_run(r) for r in decoding],
        "agent_peak_rss_mb": round(stopped.rss_mb, 1),
        "agent_exit": stopped.code,
        "verify": {
            "exit": verify.code,
            "ok": report.get("ok"),
            "seconds": round(verify.seconds, 1),
            "peak_rss_mb": round(verify.rss_mb, 1),
            "tables": report.get("tables"),
            "transactions": report.get("transactions"),
            "entries": report.get("entries"),
            "divergences": len(report.get("divergences") or []),
            "findings": [f["kind"] for f in report.get("findings") or []],
            "error": report.get("error"),
        },
        "restore": {
            "exit": restore.code,
            "error": restored.get("error"),
            "seconds": round(restore.seconds, 1),
            "peak_rss_mb": round(restore.rss_mb, 1),
            "tables": restored.get("tables"),
            "transactions": restored.get("transactions"),
            "same_rows_as_source": same,
        },
    }


def _target(value: float | None, target: float, at_most: bool = False) -> dict[str, Any]:
    met = value is not None and (value <= target if at_most else value >= target)
    return {"value": value, "target": f"{'<=' if at_most else '>='} {target}", "met": met}


def bench_pgtrail(quick: bool) -> dict[str, Any]:
    plan = [(1, 1, 5.0)] if quick else [(1, 1, 10.0), (10, 5, 20.0)]
    OUT.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="notarium-pgtrail-", dir=OUT))
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    results: dict[str, Any] = {"started": started, "clients": CLIENTS, "threads": THREADS, "settings": SETTINGS}
    server: Service | None = None
    b: Bench | None = None
    try:
        with PgCluster.create(SETTINGS) as pg:
            init_service_cli(scratch / "ledger")
            server = start_server(scratch / "ledger")
            b = Bench(scratch, pg, server)
            for scale, pairs, seconds in plan:
                print(f"pgtrail: scale {scale}, {pairs} pair(s) of {seconds:.0f} s rounds", flush=True)
                results[f"scale_{scale}"] = scale_phase(b, scale, pairs, seconds)
            for agent in b.agents:
                b.stop_agent(agent)
    finally:
        if b is not None:
            for agent in b.agents:
                if agent.process.returncode is None:
                    agent.process.kill()
                    with contextlib.suppress(ChildProcessError):
                        os.wait4(agent.process.pid, 0)
                    agent.process.returncode = -9
        if server is not None:
            stop_server(server)
    results["peak_rss_mb"] = {
        f"scale_{s}": {
            "agent": results[f"scale_{s}"]["agent_peak_rss_mb"],
            "verify": results[f"scale_{s}"]["verify"]["peak_rss_mb"],
            "restore": results[f"scale_{s}"]["restore"]["peak_rss_mb"],
        }
        for s, _, _ in plan
    }
    top = results[f"scale_{plan[-1][0]}"]
    results["targets"] = {
        "capture_over_pgbench": _target(top["capture_over_pgbench_median"], TARGETS["capture_over_pgbench"]),
        "lag_p99_ms": _target(top["lag_ms_all_rounds"]["p99"], TARGETS["lag_p99_ms"], at_most=True),
        "pgbench_with_over_without": _target(top["with_over_without"], TARGETS["pgbench_with_over_without"]),
        "verify_s": _target(
            top["verify"]["seconds"] if top["verify"]["exit"] == 0 else None, TARGETS["verify_s"], at_most=True
        ),
        "verify_identical": {"value": top["verify"]["ok"], "met": top["verify"]["ok"] is True},
        "restore_s": _target(
            top["restore"]["seconds"] if top["restore"]["exit"] == 0 else None, TARGETS["restore_s"], at_most=True
        ),
        "restore_same_rows": {
            "value": top["restore"]["same_rows_as_source"],
            "met": top["restore"]["same_rows_as_source"],
        },
    }
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    _table(results, [s for s, _, _ in plan])
    shutil.rmtree(scratch, ignore_errors=True)
    return results


def _table(results: dict[str, Any], scales: list[int]) -> None:
    rows = [
        ("pgbench tps without capture (median)", "pgbench_tps_without_capture_median"),
        ("pgbench tps with capture (median)", "pgbench_tps_with_capture_median"),
        ("with / without (median; per pair)", None),
        ("decoding only (pg_recvlogical) / without", "decoding_only_over_without"),
        ("captured / committed in the window (median)", "capture_over_pgbench_median"),
        ("capture tps (median)", "capture_tps_median"),
        ("lag p50 / p99 ms (all rounds' transactions)", "lag_ms_all_rounds"),
        ("lag p99 ms (worst round)", "lag_p99_ms_worst_round"),
        ("catch-up after pgbench ends, s", "caught_up_after_s"),
        ("capture's baseline of the database, s", "baseline_capture_s"),
        ("agent peak RSS MiB", "agent_peak_rss_mb"),
    ]
    width = 46
    print("\n" + "pgtrail".ljust(width) + "".join(f"scale {s}".rjust(36) for s in scales))
    for label, key in rows:
        cells = []
        for s in scales:
            r = results[f"scale_{s}"]
            if key is None:
                cells.append(f"{r['with_over_without']} {r['with_over_without_per_pair']}")
            elif key == "lag_ms_all_rounds":
                cells.append(f"{r[key]['p50']} / {r[key]['p99']}")
            else:
                cells.append(str(r[key]))
        print(label.ljust(width) + "".join(c.rjust(36) for c in cells))
    for what in ("verify", "restore"):
        cells = [
            f"{results[f'scale_{s}'][what]['seconds']} s, {results[f'scale_{s}'][what]['peak_rss_mb']} MiB"
            for s in scales
        ]
        print(f"pg {what}: wall, peak RSS".ljust(width) + "".join(c.rjust(36) for c in cells))
    for name, t in results["targets"].items():
        print(f"  target {name}: {t.get('value')} {t.get('target', '')} -> {'met' if t['met'] else 'NOT MET'}")
