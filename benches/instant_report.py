"""What benches/instant.py writes into its results folder: results.md (the table), results.json
(every sample) and the PNG plots, plus the formatting its rows share."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from stats import pct


@dataclass
class Row:
    """One line of the results table; every cell already formatted."""

    row: str  # the row number, for the order of the table
    what: str
    hutch: str
    baseline: str
    ratio: str
    target: str
    met: str
    notes: list[str] = field(default_factory=list)


@dataclass
class Results:
    """Everything one run measured."""

    meta: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    # Raw samples and details, per row key, for results.json.
    raw: dict[str, Any] = field(default_factory=dict)
    # Latency samples in seconds for the distribution plots: plot name → label → samples.
    latency: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    # Idle sandboxes: checkpoints of {"count", "pss", "mem_delta"} (bytes) and /health samples.
    memory: list[dict[str, float]] = field(default_factory=list)
    health: list[tuple[float, float]] = field(default_factory=list)
    # Transfers: label → GB/s.
    transfer: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def fmt_s(x: float) -> str:
    """A duration in seconds, readably."""
    if math.isnan(x):
        return "—"
    if x >= 10:
        return f"{x:.1f} s"
    if x >= 1:
        return f"{x:.2f} s"
    if x >= 0.01:
        return f"{x * 1000:.1f} ms"
    return f"{x * 1000:.2f} ms"


def p(xs: list[float], q: float) -> float:
    return pct(xs, q) if xs else math.nan


def lat_cell(xs: list[float]) -> str:
    """p50 (p95, p99) of durations, or a dash."""
    if not xs:
        return "—"
    return f"{fmt_s(p(xs, 0.5))} ({fmt_s(p(xs, 0.95))}, {fmt_s(p(xs, 0.99))})"


def ratio(a: float, b: float) -> str:
    if math.isnan(a) or math.isnan(b) or b == 0:
        return "—"
    return f"{a / b:.2f}x"


def yes_no(ok: bool) -> str:
    return "yes" if ok else "**no**"


def mib(n: float) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def markdown(res: Results) -> str:
    m = res.meta
    out = [
        f"# hutch instant-sandbox benchmark ({m['mode']})",
        "",
        f"{m['started']} UTC, {m['host']}; server {m['api_url']}; `benches/instant.py {' '.join(m['argv'])}`.",
        "Every baseline was measured in the same run. p50 (p95, p99); ratios are hutch ÷ baseline.",
        "No target is asserted: this table only reports them.",
        "",
        "| what | hutch p50 (p95, p99) | baseline | ratio | target (issue 11) | met? |",
        "|---|---|---|---|---|---|",
    ]
    for r in res.rows:
        out.append(f"| {r.what} | {r.hutch} | {r.baseline} | {r.ratio} | {r.target} | {r.met} |")
    notes = [n for r in res.rows for n in r.notes] + res.notes
    if notes:
        out += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    if res.errors:
        out += ["", "Errors (these rows are incomplete):", ""] + [f"- {e}" for e in res.errors]
    plots = sorted(m.get("plots", []))
    if plots:
        out += ["", "Plots: " + ", ".join(f"[{x}]({x})" for x in plots) + "."]
    return "\n".join(out) + "\n"


def write_json(res: Results, path: Path) -> None:
    doc = {
        "meta": res.meta,
        "rows": [asdict(r) for r in res.rows],
        "raw": res.raw,
        "latency": res.latency,
        "memory": res.memory,
        "health": res.health,
        "transfer": res.transfer,
        "notes": res.notes,
        "errors": res.errors,
    }
    path.write_text(json.dumps(doc, indent=1, default=str) + "\n")


def plots(res: Results, out: Path) -> list[str]:
    """Writes the PNGs; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    written: list[str] = []
    for name, series in res.latency.items():
        series = {k: v for k, v in series.items() if v}
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(7, 4))
        for label, xs in series.items():
            ys = sorted(x * 1000 for x in xs)
            frac = [(i + 1) / len(ys) for i in range(len(ys))]
            ys, frac = [ys[0], *ys], [0.0, *frac]
            ax.step(ys, frac, where="post", label=f"{label} (n={len(xs)})")
        ax.set_xscale("log")
        ax.set_xlabel("milliseconds (log scale)")
        ax.set_ylabel("fraction of samples ≤ x")
        ax.set_title(name)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fname = "latency-" + "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-") + ".png"
        fig.savefig(out / fname, dpi=110)
        plt.close(fig)
        written.append(fname)

    if res.memory:
        fig, (ax, hx) = plt.subplots(2, 1, figsize=(7, 7))
        counts = [c["count"] for c in res.memory]
        ax.plot(counts, [c["pss"] / (1 << 20) for c in res.memory], "o-", label="PSS of the sandboxes' processes")
        ax.plot(counts, [c["mem_delta"] / (1 << 20) for c in res.memory], "s-", label="MemAvailable delta")
        ax.set_xlabel("idle code-interpreter sandboxes held")
        ax.set_ylabel("MiB")
        ax.set_title("memory against sandbox count")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        if res.health:
            hx.plot([t for t, _ in res.health], [d * 1000 for _, d in res.health], ".", ms=3)
            hx.set_yscale("log")
        hx.set_xlabel("seconds since the first create")
        hx.set_ylabel("/health latency, ms (log)")
        hx.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "memory.png", dpi=110)
        plt.close(fig)
        written.append("memory.png")

    if res.transfer:
        fig, ax = plt.subplots(figsize=(7, 4))
        labels = list(res.transfer)
        ax.barh(labels, [res.transfer[k] for k in labels])
        ax.set_xlabel("GB/s (10^9 bytes per second)")
        ax.set_title("transfers")
        ax.invert_yaxis()
        ax.grid(True, axis="x", alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "transfer.png", dpi=110)
        plt.close(fig)
        written.append("transfer.png")
    return written


def write_all(res: Results, out: Path) -> None:
    """results.md, results.json and the plots into `out` (a plot that fails is noted, not fatal)."""
    out.mkdir(parents=True, exist_ok=True)
    try:
        res.meta["plots"] = plots(res, out)
    except Exception as e:
        res.errors.append(f"plots: {type(e).__name__}: {e}")
    write_json(res, out / "results.json")
    (out / "results.md").write_text(markdown(res))
