"""A cutover rehearsal: move one consumer group from the source to the target while the mirror follows.

1. The group must have stopped on the source (no member left; waited for up to ``wait_stop`` seconds).
2. Its final committed offsets are read (stable: no transaction pending) and the source's end offsets of its
   topics taken as the cut: the mirror must hold every record up to there (lag zero for the group's topics
   as of the moment the group stopped); the mirror keeps following meanwhile.
3. Every partition of those topics is verified: record counts and SHA-256 of the source range copied and of
   the target range it landed in.
4. The offsets are translated exactly and committed on the target (the group must be idle there too), then
   read back.
5. What to change in the application is printed: bootstrap servers, the SASL user ``tenancy/user/poolId``
   of an OCI stream pool, each topic's stream, and how long the switch window lasted (from the group's stop
   on the source to its offsets being committed on the target).

The result is a JSON-able dict; ``write_report`` renders it as Markdown and JSON with a plot of the lag over
time (matplotlib, the ``plot`` extra).
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kafkite.client import KafkaClientError
from kafkite.protocol.errors import ErrorCode

if TYPE_CHECKING:
    from kafkite.migrate.mirror import Mirror

READ_COMMITTED = 1


class CutoverError(Exception):
    def __init__(self, message: str, partial: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.partial = partial or {}


class PlotUnavailable(Exception):
    pass


def check_plot_available() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotUnavailable(
            "the cutover report's lag plot needs matplotlib: pip install 'kafkite[plot]' (or pass --no-plot)"
        ) from None


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


async def _stable_offsets(m: Mirror, group: str) -> dict[tuple[str, int], tuple[int, str | None]]:
    for _ in range(100):
        try:
            return await m.source.committed_offsets(group, require_stable=True)
        except KafkaClientError as e:
            if e.code != ErrorCode.UNSTABLE_OFFSET_COMMIT:
                raise
            await asyncio.sleep(0.1)
    raise CutoverError(f"group {group} keeps a transaction with pending offsets open on the source")


async def run_cutover(
    m: Mirror,
    group: str,
    *,
    timeout: float = 120.0,
    wait_stop: float = 30.0,
    topics: list[str] | None = None,
    verify: bool = True,
) -> dict[str, Any]:
    began = time.time()
    res: dict[str, Any] = {"group": group, "mirror": m.name, "source": m.source_name, "target": m.target_name}
    res["began_at"] = iso(began)
    try:
        await asyncio.wait_for(m.ready.wait(), timeout)
    except TimeoutError:
        raise CutoverError("the mirror did not start copying in time") from None
    # 1. The group has stopped on the source.
    deadline = time.monotonic() + wait_stop
    while True:
        track = (await m.groupsync.observe([group]))[group]
        if track.members == 0:
            break
        if time.monotonic() > deadline:
            raise CutoverError(
                f"group {group} still has {track.members} member(s) consuming on the source: stop the "
                "application first (the cutover moves a stopped group)",
                res,
            )
        await asyncio.sleep(0.2)
    stopped_at = track.stopped_at or time.time()
    res["group_stopped_at"] = iso(stopped_at)
    res["group_stop_observed"] = track.stopped_at is not None
    # 2. Its final offsets, and the cut.
    committed = await _stable_offsets(m, group)
    group_topics = sorted({t for t, _ in committed} | set(topics or []))
    unmirrored = [t for t in group_topics if t not in m.topics]
    if topics:
        unmirrored = [t for t in unmirrored if t in topics]
    mirrored = [t for t in group_topics if t in m.topics]
    res["topics"] = mirrored
    if unmirrored:
        res["not_mirrored"] = unmirrored
    if not mirrored:
        raise CutoverError(
            f"group {group} has no committed offsets on a mirrored topic (give its topics with --topics)", res
        )
    cut: dict[str, int] = {}
    for t in mirrored:
        n = m.topics[t]
        ends = await m.source.list_offsets(t, list(range(n)), -1, isolation_level=READ_COMMITTED)
        for p, end in ends.items():
            if f"{t}/{p}" in m.feeds and m.feeds[f"{t}/{p}"].paused_reason is None:
                cut[f"{t}/{p}"] = end
    res["cut"] = cut
    lag_samples: list[tuple[float, int]] = []
    deadline = time.monotonic() + timeout
    while True:
        behind = {k: max(0, end - m.checkpoint.partitions[k].next_source) for k, end in cut.items()}
        lag_samples.append((time.time(), sum(behind.values())))
        if not any(behind.values()):
            break
        if time.monotonic() > deadline or m.stop.is_set() or m.result.errors:
            res["behind"] = {k: v for k, v in behind.items() if v}
            raise CutoverError(
                f"the mirror did not catch up within {timeout:.0f}s: still {sum(behind.values())} record(s) "
                f"behind ({', '.join(f'{k}: {v}' for k, v in behind.items() if v)})"
                + (f"; errors: {m.result.errors}" if m.result.errors else ""),
                res,
            )
        await asyncio.sleep(0.05)
    caught_up = time.time()
    res["caught_up_at"] = iso(caught_up)
    res["live_lag_at_catch_up"] = {k: m.lag(k) for k in cut}
    # 3. Verify the copies.
    snapshot = {k: m.checkpoint.partitions[k].next_source for k in cut}
    checks: list[dict[str, Any]] = []
    if verify:
        for k in sorted(cut, key=lambda k: (k.rsplit("/", 1)[0], int(k.rsplit("/", 1)[1]))):
            checks.append(await m.verify_partition(m.checkpoint.partitions[k], snapshot[k]))
    res["verification"] = checks
    res["verified"] = bool(checks) and all(c["equal"] for c in checks)
    if verify and not res["verified"]:
        raise CutoverError(
            "the copies differ from the source: "
            + ", ".join(c["partition"] for c in checks if not c["equal"])
            + " (offsets not committed on the target)",
            res,
        )
    # 4. Translate and commit.
    entry = await m.groupsync.sync_group(group, force=True, committed=committed)
    committed_at = time.time()
    res["offsets"] = entry
    if entry["errors"] or entry["skipped"]:
        raise CutoverError(
            f"the target did not take the offsets of {group}: {entry['errors'] or entry['skipped']}", res
        )
    readback: dict[str, int] = {}
    if m.group_target is not None:
        have = await m.group_target.committed_offsets(group)
        readback = {f"{t}/{p}": off for (t, p), (off, _) in have.items() if t in mirrored}
        wrong = {
            k: (v[1], readback.get(k)) for k, v in entry["translated"].items() if readback.get(k) != v[1]
        }
        if wrong:
            raise CutoverError(f"the offsets read back from the target differ: {wrong}", res)
    res["target_committed"] = readback
    not_committed = [
        f"{t}/{p}" for t in mirrored for p in range(m.topics[t]) if (t, p) not in committed and m.rest is None
    ]
    res["not_committed"] = not_committed
    res["committed_at"] = iso(committed_at)
    res["switch_window_seconds"] = round(committed_at - stopped_at, 3)
    res["cutover_seconds"] = round(committed_at - began, 3)
    res["catch_up_seconds"] = round(caught_up - began, 3)
    res["exact"] = not entry["inexact"]
    res["instructions"] = instructions(m, group, mirrored, res)
    res["delivery"] = m.result.delivery
    res["lag_samples"] = lag_samples
    res["lag_history"] = [
        {"t": t, "total": total, "topics": {k: v for k, v in per.items() if k in mirrored}}
        for t, total, per in m.telemetry.history
    ]
    return res


def instructions(m: Mirror, group: str, topics: list[str], res: dict[str, Any]) -> dict[str, Any]:
    """What the application changes to read from the target."""
    out: dict[str, Any] = {"group.id": group}
    pool_id = None
    if m.rest is not None:
        pool_id = m.rest.pool_id
        out["bootstrap.servers"] = m.rest.kafka_bootstrap or "<the stream pool's Kafka endpoint>"
        out["rest_endpoint"] = m.rest.url
    else:
        out["bootstrap.servers"] = m.target_name
        user = m.target.security.username if m.target is not None else ""
        if user.count("/") >= 2:
            pool_id = user.rsplit("/", 1)[1]
    if pool_id is not None or m.opts.plan:
        out["security.protocol"] = "SASL_SSL"
        out["sasl.mechanism"] = "PLAIN"
        out["sasl.username"] = f"<tenancy>/<user>/{pool_id or '<streamPoolId>'}"
        out["sasl.password"] = "<an auth token of the user>"
    if m.exactly_once:
        out["isolation.level"] = "read_committed"
    streams = []
    for t in topics:
        planned = m._planned(t)
        s: dict[str, Any] = {"topic": t, "stream": (planned or {}).get("name", t)}
        if m.rest is not None and t in m.rest.streams:
            s["stream_id"] = m.rest.streams[t]["id"]
        streams.append(s)
    out["streams"] = streams
    lines = [
        f"bootstrap.servers: {m.source_name} -> {out['bootstrap.servers']}",
    ]
    if "sasl.username" in out:
        lines.append(
            f"security.protocol={out['security.protocol']}, sasl.mechanism=PLAIN, "
            f"sasl.username={out['sasl.username']}, sasl.password=<auth token>"
        )
    lines.append(f"group.id stays {group}: it resumes where it stopped on the source")
    if m.exactly_once:
        lines.append("isolation.level=read_committed (the mirror writes in transactions)")
    for s in streams:
        extra = f" (stream OCID {s['stream_id']})" if "stream_id" in s else ""
        lines.append(f"topic {s['topic']} -> stream {s['stream']}{extra}")
    if m.rest is not None:
        lines.append(
            f"REST consumers: createGroupCursor(groupName={group}, type=TRIM_HORIZON) on each stream at "
            f"{m.rest.url} resumes at the committed offsets"
        )
    lines.append(
        f"switch window: {res.get('switch_window_seconds', 0):.2f} s from the group's stop on the source to "
        "its offsets committed on the target"
    )
    out["lines"] = lines
    return out


# ---------------------------------------------------------------------------------------------- report


def render_markdown(res: dict[str, Any], plot_name: str | None) -> str:
    ins = res.get("instructions") or {}
    lines = [
        f"# Cutover rehearsal: group `{res['group']}`",
        "",
        f"Mirror `{res.get('mirror')}` from `{res.get('source')}` to `{res.get('target')}`; delivery "
        f"{(res.get('delivery') or {}).get('mode', '?')}.",
        "",
        f"- group stopped on the source: {res.get('group_stopped_at')}",
        f"- cutover began: {res.get('began_at')}",
        f"- mirror caught up with the cut: {res.get('caught_up_at')}",
        f"- offsets committed on the target: {res.get('committed_at')}",
        f"- **switch window: {res.get('switch_window_seconds')} s** (of which the cutover took "
        f"{res.get('cutover_seconds')} s)",
        "- translation: "
        + ("exact" if res.get("exact") else "not exact for " + ", ".join(res["offsets"]["inexact"])),
        "",
        "## What to change in the application",
        "",
    ]
    lines += [f"- {x}" for x in ins.get("lines", [])]
    lines += ["", "## Offsets", "", "| partition | source offset | target offset |", "|---|---|---|"]
    for k, (src, tgt) in sorted((res.get("offsets") or {}).get("translated", {}).items()):
        lines.append(f"| {k} | {src if src is not None else '-'} | {tgt} |")
    if res.get("not_committed"):
        lines += [
            "",
            "Partitions without a committed offset (the consumer starts there by its auto.offset.reset): "
            + ", ".join(res["not_committed"]),
        ]
    lines += [
        "",
        "## Verification",
        "",
        "| partition | source records | target records | source sha256 | target sha256 | equal |",
        "|---|---|---|---|---|---|",
    ]
    for v in res.get("verification", []):
        lines.append(
            f"| {v['partition']} | {v['source_records']} | {v['target_records']} | "
            f"{v['source_sha256'][:16]} | {v['target_sha256'][:16]} | {'yes' if v['equal'] else '**no**'} |"
        )
    if plot_name:
        lines += ["", "## Lag", "", f"![lag over time]({plot_name})"]
    return "\n".join(lines) + "\n"


def plot(res: dict[str, Any], path: Path) -> None:
    check_plot_available()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = res.get("lag_history") or []
    fig, ax = plt.subplots(figsize=(10, 4.5))
    if hist:
        t0 = hist[0]["t"]
        xs = [h["t"] - t0 for h in hist]
        ax.plot(xs, [h["total"] for h in hist], label="all mirrored partitions", color="black", linewidth=1.5)
        for topic in res.get("topics", []):
            ax.plot(xs, [h["topics"].get(topic, 0) for h in hist], label=topic, linewidth=1)
        samples = res.get("lag_samples") or []
        if samples:
            ax.plot(
                [t - t0 for t, _ in samples],
                [n for _, n in samples],
                label="records behind the cut (cutover)",
                color="tab:purple",
                marker=".",
                linewidth=1,
            )
        marks = (
            ("group_stopped_at", "group stopped", "tab:red"),
            ("caught_up_at", "caught up", "tab:green"),
            ("committed_at", "offsets committed", "tab:blue"),
        )
        for key, label, color in marks:
            ts = res.get(key)
            if ts:
                x = datetime.fromisoformat(ts).timestamp() - t0
                ax.axvline(x, color=color, linestyle="--", linewidth=1, label=label)
    ax.set_xlabel("seconds (from the first sample of the mirror's lag)")
    ax.set_ylabel("lag (records)")
    ax.set_title(f"mirror lag, cutover of group {res['group']}")
    ax.legend(loc="upper right", fontsize="small")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(res: dict[str, Any], prefix: str | Path, *, with_plot: bool = True) -> list[Path]:
    """``PREFIX.json``, ``PREFIX.md`` and (with the plot) ``PREFIX.png``."""
    prefix = Path(prefix)
    if prefix.suffix in (".json", ".md", ".png"):
        prefix = prefix.with_suffix("")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    js = prefix.with_name(prefix.name + ".json")
    md = prefix.with_name(prefix.name + ".md")
    png = prefix.with_name(prefix.name + ".png")
    written = [js, md]
    if with_plot:
        plot(res, png)
        written.append(png)
    js.write_text(json.dumps(res, indent=2, default=str) + "\n")
    md.write_text(render_markdown(res, png.name if with_plot else None))
    return written


def summarize(res: dict[str, Any]) -> str:
    lines = [
        f"cutover of group {res['group']} complete: offsets committed on the target "
        f"({'exact' if res.get('exact') else 'not exact'}), "
        f"{sum(1 for v in res.get('verification', []) if v['equal'])}/{len(res.get('verification', []))} "
        "partition(s) verified equal",
    ]
    for k, (src, tgt) in sorted((res.get("offsets") or {}).get("translated", {}).items()):
        lines.append(f"  {k}: source {src if src is not None else '-'} -> target {tgt}")
    lines.append("change in the application:")
    lines += [f"  {x}" for x in (res.get("instructions") or {}).get("lines", [])]
    return "\n".join(lines)
