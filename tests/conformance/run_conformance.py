"""Run the official MCP conformance server scenarios against a URL and summarise them.

    python tests/conformance/run_conformance.py --url http://127.0.0.1:8811/mcp \
        [--scenario NAME]... [--baseline tests/conformance/baseline.txt] [--out-dir DIR]

Without `--scenario`, every server scenario (`--suite all`, pending ones included) runs in one
`conformance server` process (Node start-up costs ~1.5 s, so one process is ~5x faster than one
per scenario); with `--scenario`, each named scenario runs in its own process. Either way the
run is bounded: after `--budget` seconds the suite is killed and whatever has not reported
counts as failed. A scenario passes when none of its checks is FAILURE or WARNING (the suite's
own `--expected-failures` rule).

Prints `N passed, M failed` and the failing checks; writes every check to
`<out-dir>/conformance-details.json`. Exit status: 0 when every failure is listed in the
baseline (or, without one, when nothing failed), 1 otherwise, 2 when the suite is unavailable.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `tests.conformance` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.conformance.suite import Suite, SuiteUnavailable, ensure_suite

BASELINE = Path(__file__).resolve().parent / "baseline.txt"
SCENARIO_TIMEOUT_S = 90.0
BUDGET_S = 240.0


@dataclass
class ScenarioResult:
    """One scenario's outcome: `passed`, `failed` (a FAILURE check, a crash or a timeout) or `warning`."""

    name: str
    status: str
    checks: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "passed"

    def problems(self) -> list[str]:
        """One line per FAILURE/WARNING check (or the note, when the scenario did not report)."""
        lines = [
            f"{c.get('status')}: {c.get('id')}: {c.get('errorMessage') or c.get('description', '')}"
            for c in self.checks
            if c.get("status") in ("FAILURE", "WARNING")
        ]
        return lines or ([self.note] if self.note else [])


@dataclass
class RunResult:
    url: str
    suite_version: str
    results: list[ScenarioResult]
    seconds: float

    @property
    def passed(self) -> list[str]:
        return [r.name for r in self.results if r.ok]

    @property
    def failed(self) -> list[str]:
        return [r.name for r in self.results if not r.ok]

    def summary(self) -> str:
        warn_only = sum(1 for r in self.results if r.status == "warning")
        extra = f" ({warn_only} with warnings only)" if warn_only else ""
        return f"{len(self.passed)} passed, {len(self.failed)} failed{extra}"


def load_baseline(path: Path = BASELINE) -> dict[str, str]:
    """Parse `scenario-name  # reason` lines (blank lines and whole-line comments ignored)."""
    entries: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, reason = line.partition("#")
        entries[name.strip()] = reason.strip()
    return entries


def list_scenarios(suite: Suite) -> list[str]:
    """Every server scenario the installed suite knows (`conformance list --server`)."""
    out = subprocess.run(suite.command("list", "--server"), capture_output=True, text=True, timeout=60, check=True)
    return [m.group(1) for m in re.finditer(r"^\s+- (\S+)", out.stdout, re.MULTILINE)]


def _classify(checks: list[dict[str, Any]]) -> str:
    statuses = {c.get("status") for c in checks}
    if "FAILURE" in statuses:
        return "failed"
    if "WARNING" in statuses:
        return "warning"
    return "passed"


_RESULT_DIR = re.compile(r"^server-(?P<name>.+)-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d{3}Z$")


def _run_cli(suite: Suite, args: list[str], cwd: Path, timeout: float) -> tuple[int | None, bool]:
    """Run the suite CLI with output to `cwd/output.txt`; return (exit code, timed out)."""
    with open(cwd / "output.txt", "a") as output:
        proc = subprocess.Popen(
            suite.command(*args), stdout=output, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True, env=_env()
        )
        try:
            return proc.wait(timeout=max(timeout, 1.0)), False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return proc.returncode, True


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("NO_COLOR", "1")
    return env


def _collect(out_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Map scenario name -> checks from the `server-<name>-<timestamp>/checks.json` files."""
    found: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(out_dir.rglob("checks.json")):
        m = _RESULT_DIR.match(path.parent.name)
        if m:
            found[m.group("name")] = json.loads(path.read_text())
    return found


def _classify(checks: list[dict[str, Any]]) -> str:
    statuses = {c.get("status") for c in checks}
    if "FAILURE" in statuses:
        return "failed"
    if "WARNING" in statuses:
        return "warning"
    return "passed"


def run_suite(
    suite: Suite,
    url: str,
    out_dir: Path,
    scenarios: Iterable[str] | None = None,
    *,
    scenario_timeout: float = SCENARIO_TIMEOUT_S,
    budget: float = BUDGET_S,
) -> RunResult:
    """Run the scenarios (default: all server scenarios) against `url`; write the details file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    notes: dict[str, str] = {}
    if scenarios:
        names = list(scenarios)
        for name in names:
            left = budget - (time.monotonic() - started)
            if left <= 0:
                notes[name] = f"not run: the {budget:.0f}s budget was spent"
                continue
            args = ["server", "--url", url, "--scenario", name, "-o", str(out_dir)]
            _, timed_out = _run_cli(suite, args, out_dir, min(left, scenario_timeout))
            if timed_out:
                notes[name] = "timed out"
    else:
        names = list_scenarios(suite)
        _, timed_out = _run_cli(suite, ["server", "--url", url, "--suite", "all", "-o", str(out_dir)], out_dir, budget)
        if timed_out:
            notes = {n: f"no result: the suite was killed after the {budget:.0f}s budget" for n in names}
    found = _collect(out_dir)
    results: list[ScenarioResult] = []
    for name in names:
        checks = found.get(name)
        if checks is None:
            note = notes.get(name) or "no checks.json (the scenario crashed; see output.txt)"
            results.append(ScenarioResult(name, "failed", checks=[], note=note))
        else:
            results.append(ScenarioResult(name, _classify(checks), checks=checks))
    run = RunResult(url, suite.version, results, time.monotonic() - started)
    details = {
        "url": url,
        "suite_version": suite.version,
        "seconds": round(run.seconds, 2),
        "summary": run.summary(),
        "passed": run.passed,
        "failed": run.failed,
        "scenarios": [asdict(r) for r in results],
    }
    (out_dir / "conformance-details.json").write_text(json.dumps(details, indent=2))
    return run


def report(run: RunResult, baseline: dict[str, str] | None) -> tuple[list[str], list[str]]:
    """Print the summary; return (unexpected failures, stale baseline entries)."""
    for r in run.results:
        if not r.ok:
            tag = "expected" if baseline is not None and r.name in baseline else "FAILED"
            print(f"[{tag}] {r.name} ({r.status})")
            for line in r.problems():
                print(f"    {line}")
    unexpected = [n for n in run.failed if baseline is None or n not in baseline]
    stale = sorted(n for n in (baseline or {}) if n in run.passed)
    if stale:
        print(f"baseline entries that now pass (remove them): {', '.join(stale)}")
    print(f"{run.summary()} in {run.seconds:.1f}s against {run.url} (conformance {run.suite_version})")
    return unexpected, stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the MCP conformance server scenarios against a URL.")
    parser.add_argument("--url", required=True, help="the MCP endpoint, e.g. http://127.0.0.1:8811/mcp")
    parser.add_argument("--scenario", action="append", help="run only this scenario (repeatable)")
    parser.add_argument("--baseline", type=Path, default=None, help=f"expected failures (e.g. {BASELINE})")
    parser.add_argument("--out-dir", type=Path, default=None, help="where checks and details go (default: a temp dir)")
    parser.add_argument("--scenario-timeout", type=float, default=SCENARIO_TIMEOUT_S)
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="kill the suite after this many seconds")
    args = parser.parse_args(argv)
    try:
        suite = ensure_suite()
    except SuiteUnavailable as e:
        print(f"conformance suite unavailable: {e}", file=sys.stderr)
        return 2
    out_dir = args.out_dir or Path(tempfile.mkdtemp(prefix="conformance-"))
    run = run_suite(
        suite,
        args.url,
        out_dir,
        args.scenario,
        scenario_timeout=args.scenario_timeout,
        budget=args.budget,
    )
    baseline = load_baseline(args.baseline) if args.baseline else None
    unexpected, _ = report(run, baseline)
    print(f"details: {out_dir / 'conformance-details.json'}")
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
