#!/usr/bin/env python3
"""Turns the resilience suite's figures (one JSON object per line, written
by crates/inlet/tests/resilience/report.rs) into docs/resilience.md.

usage: resilience_report.py REPORT.jsonl OUT.md STARTED_UTC EXIT_STATUS
"""

import json
import os
import platform
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from provenance import commit  # noqa: E402


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
            mem = f", {kib / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{os.cpu_count()} cores ({cpu}){mem}, {platform.system()} {platform.release()}"


def num(v) -> str:
    return "–" if v is None else str(v)


def main() -> int:
    report, out, started, status = sys.argv[1:5]
    figures = []
    if os.path.exists(report):
        with open(report) as f:
            for line in f:
                line = line.strip()
                if line:
                    figures.append(json.loads(line))
    # A scenario run again (e.g. `scripts/resilience s4_` after a fix)
    # replaces its earlier figure.
    by_id = {}
    for f in figures:
        by_id[f["id"]] = f
    figures = sorted(by_id.values(), key=lambda f: (len(f["id"].rstrip("abcdefgh")), f["id"]))
    scales = sorted({f["scale"] for f in figures})
    # The runs the figures come from (a partial re-run replaces some
    # scenarios' figures): start time and commit, as each figure recorded.
    runs = {}
    for f in figures:
        key = (f.get("run_started") or "an unknown time", f.get("commit") or "unknown")
        runs.setdefault(key, []).append(f["id"])
    this_run = (started, os.environ.get("INLET_RESILIENCE_COMMIT") or commit(["docs/resilience.md"]))

    lines = [
        "# Resilience suite: measured figures",
        "",
        "Written by `scripts/resilience` from the figures every scenario of",
        "`crates/inlet/tests/resilience` reports. Each scenario runs the real",
        "`inlet api` (×2 where stated), `inlet worker` and `inlet sync` binaries",
        "against real Redis, RabbitMQ and a MongoDB-wire server (SecantusDB),",
        "drives them with `inlet-client` agents through a recording load",
        "balancer, injects its faults, and reconciles what the agents were told",
        "was accepted with what the API counted and what the worker stored.",
        "",
        f"- this run started {this_run[0]} at commit `{this_run[1]}`, suite exit status {status}",
        *[f"- figures of {', '.join(ids)}: run started {when} at commit `{sha}`"
          for (when, sha), ids in sorted(runs.items())],
        f"- scale `INLET_RESILIENCE_SCALE={', '.join(str(s) for s in scales) or '?'}`"
        " (1.0 is the issue's full size; `scripts/test` runs 0.1)",
        f"- machine: {machine()}",
        "",
        "| # | scenario | load | faults | accepted | stored | false 401s | lost | duplicated | 5xx (without Retry-After) | max recovery (s) | checks |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for f in figures:
        checks = f.get("checks", [])
        ok = sum(1 for c in checks if c["ok"])
        verdict = "all hold" if ok == len(checks) else f"**{len(checks) - ok} FAILED**"
        lines.append(
            "| {id} | {title} | {load} | {faults} | {accepted} | {stored} | {f401} | {lost} | {dup} | {e5} ({e5n}) | {rec} | {ok}/{n} {verdict} |".format(
                id=f["id"],
                title=f["title"],
                load=f["load"] or "–",
                faults=f["faults"] or "–",
                accepted=f["accepted"],
                stored=f["stored"],
                f401=f["false_401s"],
                lost=f["lost"],
                dup=f["duplicated"],
                e5=f["server_errors"],
                e5n=f["server_errors_without_retry_after"],
                rec=num(f.get("max_recovery_s")),
                ok=ok,
                n=len(checks),
                verdict=verdict,
            )
        )
    lines += ["", "## Per scenario", ""]
    for f in figures:
        lines.append(f"### {f['id']}. {f['title']}")
        lines.append("")
        lines.append(f"- measured in the run started {f.get('run_started') or 'an unknown time'} "
                     f"at commit `{f.get('commit') or 'unknown'}`")
        lines.append(f"- elapsed {f['elapsed_s']} s; recorded {f['recorded']}, accepted {f['accepted']}, "
                     f"API counted {num(f.get('api_items'))}, stored {f['stored']}, dropped {f['dropped']}")
        if f.get("recovery"):
            lines.append(f"- recovery time measures: {f['recovery']}")
        for k, v in sorted(f.get("extra", {}).items()):
            lines.append(f"- `{k}`: {json.dumps(v)}")
        lines.append("")
        lines.append("| check | holds | numbers |")
        lines.append("|---|---|---|")
        for c in f.get("checks", []):
            detail = str(c["detail"]).replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {c['name']} | {'yes' if c['ok'] else '**no**'} | {detail} |")
        lines.append("")
    if not figures:
        lines.append("No scenario reported a figure (see the suite's output).")
    lines += [
        "## Reproduce",
        "",
        "```",
        "scripts/resilience                 # every scenario at full scale",
        "INLET_RESILIENCE_SCALE=0.1 scripts/resilience s7_   # one scenario, small",
        "```",
        "",
    ]
    with open(out, "w") as f:
        f.write("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
