"""The bench result as a fixed-width text table (what the command prints) and as
the markdown block of ``bench.md`` and docs/benchmarks.md."""

from __future__ import annotations

import math

TABLE_HEADER = ("stage", "measurement", "value", "target", "pass")

def _format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if not math.isfinite(value) or abs(value) >= 100:
        text = f"{value:,.0f}"
    else:
        text = f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"
    return f"{text} {unit}".strip()


def table_cells(result: dict) -> list[tuple[str, str, str, str, str]]:
    """(stage, measurement, value, target, pass) strings of every row."""
    verdict = {True: "pass", False: "miss", None: ""}
    return [(r["stage"], r["measurement"], _format_value(r["value"], r["unit"]),
             r["target"] or "", verdict[r["passed"]]) for r in result["rows"]]


def format_table(result: dict) -> str:
    """The rows as a fixed-width text table (what the command prints)."""
    lines = [TABLE_HEADER, *table_cells(result)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(TABLE_HEADER))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip()
                     for line in lines)


def render_markdown(result: dict) -> str:
    """The profile's block of docs/benchmarks.md: command, machine, table."""
    m = result["machine"]
    gpu = f"; GPU {m['gpu']}" if "gpu" in m else ""
    lines = [f"### Profile `{result['profile']}`", "",
             f"`{result['command']}` on {result['date']} "
             f"(profile fingerprint `{result['profile_fingerprint']}`).", "",
             f"Machine: {m['cpu']}, {m['logical_cores']} logical cores ({m['usable_cores']} "
             f"usable), {m['ram_gib']} GiB RAM; Python {m['python']}, torch {m['torch']}, "
             f"torch threads: {m['torch_threads']}; device `{m['device']}`{gpu}.", "",
             "| " + " | ".join(TABLE_HEADER) + " |",
             "|" + "---|" * len(TABLE_HEADER)]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_cells(result)]
    return "\n".join(lines) + "\n"
