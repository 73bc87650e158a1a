"""`make fuzz`: schemathesis against the live OpenAPI schema of a real server on a throwaway database.

Two phases over every operation, with a fixed seed so that a failure can be replayed:
first with the token of a registered agent (``Authorization: Agent <token>``), then as staff
(``Authorization: Token <token>``). The agent phase goes first because the staff phase may
re-register or unregister agents, which would revoke the agent's token. Exits non-zero when
either phase finds a failure; the reports are under ``var/fuzz/report/``.

    python tests/fuzz/run.py                       # SQLite under var/fuzz/, embedded broker
    python tests/fuzz/run.py --database-url postgres://postgres@127.0.0.1:5432/masp_fuzz
    python tests/fuzz/run.py --seed 7 --max-examples 5 --phase staff   # replay or narrow down
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FUZZ_DIR = ROOT / "var" / "fuzz"
SEED = 20261207
MAX_EXAMPLES = 30
AGENT_ID = "fuzz-agent"


def base_env(database_url: str | None) -> dict[str, str]:
    """The server's and the setup's environment: nothing from the caller's MASP_* or .env."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MASP_")}
    env.update(
        DJANGO_SETTINGS_MODULE="masplatform.settings",
        PYTHONPATH=str(ROOT),
        MASP_DEBUG="1",
        MASP_DOTENV="0",
        MASP_VAR_DIR=str(FUZZ_DIR),
        MASP_LOG_LEVEL="WARNING",
        # long polls answer after at most a second (what they answer is the same; 30 s each was most of the run)
        MASP_LONG_POLL_CAP="1",
    )
    if database_url:
        env["MASP_DATABASE_URL"] = database_url
    return env


def fresh_database(env: dict[str, str]) -> None:
    """Drop and recreate the fuzz database (a PostgreSQL one by name; SQLite: a new var/fuzz/)."""
    url = env.get("MASP_DATABASE_URL")
    if url:
        import psycopg

        base, _, name = url.rpartition("/")
        with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')


def run_manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args], env=env, cwd=ROOT, capture_output=True, text=True
    )
    if result.returncode:
        sys.exit(f"fuzz: manage.py {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def seed_data(env: dict[str, str]) -> dict[str, str]:
    """Migrate, then create the staff user, the agent and some rows for the operations to find."""
    run_manage(env, "migrate", "--noinput", "-v", "0")
    script = ROOT / "tests" / "fuzz" / "seed.py"
    out = run_manage(env, "shell", "-c", script.read_text())
    return json.loads(out.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    """The one place that starts the web server under test: gunicorn, as `make run` serves."""
    if str(ROOT) not in sys.path:  # run as a script: tests/fuzz/ is on the path, not the project
        sys.path.insert(0, str(ROOT))
    from masplatform.procs import web_args

    return subprocess.Popen(
        web_args(f"127.0.0.1:{port}"),
        env=env,
        cwd=ROOT,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


def wait_for_port(port: int, server: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"fuzz: the server exited with {server.returncode}; see {FUZZ_DIR / 'server.log'}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"fuzz: the server did not listen on port {port} within {timeout} s")


def schemathesis(url: str, header: str, phase: str, seed: int, max_examples: int, extra: list[str]) -> int:
    report = FUZZ_DIR / "report" / phase
    cmd = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(ROOT / "tests" / "fuzz" / "schemathesis.toml"),
        "run",
        url,
        "--checks",
        "all",
        # unregistering keeps an agent's record readable by design (tests/fuzz/schemathesis.toml)
        "--exclude-checks",
        "use_after_free",
        "--seed",
        str(seed),
        "--max-examples",
        str(max_examples),
        "--workers",
        "1",
        "--request-timeout",
        "40",
        "--header",
        f"Authorization: {header}",
        "--report",
        "junit,ndjson",
        "--report-dir",
        str(report),
        *extra,
    ]
    print(f"\nfuzz: phase {phase}: {' '.join(c if 'Authorization' not in c else 'Authorization: ...' for c in cmd)}")
    started = time.monotonic()
    code = subprocess.call(cmd, cwd=FUZZ_DIR)  # its cache (.schemathesis/) stays in var/fuzz/
    print(f"fuzz: phase {phase}: exit {code} in {time.monotonic() - started:.0f} s; reports in {report}")
    return code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("MASP_FUZZ_DATABASE_URL"))
    parser.add_argument("--seed", type=int, default=int(os.environ.get("MASP_FUZZ_SEED", SEED)))
    parser.add_argument("--max-examples", type=int, default=int(os.environ.get("MASP_FUZZ_MAX_EXAMPLES", MAX_EXAMPLES)))
    parser.add_argument("--phase", choices=["agent", "staff"], action="append", help="default: agent, then staff")
    parser.add_argument("extra", nargs="*", help="more schemathesis options, after --")
    args = parser.parse_args()

    shutil.rmtree(FUZZ_DIR, ignore_errors=True)
    FUZZ_DIR.mkdir(parents=True)
    env = base_env(args.database_url)
    fresh_database(env)
    tokens = seed_data(env)
    port = free_port()
    server = start_server(env, port, FUZZ_DIR / "server.log")
    results: dict[str, int] = {}
    try:
        wait_for_port(port, server)
        url = f"http://127.0.0.1:{port}/api/schema/"
        headers = {"agent": f"Agent {tokens['agent']}", "staff": f"Token {tokens['staff']}"}
        for phase in args.phase or ["agent", "staff"]:
            results[phase] = schemathesis(url, headers[phase], phase, args.seed, args.max_examples, args.extra)
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        if not args.database_url:
            subprocess.run(
                [sys.executable, str(ROOT / "manage.py"), "broker", "stop"], env=env, cwd=ROOT, capture_output=True
            )
    failed = [phase for phase, code in results.items() if code]
    db = "PostgreSQL" if args.database_url else "SQLite"
    print(
        f"\nfuzz: {db}, seed {args.seed}, {args.max_examples} examples/operation: "
        + ", ".join(f"{phase} {'FAILED' if code else 'ok'}" for phase, code in results.items())
    )
    if failed:
        print(
            f"fuzz: replay with: python tests/fuzz/run.py --seed {args.seed} --max-examples {args.max_examples}"
            + "".join(f" --phase {p}" for p in failed)
            + f"; server log: {FUZZ_DIR / 'server.log'}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
