"""BENCHMARKS.md and a chart from the ``--json`` files of throughput.py, memory.py and startup.py.

Reads whichever of the three JSON files exist (``--throughput``, ``--memory``, ``--startup``;
by default ``benchmarks/results/NAME.json``), and writes:

* ``BENCHMARKS.md`` at the checkout root (``--out``): one table of every figure — ours,
  slirp4netns, ours/slirp4netns, the target and whether it is met — then the CPU time and
  latency figures, the machine, the date and the exact commands that produced the files;
* ``benchmarks/chart.png`` (``--chart``), referenced from BENCHMARKS.md: ours/slirp4netns per
  scenario with each target drawn as a line, higher-is-better figures (throughput, round trips,
  connections) on the left, lower-is-better ones (memory, start-up) on the right, where an
  absolute target (say idle <= 18 MiB) is drawn at target / slirp4netns's figure of that run.

Needs matplotlib (``pip install .[bench]``); it runs the Agg backend, no display. Run from the
checkout root as ``python3 -m benchmarks.report``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MAIN = "pyslirp4netns"  # the variant the targets are for
MiB = 1024.0


@dataclass
class Line:
    """One row of the report's main table."""

    group: str  # throughput, memory, startup
    name: str  # e.g. g2h@1500, idle, held 10000
    unit: str
    ours: float | None
    reference: float | None
    target: str  # e.g. ">= 8x", "<= 18 MiB"
    met: bool | None
    higher_is_better: bool
    target_ratio: float | None  # the target as ours/slirp4netns, for the chart
    note: str = ""
    variant: str = MAIN

    @property
    def ratio(self) -> float | None:
        if self.ours is None or not self.reference:
            return None
        return self.ours / self.reference


def load(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit in ("Gbit/s", "s/GB"):
        return f"{value:.2f} {unit}"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    if unit == "ms":
        return f"{value:.1f} ms"
    return f"{value:.0f} {unit}"


# -- figures from each script --------------------------------------------------------------------


def throughput_lines(doc: dict[str, Any]) -> tuple[list[Line], list[Line]]:
    """The main lines (with targets), and the CPU and latency lines (no targets)."""
    main: list[Line] = []
    extra: list[Line] = []
    summary = doc["summary"]
    refs = {s["scenario"]: s for s in summary if s["reference"]}
    for s in summary:
        if s["reference"] or s["variant"].startswith("baseline"):
            continue
        # fwdsplice is compared with slirp4netns's fwd (throughput.py's Scenario.compared_with)
        ref = refs.get(s["scenario"]) or refs.get(s["scenario"].replace("fwdsplice", "fwd"), {})
        is_main = s["variant"] == MAIN
        target = s["target"] if is_main else None
        ratio = s["ratio"]
        note = f"{s['failed']} of {s['runs']} runs failed" if s["failed"] else ""
        if ref.get("failed"):
            note = (note + "; " if note else "") + f"slirp4netns: {ref['failed']} failed"
        main.append(
            Line(
                "throughput",
                s["scenario"],
                s["unit"],
                s["median"],
                s["reference_median"],
                f"≥ {target:g}×" if target is not None else "",
                None if target is None or ratio is None else ratio >= target,
                True,
                target,
                note,
                s["variant"],
            )
        )
        if s["cpu"] is not None or ref.get("cpu") is not None:
            extra.append(
                Line(
                    "CPU",
                    f"{s['scenario']} CPU",
                    s["cpu_unit"] or ref.get("cpu_unit", ""),
                    s["cpu"],
                    ref.get("cpu"),
                    "",
                    None,
                    False,
                    None,
                    variant=s["variant"],
                )
            )
        for q in ("p50", "p99"):
            if s.get(f"{q}_us") is not None:
                extra.append(
                    Line(
                        "latency",
                        f"{s['scenario']} {q}",
                        "µs",
                        s[f"{q}_us"],
                        ref.get(f"{q}_us"),
                        "",
                        None,
                        False,
                        None,
                        variant=s["variant"],
                    )
                )
    return main, extra


def memory_lines(doc: dict[str, Any]) -> list[Line]:
    lines: list[Line] = []
    wanted = doc["parameters"]["connections"]
    refs = {s["figure"]: s for s in doc["summary"] if s["reference"]}
    names = {"idle": "idle", "held": f"held {wanted} connections", "after": "after close"}
    for s in doc["summary"]:
        if s["reference"]:
            continue
        ref = refs.get(s["figure"], {})
        ours = s["median_kib"] / MiB if s["median_kib"] is not None else None
        theirs = ref["median_kib"] / MiB if ref.get("median_kib") is not None else None
        limit = s["limit_kib"] / MiB if s["limit_kib"] is not None else None
        if s["figure"] == "after":
            target = f"≤ idle + {s['target_mib']:g} MiB"
        else:
            target = f"≤ {s['target_mib']:g} MiB"
        note = ""
        if s["figure"] == "held":
            held = {r["variant"]: r["connected"] for r in doc["runs"] if r["connected"] is not None}
            short = [f"{v} held {n}/{wanted}" for v, n in held.items() if n != wanted]
            note = "; ".join(short)
        lines.append(
            Line(
                "memory",
                names[s["figure"]],
                "MiB",
                ours,
                theirs,
                target,
                s["met"],
                False,
                limit / theirs if limit is not None and theirs else None,
                note,
            )
        )
    return lines


def startup_lines(doc: dict[str, Any]) -> list[Line]:
    lines: list[Line] = []
    for s in doc["summary"]:
        if s["reference"]:
            continue
        ref = s["reference_median_s"]
        target = s["target_s"]
        lines.append(
            Line(
                "startup",
                "start to ready" + (" (hardened)" if "hardened" in s["variant"] else ""),
                "ms",
                s["median_s"] * 1000,
                ref * 1000 if ref is not None else None,
                f"≤ {target * 1000:.0f} ms",
                s["met"],
                False,
                target / ref if ref else None,
            )
        )
    return lines


# -- the chart -----------------------------------------------------------------------------------


def chart(lines: Sequence[Line], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    up = [x for x in lines if x.higher_is_better and x.variant == MAIN and x.ratio is not None]
    down = [x for x in lines if not x.higher_is_better and x.ratio is not None]
    panels = [
        (up, "higher is better: throughput, round trips, connections"),
        (down, "lower is better: memory, start-up"),
    ]
    panels = [(p, t) for p, t in panels if p]
    if not panels:
        return
    widths = [max(3, len(p)) for p, _ in panels]
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(max(8.0, 0.8 * sum(widths) + 3), 5.5),
        gridspec_kw={"width_ratios": widths},
        squeeze=False,
    )
    for ax, (items, title) in zip(axes[0], panels, strict=True):
        xs = list(range(len(items)))
        ratios = [x.ratio or 0.0 for x in items]
        colors = ["#999999" if x.met is None else "#2a9d8f" if x.met else "#e76f51" for x in items]
        bars = ax.bar(xs, ratios, color=colors, width=0.6)
        for bar, item in zip(bars, items, strict=True):
            ax.annotate(
                f"{item.ratio:.2f}×",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
                xytext=(0, 2),
                textcoords="offset points",
            )
            if item.target_ratio is not None:
                x0 = bar.get_x() - 0.08
                ax.hlines(item.target_ratio, x0, x0 + bar.get_width() + 0.16, colors="black")
                ax.annotate(
                    item.target,
                    (x0 + bar.get_width() + 0.16, item.target_ratio),
                    fontsize=7,
                    va="center",
                    xytext=(2, 0),
                    textcoords="offset points",
                )
        ax.axhline(1.0, color="#555555", linestyle=":", linewidth=1)
        ax.set_yscale("log")
        ax.set_xticks(xs)
        ax.set_xticklabels([x.name for x in items], rotation=35, ha="right", fontsize=8)
        ax.set_ylabel("pyslirp4netns / slirp4netns")
        ax.set_title(title, fontsize=10)
    fig.suptitle(
        "pyslirp4netns against slirp4netns (bars: median ratio; black lines: targets; "
        "green met, red missed)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- BENCHMARKS.md -------------------------------------------------------------------------------


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(
    docs: dict[str, dict[str, Any]],
    main: Sequence[Line],
    extra: Sequence[Line],
    chart_path: Path | None,
    out: Path,
) -> str:
    md: list[str] = ["# Benchmarks", ""]
    md.append(
        "pyslirp4netns against slirp4netns, measured in the same run on the same machine inside "
        "the loopback-only test rig (`shared/TESTING.md`); produced by `benchmarks/report.py` "
        "from the scripts' `--json` files (see `benchmarks/README.md` for what each figure is). "
        "Ratio = ours / slirp4netns (medians)."
    )
    md.append("")
    machines = sorted({d["machine"] for d in docs.values()})
    dates = sorted({d["date"] for d in docs.values()})
    md.append(f"- Machine: {'; '.join(machines)}")
    md.append(f"- Date: {dates[0]}" + (f" to {dates[-1]}" if len(dates) > 1 else ""))
    met = [x for x in main if x.met is not None]
    md.append(
        f"- Targets met: {sum(1 for x in met if x.met)} of {len(met)}"
        + (
            " (missed: " + ", ".join(f"{x.group} {x.name}" for x in met if not x.met) + ")"
            if any(not x.met for x in met)
            else ""
        )
    )
    md.append("")
    if chart_path is not None and chart_path.exists():
        rel = os.path.relpath(chart_path, out.parent)
        md += [f"![ours / slirp4netns per scenario, with the targets]({rel})", ""]
    md += [
        "| group | figure | binary | ours | slirp4netns | ratio | target | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for x in main:
        ratio = f"{x.ratio:.2f}×" if x.ratio is not None else "—"
        verdict = "" if x.met is None else "met" if x.met else "**missed**"
        name = x.name + (f" ({x.note})" if x.note else "")
        md.append(
            f"| {x.group} | {cell(name)} | {x.variant} | {fmt(x.ours, x.unit)} | "
            f"{fmt(x.reference, x.unit)} | {ratio} | {cell(x.target)} | {verdict} |"
        )
    if extra:
        md += [
            "",
            "## CPU time and latency",
            "",
            "CPU: the daemon's utime + stime over the measurement (from `/proc/PID/stat`) per GB "
            "received, per round trip (`rr`) or per connection (`conns`). Latency: the median "
            "over runs of each `rr` run's p50 and p99 round trip. Lower is better.",
            "",
            "| figure | binary | ours | slirp4netns | ratio |",
            "|---|---|---|---|---|",
        ]
        for x in extra:
            ratio = f"{x.ratio:.2f}×" if x.ratio is not None else "—"
            md.append(
                f"| {x.name} | {x.variant} | {fmt(x.ours, x.unit)} | "
                f"{fmt(x.reference, x.unit)} | {ratio} |"
            )
    if "memory" in docs:
        md += ["", "## Memory runs", ""]
        params = docs["memory"]["parameters"]
        md.append(
            f"{params['connections']} connections, settle {params['settle']:g} s, "
            f"`--mtu {params['mtu']}`, {params['repeat']} rounds; RLIMIT_NOFILE of the "
            f"benchmark (inherited by the daemons"
            + (f", started with soft {params['daemon_nofile']}" if params["daemon_nofile"] else "")
            + f"): {params['nofile_here']}."
        )
        md.append("")
        md += [
            "| binary | round | idle | held | after close | connections held | daemon NOFILE "
            "| errors |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in docs["memory"]["runs"]:

            def m(kib: float | None) -> str:
                return f"{kib / MiB:.1f} MiB" if kib is not None else "—"

            errors = ", ".join(f"{k} ×{v}" for k, v in sorted(r["errors"].items()))
            if r["reason"]:
                errors = (errors + "; " if errors else "") + r["reason"]
            md.append(
                f"| {r['variant']} | {r['round']} | {m(r['idle'])} | {m(r['held'])} | "
                f"{m(r['after'])} | {r['connected']}/{r['wanted']} | {r['nofile']} | "
                f"{cell(errors) or '—'} |"
            )
    md += ["", "## Commands", "", "From the checkout root, as root:", "", "```sh"]
    for name in ("throughput", "memory", "startup"):
        if name in docs:
            md.append(
                f"{docs[name]['command']}   # {docs[name]['seconds']:.0f} s, {docs[name]['date']}"
            )
    md.append("python3 -m benchmarks.report   # reads benchmarks/results/*.json, writes this file")
    md += ["```", ""]
    return "\n".join(md)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python3 -m benchmarks.report",
        description="BENCHMARKS.md and a chart from the benchmarks' --json files.",
    )
    p.add_argument("--throughput", type=Path, default=RESULTS / "throughput.json", metavar="F")
    p.add_argument("--memory", type=Path, default=RESULTS / "memory.json", metavar="F")
    p.add_argument("--startup", type=Path, default=RESULTS / "startup.json", metavar="F")
    p.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md", help="the Markdown file")
    p.add_argument(
        "--chart", type=Path, default=ROOT / "benchmarks" / "chart.png", help="the PNG chart"
    )
    p.add_argument("--no-chart", action="store_true", help="no PNG (no matplotlib needed)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    docs: dict[str, dict[str, Any]] = {}
    for name in ("throughput", "memory", "startup"):
        path: Path = getattr(args, name)
        doc = load(path)
        if doc is None:
            print(f"report.py: no {path}: no {name} figures", file=sys.stderr)
        else:
            docs[name] = doc
    if not docs:
        print("report.py: no JSON file to report on", file=sys.stderr)
        return 2
    main_lines: list[Line] = []
    extra: list[Line] = []
    if "throughput" in docs:
        tp_main, tp_extra = throughput_lines(docs["throughput"])
        main_lines += tp_main
        extra += tp_extra
    if "memory" in docs:
        main_lines += memory_lines(docs["memory"])
    if "startup" in docs:
        main_lines += startup_lines(docs["startup"])
    chart_path = None if args.no_chart else args.chart
    if chart_path is not None:
        chart(main_lines, chart_path)
        print(f"report.py: wrote {chart_path}")
    args.out.write_text(markdown(docs, main_lines, extra, chart_path, args.out))
    print(f"report.py: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
