"""The results of ``raykd bench api``: medians and spreads over rounds, raykd's ratios to the
yardstick, the targets' verdicts and the Markdown report."""

from __future__ import annotations

import statistics
from typing import Any

from raykd.bench.api_load import ENDPOINTS, LABELS, SERVERS
from raykd.console_text import markdown_table

__all__ = ["READS", "TARGET_P99_MS", "TARGET_RATIO", "cell", "ratios", "report", "summarize",
           "table", "verdicts"]

READS = ("get", "list")
TARGET_P99_MS = 50.0
"""Target: p99 of the reads under this at 50 clients."""
TARGET_RATIO = {"get": 0.8, "list": 0.8, "post": 0.5}
"""Target: raykd's requests/s at least this share of the yardstick's."""


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(phases: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """Per server, endpoint and stat: the median over rounds and the min and max."""
    out: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for server in SERVERS:
        for name in ENDPOINTS:
            rows = [p for p in phases if p.get("server", "raykd") == server
                    and p["endpoint"] == name]
            if rows:
                out.setdefault(server, {})[name] = {
                    stat: _spread([p[stat] for p in rows])
                    for stat in ("p50_ms", "p99_ms", "mean_ms", "rps", "cpu_ms")
                    if all(stat in p for p in rows)}
    return out


def ratios(phases: list[dict[str, Any]], stat: str = "rps") -> dict[str, dict[str, float]]:
    """Per endpoint: raykd's req/s over the yardstick's of the same round (median, min,
    max); with ``stat="cpu_ms"``, the yardstick's CPU per request over raykd's (the same
    sense: 1 is as efficient as the yardstick, 0.5 twice its CPU)."""
    got = {(p["round"], p.get("server", "raykd"), p["endpoint"]): p[stat]
           for p in phases if stat in p}
    out = {}
    for name in ENDPOINTS:
        values = [(v / got[(r, "yardstick", e)]) if stat == "rps" else got[(r, "yardstick", e)] / v
                  for (r, s, e), v in got.items()
                  if s == "raykd" and e == name and (r, "yardstick", e) in got and v > 0]
        if values:
            out[name] = _spread(values)
    return out


def cell(stat: dict[str, float], digits: int = 1) -> str:
    """``median (min-max)``."""
    return f"{stat['median']:.{digits}f} ({stat['min']:.{digits}f}-{stat['max']:.{digits}f})"


def verdicts(result: dict[str, Any]) -> list[str]:
    """One line per target: met or not, with the numbers."""
    raykd, ratio = result["summary"].get("raykd", {}), result.get("ratios", {})
    lines = []
    for name, share in TARGET_RATIO.items():
        if name in ratio:
            got = ratio[name]["median"]
            lines.append(f"Target {LABELS[name]} >= {share:.1f}x the yardstick's req/s: "
                         f"{'met' if got >= share else 'NOT met'} ({got:.2f}x).")
    reads = [raykd[n]["p99_ms"]["median"] for n in READS if n in raykd]
    if reads:
        verdict = "met" if max(reads) < TARGET_P99_MS else "NOT met"
        lines.append(f"Target p99 < {TARGET_P99_MS:.0f} ms for reads: {verdict} (worst read p99, "
                     f"median over rounds: {max(reads):.1f} ms).")
    return lines


def table(result: dict[str, Any]) -> str:
    """The Markdown table: raykd's row and the yardstick's per endpoint."""
    rows = []
    for name in ENDPOINTS:
        for server in SERVERS:
            s = result["summary"].get(server, {}).get(name)
            if s is None:
                continue
            mine = server == "raykd"
            ratio = result.get("ratios", {}).get(name) if mine else None
            by_cpu = result.get("cpu_ratios", {}).get(name) if mine else None
            cpu = cell(s["cpu_ms"], 2) if "cpu_ms" in s else "-"
            rows.append([LABELS[name], server, cell(s["p50_ms"]), cell(s["p99_ms"]),
                         cell(s["mean_ms"]), cell(s["rps"], 0), cpu,
                         cell(ratio, 2) if ratio else "" if mine else "1",
                         cell(by_cpu, 2) if by_cpu else "" if mine else "1"])
    return markdown_table(["endpoint", "server", "p50 ms", "p99 ms", "mean ms", "req/s",
                           "server CPU ms/req", "x yardstick req/s", "x yardstick CPU/req"],
                          rows)


def report(result: dict[str, Any]) -> str:
    """The Markdown report of one bench."""
    cfg = result["config"]
    accepted = result["summary"].get("raykd", {}).get("post", {}).get("rps")
    lines = [
        f"# raykd bench api ({result['date']})",
        "",
        f"{cfg['clients']} concurrent clients (closed loop), {cfg['rounds']} interleaved rounds of "
        f"{cfg['requests']} requests per endpoint and server after {cfg['warmup']} warm-up "
        f"requests; {result['inserted']} jobs inserted first ({result['insert_seconds']:.1f} s). "
        "Each cell: median over rounds (min-max); x yardstick req/s: raykd's req/s over the "
        "yardstick's in the same round. Server CPU ms/req: the server process's CPU time "
        "(user + system) over the phase's requests; x yardstick CPU/req: the yardstick's over "
        "raykd's (1: as cheap per request), steadier than req/s on a shared machine, where "
        "each server's req/s follows the share of the CPUs the other work leaves it.",
        "",
        table(result),
        "",
    ]
    if accepted:
        lines.append(f"Jobs accepted per second at {cfg['clients']} clients: {cell(accepted, 0)}.")
    lines += verdicts(result)
    lines += [
        "",
        "Yardstick: a minimal FastAPI app (raykd/bench/yardstick.py) under the same uvicorn "
        "settings, with the same bearer check (hmac.compare_digest), one sqlite3 connection to "
        "the same database file and the same SQL, answering the same JSON (checked before "
        f"measuring: {result.get('same_json')}); its POST inserts the row and its labels "
        "without validating the spec.",
        "",
        f"Servers: one uvicorn process each, access log off, SQLite, queue paused (first job "
        f"still {result['first_job_state']!r} at the end). Machine: {cfg['cpus']} CPUs "
        f"({cfg['machine']}), Python {cfg['python']}; the load generator (one asyncio process) "
        "shares these CPUs with the servers. Load average (1 min) before/after: "
        f"{cfg.get('load_before', float('nan')):.1f}/{cfg.get('load_after', float('nan')):.1f}.",
    ]
    return "\n".join(lines) + "\n"
