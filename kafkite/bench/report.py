"""Benchmark output: a plain-text table, JSON, and a PNG plot (with the ``plot`` extra: matplotlib)."""

from __future__ import annotations

import json
import os

from kafkite.bench.runner import BenchReport, RoleResult, RunResult, sustained_summary


class PlotUnavailable(RuntimeError):
    pass


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def table(report: BenchReport) -> str:
    o = report.options
    acks = "all" if o.acks == -1 else str(o.acks)
    what = f"{o.count:,} messages" if o.count is not None else ""
    if o.duration:
        what = f"{what} or {o.duration:g}s" if what else f"{o.duration:g}s"
    rate = f"{o.rate:g} msg/s" if o.rate else "unthrottled"
    lines = [
        f"kafkite bench {o.mode}: {what} of {o.size} B, {len(o.topics)} topic(s) x {o.partitions} "
        f"partition(s), acks={acks}, compression={o.compression}, rate={rate}, client={o.client}, "
        f"producers={o.producers}, consumers={o.consumers}",
        "",
    ]
    header = (
        f"{'run':<24} {'phase':<8} {'messages':>12} {'msgs/s':>12} {'MB/s':>9} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'p99 ms':>8} {'p99.9 ms':>9} {'max ms':>9} {'errors':>7} {'client CPU':>10}"
    )
    lines += [header, "-" * len(header)]
    for run in report.runs:
        label = f"{run.label} #{run.repeat + 1}" if o.repeat > 1 else run.label
        for phase, r in _phases(run):
            lat = r.hist.summary_ms()
            lines.append(
                f"{label[:24]:<24} {phase:<8} {r.messages:>12,} {r.msgs_per_s:>12,.0f} "
                f"{r.mb_per_s:>9.1f} "
                f"{_ms(lat.get('p50')):>8} {_ms(lat.get('p95')):>8} {_ms(lat.get('p99')):>8} "
                f"{_ms(lat.get('p99.9')):>9} {_ms(lat.get('max')):>9} {r.errors:>7,} {r.cpu_pct:>9.0f}%"
            )
    if o.repeat > 1:
        lines += ["", f"over {o.repeat} repetitions: median (min - max)"]
        for label, phases in report.summary().items():
            for phase, e in phases.items():
                if phase == "preload":
                    continue
                m, mb = e["msgs_per_s"], e["mb_per_s"]
                text = (
                    f"  {label} {phase}: {m['median']:,.0f} msgs/s ({m['min']:,.0f} - {m['max']:,.0f}), "
                    f"{mb['median']:,.1f} MB/s"
                )
                if "p99_ms" in e:
                    p = e["p99_ms"]
                    text += f", p99 {p['median']:.2f} ms ({p['min']:.2f} - {p['max']:.2f})"
                lines.append(text)
    lines.append("")
    lines.append(
        "latency: produce = delivery report - send; e2e = receive - send time written in the payload"
    )
    if o.warmup_bytes:
        lines.append(
            f"each run after {o.warmup_bytes / 2**30:.1f} GiB (at most {o.warmup:g}s) of uncounted "
            "producing, past the kernel's dirty page cache limit; client CPU = the worker processes, in % "
            "of one core"
        )
    else:
        lines.append(
            f"each run after {o.warmup:g}s of uncounted producing; client CPU = the worker processes, "
            "in % of one core"
        )
    lines += _sustained_lines(report)
    cpus = os.cpu_count() or 1
    if report.load_start is not None:
        end = report.load_end or []
        lines.append(
            f"load average (1, 5, 15 min) at start {', '.join(f'{x:.2f}' for x in report.load_start)}; "
            f"at end {', '.join(f'{x:.2f}' for x in end) or '-'} ({cpus} CPUs)"
        )
    if report.load_at_start is not None and report.load_at_start > 0.5 * cpus:
        lines.append(
            f"note: load average {report.load_at_start:.1f} on {cpus} CPUs when the run started: "
            "other work shared the machine"
        )
    vs = report.vs_ceiling
    if vs is not None:
        text = (
            f"kafkite vs blackhole ceiling (same client, same run): {vs['produce_msgs_per_s'] * 100:.1f}% "
            "of the ceiling's produce msgs/s"
        )
        if "per_repeat" in vs:
            each = ", ".join(f"{x * 100:.0f}%" for x in vs["per_repeat"])
            text += f" (median of {len(vs['per_repeat'])} side-by-side pairs: {each})"
        lines.append(text)
    for run in report.runs:
        if run.broker:
            b = run.broker
            extra = []
            if "rss_mb" in b:
                extra.append(f"RSS {b['rss_mb']:.1f} MB (peak {b.get('peak_rss_mb', 0):.1f} MB)")
            if "cpu_pct_of_one_core" in b:
                extra.append(f"CPU {b['cpu_pct_of_one_core']:.0f}% of one core")
            label = f"{run.label} #{run.repeat + 1}" if o.repeat > 1 else run.label
            lines.append(f"broker {label}: " + ", ".join(extra))
        for _, r in _phases(run):
            if r.first_error:
                lines.append(f"{run.label} {r.role}: first error: {r.first_error}")
    return "\n".join(lines)


def _sustained_lines(report: BenchReport) -> list[str]:
    """Sustained mode: the disk, how each run's rate held, and what the second client saw."""
    if not report.options.sustained:
        return []
    lines = [""]
    for d in report.disk:
        lines.append(
            f"disk: {d.mb_per_s:,.0f} MB/s sequential write ({d.bytes / 2**20:,.0f} MiB in {d.seconds:.1f}s, "
            f"{d.directory}; {d.method})"
        )
    o = report.options
    for run in report.runs:
        if run.produce is None or run.produce.timeline is None:
            continue
        label = f"{run.label} #{run.repeat + 1}" if o.repeat > 1 else run.label
        sm = sustained_summary(run.produce)
        text = f"{label}: {sm['mb_per_s']:,.1f} MB/s over {run.produce.elapsed:.0f}s"
        if sm["first_minute_mb_per_s"] is not None:
            text += f"; first minute {sm['first_minute_mb_per_s']:,.1f}"
        if sm["after_first_minute_mb_per_s"] is not None:
            text += f", after it {sm['after_first_minute_mb_per_s']:,.1f}"
        if sm["slowest_10s_mb_per_s"] is not None:
            text += f", slowest 10 s {sm['slowest_10s_mb_per_s']:,.1f}"
        disk = report.disk_mb_per_s
        if disk and not run.blackhole:
            text += f"; {run.produce.mb_per_s / disk * 100:.0f}% of the disk"
        lines.append(text)
        p = run.probe
        if p is not None:
            m, f, e = p["metadata_ms"], p["fetch_from_cache_ms"], p["side_e2e_ms"]
            c = p["counts"]
            lines.append(
                f"  second client: Metadata p50 {_ms(m.get('p50'))} p99 {_ms(m.get('p99'))} max "
                f"{_ms(m.get('max'))} ms ({c['metadata']:,}); Fetch from cache p50 {_ms(f.get('p50'))} "
                f"p99 {_ms(f.get('p99'))} max {_ms(f.get('max'))} ms; other topic {c['side_produced']:,} "
                f"produced, {c['side_consumed']:,} consumed (lag at end {p['side_lag_at_end']}), e2e p99 "
                f"{_ms(e.get('p99'))} ms"
            )
    vs = report.vs_disk
    if vs is not None:
        pr = vs["produce"]
        text = (
            f"kafkite vs the disk's own bandwidth: {pr['median'] * 100:.0f}% of "
            f"{vs['disk_mb_per_s']:,.0f} MB/s"
        )
        if "after_first_minute" in vs:
            text += f" (after the first minute: {vs['after_first_minute']['median'] * 100:.0f}%)"
        lines.append(text)
    return lines


def _phases(run: RunResult) -> list[tuple[str, RoleResult]]:
    out = []
    if run.preload is not None:
        out.append(("preload", run.preload))
    if run.produce is not None:
        out.append(("produce", run.produce))
    if run.consume is not None:
        out.append(("e2e" if run.produce is not None else "consume", run.consume))
    return out


def to_json(report: BenchReport) -> str:
    return json.dumps(report.to_json(), indent=2)


def check_plot_available() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotUnavailable(
            "--plot needs matplotlib: pip install 'kafkite[plot]' (or pip install matplotlib)"
        ) from None


def plot(report: BenchReport, path: str) -> None:
    """Throughput over time, the latency histogram and the percentiles of every run, in one PNG."""
    check_plot_available()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    ax_tp, ax_hist, ax_pct = axes
    o = report.options
    fig.suptitle(
        f"kafkite bench {o.mode}: {o.size} B messages, acks={'all' if o.acks == -1 else o.acks}, "
        f"compression={o.compression}, client={o.client}, {report.started}"
    )
    for run in report.runs:
        for phase, r in _phases(run):
            if r.timeline is None:
                continue
            rates = r.timeline.rates(r.elapsed)
            if rates:
                name = f"{run.label} #{run.repeat + 1}" if o.repeat > 1 else run.label
                ax_tp.plot([t for t, _, _ in rates], [b for _, _, b in rates], label=f"{name} {phase}")
    disk = report.disk_mb_per_s
    if disk:
        ax_tp.axhline(disk, color="black", linestyle="--", linewidth=1, label=f"disk {disk:,.0f} MB/s")
    ceilings = [r.produce.mb_per_s for r in report.runs if r.blackhole and r.produce is not None]
    if ceilings:
        top = sorted(ceilings)[len(ceilings) // 2]
        ax_tp.axhline(
            top, color="grey", linestyle=":", linewidth=1, label=f"blackhole ceiling {top:,.0f} MB/s"
        )
    ax_tp.set_title("throughput over time")
    ax_tp.set_xlabel("seconds")
    ax_tp.set_ylabel("MB/s")
    ax_tp.set_ylim(bottom=0)
    ax_tp.grid(alpha=0.3)
    ax_tp.legend(fontsize=8)

    labels: list[str] = []
    for run in report.runs:
        for phase, r in _phases(run):
            buckets = coarse_buckets(r.hist.buckets_ms())
            if not buckets:
                continue
            name = f"{run.label}{f' #{run.repeat + 1}' if o.repeat > 1 else ''} {phase}"
            ax_hist.stairs(_density(buckets), _edges(buckets), label=name)
            qs = ["p50", "p95", "p99", "p99.9", "max"]
            summary = r.hist.summary_ms()
            values = [float(summary[q]) for q in qs]
            ax_pct.plot(qs, values, marker="o", label=name)
            for q, v in zip(qs, values, strict=True):
                ax_pct.annotate(f"{v:.3g}", (q, v), textcoords="offset points", xytext=(0, 6), fontsize=7)
            labels.append(name)
    ax_hist.set_title("latency histogram")
    ax_hist.set_xlabel("ms (log scale)")
    ax_hist.set_ylabel("messages per ms")
    ax_hist.set_xscale("log")
    ax_hist.set_yscale("log")
    ax_hist.grid(alpha=0.3)
    ax_pct.set_title("latency percentiles")
    ax_pct.set_ylabel("ms (log scale)")
    ax_pct.set_yscale("log")
    ax_pct.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax_pct.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax_pct.grid(alpha=0.3)
    if labels:
        ax_hist.legend(fontsize=8)
        ax_pct.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _edges(buckets: list[tuple[float, float, int]]) -> list[float]:
    """Contiguous bin edges over the non-empty buckets (gaps become empty bins)."""
    edges = [buckets[0][0]]
    for lo, hi, _ in buckets:
        if lo > edges[-1]:
            edges.append(lo)
        edges.append(hi)
    return edges


def _density(buckets: list[tuple[float, float, int]]) -> list[float]:
    values: list[float] = []
    prev_hi = buckets[0][0]
    for lo, hi, n in buckets:
        if lo > prev_hi:
            values.append(0.0)
        values.append(n / max(hi - lo, 1e-9))
        prev_hi = hi
    return values


def coarse_buckets(
    buckets: list[tuple[float, float, int]], per_octave: int = 8
) -> list[tuple[float, float, int]]:
    """Merge histogram buckets into ``per_octave`` bins per power of two (a readable plot)."""
    import math

    merged: dict[int, list[float]] = {}
    for lo, hi, n in buckets:
        key = math.floor(math.log2(max(lo, 1e-3)) * per_octave)
        entry = merged.setdefault(key, [lo, hi, 0])
        entry[0] = min(entry[0], lo)
        entry[1] = max(entry[1], hi)
        entry[2] += n
    return [(lo, hi, int(n)) for lo, hi, n in (merged[k] for k in sorted(merged))]
