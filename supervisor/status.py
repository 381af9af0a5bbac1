"""`start-all status [--json] [--quiet] [--url URL] [--token TOKEN]`: the supervisor's health.

Exit 0 healthy (ok or degraded), 1 unhealthy, 2 no supervisor reachable or bad input. Runs in
Docker's HEALTHCHECK (`start-all status --quiet`), so it needs no curl: it asks over the unix
socket named by START_ALL_HEALTH_SOCKET (set for the supervisor's children), else --url, else
http://127.0.0.1:$START_ALL_HEALTH_PORT (8081). The token comes from --token or
START_ALL_HEALTH_TOKEN.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from supervisor.contrib import client

EXIT_HEALTHY, EXIT_UNHEALTHY, EXIT_UNREACHABLE = 0, 1, 2
MIB = 1024 * 1024


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="start-all status",
                                description="Show the running supervisor's health.")
    p.add_argument("--json", action="store_true", help="print the health JSON")
    p.add_argument("--quiet", "-q", action="store_true", help="no output; exit code only")
    p.add_argument("--url", help="health server (http://HOST:PORT or unix:/path)")
    p.add_argument("--token", help="bearer token (default: $START_ALL_HEALTH_TOKEN)")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    return p


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def table(report: dict) -> str:
    sup = report["supervisor"]
    rss = sup.get("rss")
    lines = [
        f"status: {report['status']}  ready: {'yes' if report['ready'] else 'no'}  "
        f"supervisor: {sup['state']}, up {_ago(sup['uptime'])}"
        + (f", {rss / MIB:.1f} MiB" if rss else "")
        + (f", only {','.join(sup['only'])}" if sup.get("only") else ""),
    ]
    sizing = (report.get("resources") or {}).get("sizing")
    if sizing and sizing.get("workers") is not None:
        measured = (f"; {sizing['per_worker_pss'] / MIB:.0f} MiB each measured, room for "
                    f"{sizing['room']} in {max(0, sizing['budget']) / MIB:.0f} MiB"
                    if sizing.get("per_worker_pss") else "")
        lines.append(f"sizing: {sizing['instance']} {sizing['workers']} workers (CPU cap "
                     f"{sizing['max']}){measured}; {sizing['state']}")
    elif sizing:
        lines.append(f"sizing: {sizing['instance']} {sizing['state']}")
    rows = [("PROCESS", "STATE", "HEALTHY", "PID", "UP", "RESTARTS", "MEMORY", "LAST EXIT",
             "PROBE")]
    for p in report["processes"]:
        memory = p.get("memory") or {}
        last = p.get("last_exit") or {}
        exit_text = "-"
        if last:
            exit_text = f"code {last['code']}" if last.get("code") is not None else (
                f"signal {last.get('signal')}")
        mem = f"{memory['pss'] / MIB:.0f} MiB/{memory['processes']}p" if memory else "-"
        if p.get("memory_restarts"):
            mem += f" ({p['memory_restarts']} watchdog)"
        probe = (p.get("probe") or {}).get("detail", "-")
        rows.append((p["name"], p["state"], "yes" if p["healthy"] else "NO",
                     str(p["pid"] or "-"), _ago(p.get("uptime")), str(p["restarts"]), mem,
                     exit_text, probe))
    for name, check in report.get("checks", {}).items():
        healthy = {True: "yes", False: "NO", None: "-"}[check["ok"]]
        rows.append((name, "check", healthy, "-", "-", "-", "-", "-", check["detail"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        lines.append("  ".join([c.ljust(w) for c, w in zip(row, widths, strict=False)]
                               + [row[-1]]))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    token = args.token or os.environ.get("START_ALL_HEALTH_TOKEN")
    try:
        code, body = client.ask("/healthz", f"Bearer {token}" if token else None, args.url,
                                args.timeout)
    except ValueError as error:
        print(f"start-all status: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except client.Unreachable as error:
        if not args.quiet:
            print(f"start-all status: no supervisor reachable ({error})", file=sys.stderr)
        return EXIT_UNREACHABLE
    result = EXIT_HEALTHY if code == 200 else EXIT_UNHEALTHY
    if args.quiet:
        return result
    try:
        report = json.loads(body)
    except ValueError:
        print(f"start-all status: unreadable answer (HTTP {code})", file=sys.stderr)
        return EXIT_UNREACHABLE
    if args.json:
        print(json.dumps(report, indent=2))
    elif "processes" in report:
        print(table(report))
    else:
        print(f"status: {report.get('status')} (details need the bearer token: --token)")
    return result


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
