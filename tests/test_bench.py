"""``kafkite bench``: percentiles and histograms, benchmark batches, and quick runs of every mode."""

from __future__ import annotations

import io
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kafkite.bench import report
from kafkite.bench.payload import BatchMaker, stamp_of
from kafkite.bench.runner import BenchOptions, Progress, Runner, progress_text
from kafkite.bench.serve import ServedBroker, free_port
from kafkite.bench.stats import Histogram, Timeline, bucket_bounds, bucket_of, percentile
from kafkite.cli import main
from kafkite.protocol import records

# ------------------------------------------------------------------------------------------ percentiles


def test_percentile_nearest_rank() -> None:
    values = [15, 20, 35, 40, 50]
    assert percentile(values, 5) == 15
    assert percentile(values, 30) == 20
    assert percentile(values, 40) == 20
    assert percentile(values, 50) == 35
    assert percentile(values, 100) == 50
    assert percentile(values, 0) == 15


def test_percentile_of_unsorted_values_and_tails() -> None:
    values = list(range(1, 1001))
    random.Random(1).shuffle(values)
    assert percentile(values, 50) == 500
    assert percentile(values, 99) == 990
    assert percentile(values, 99.9) == 999
    assert percentile(values, 100) == 1000
    assert percentile([7], 99.9) == 7


def test_percentile_rejects_empty_and_out_of_range() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1, 2], 101)
    with pytest.raises(ValueError):
        Histogram().percentile(50)


def test_buckets_cover_every_value_within_their_precision() -> None:
    prev_hi = -1
    for index in range(0, 64 * 40):
        lo, hi = bucket_bounds(index)
        assert lo == prev_hi + 1, index  # contiguous, no gaps or overlaps
        assert bucket_of(lo) == index and bucket_of(hi) == index
        assert hi - lo <= max(lo / 64, 0)
        prev_hi = hi


def test_histogram_percentiles_match_exact_ones_within_a_bucket() -> None:
    rnd = random.Random(7)
    values = [int(rnd.lognormvariate(7, 1.2)) for _ in range(20000)]
    h = Histogram()
    for v in values:
        h.record(v)
    ordered = sorted(values)
    for q in (50, 90, 95, 99, 99.9, 100):
        exact = percentile(ordered, q)
        assert abs(h.percentile(q) - exact) <= exact / 64 + 1, q
    assert h.max == max(values) and h.min == min(values) and h.count == len(values)
    summary = h.summary_ms()
    assert set(summary) == {"count", "mean", "p50", "p95", "p99", "p99.9", "max"}
    assert summary["max"] == max(values) / 1000


def test_histogram_merge_and_round_trip() -> None:
    a, b, both = Histogram(), Histogram(), Histogram()
    for v in range(0, 5000, 3):
        a.record(v)
        both.record(v)
    for v in range(100000, 200000, 7):
        b.record(v, 2)
        both.record(v, 2)
    a.merge(Histogram.from_dict(json.loads(json.dumps(b.to_dict()))))
    assert a.counts == both.counts and a.count == both.count and a.total == both.total
    assert (a.min, a.max) == (both.min, both.max)
    assert a.percentile(99) == both.percentile(99)


def test_timeline_rates_and_merge() -> None:
    t = Timeline(start=100.0, interval=0.5)
    t.add(100.1, 10, 1000)
    t.add(100.4, 10, 1000)
    t.add(101.2, 5, 500)
    other = Timeline(start=100.0, interval=0.5)
    other.add(100.7, 3, 300)
    t.merge(other)
    assert t.msgs == [20, 3, 5]
    assert t.rates()[0] == (0.5, 40.0, 0.004)
    # The run ended 0.25 s into the last interval: its 5 messages took 0.25 s, not 0.5 s.
    assert t.rates(until=1.25)[-1] == (1.25, 20.0, 0.002)
    assert len(t.rates(until=1.01)) == 2  # a last sliver is left out


# ------------------------------------------------------------------------------------------ batches


@pytest.mark.parametrize("compression", [records.COMPRESSION_NONE, records.COMPRESSION_LZ4])
def test_batch_maker_builds_valid_stamped_batches(compression: int) -> None:
    maker = BatchMaker(100, compression)
    for n in (1, 7, 300):
        batch = maker.build(n, now_ns=1_700_000_000_123_456_789)
        h = records.read_header(batch)
        assert records.check_crc(batch, 0, h)
        assert h.records_count == n and h.size == len(batch)
        assert h.base_timestamp == 1_700_000_000_123
        recs = records.decode_records(batch)
        assert [r.offset for r in recs] == list(range(n))
        assert all(len(r.value or b"") == 100 for r in recs)
        assert all(stamp_of(r.value or b"") == 1_700_000_000_123_456_789 for r in recs)
    again = maker.build(7, now_ns=5)  # a cached template, re-stamped
    assert all(stamp_of(r.value or b"") == 5 for r in records.decode_records(again))
    with pytest.raises(ValueError):
        BatchMaker(4)


# ------------------------------------------------------------------------------------------ output


def test_progress_line_is_silent_off_a_terminal() -> None:
    out = io.StringIO()
    p = Progress(True, out)
    p.show("anything")
    p.done()
    assert out.getvalue() == ""
    text = progress_text("kafkite", [("produced", 1234, 2_000_000)], 2.0, 0.5)
    assert text.startswith("kafkite [######......]  50%")
    assert "produced 1,234 msgs 1.0 MB/s" in text and "2.0s" in text


def test_plot_without_matplotlib_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(report.PlotUnavailable, match="kafkite\\[plot\\]"):
        report.check_plot_available()


def test_unreachable_broker_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["bench", "produce", "--bootstrap", f"127.0.0.1:{free_port()}", "--count", "10", "--quiet"])
    assert rc == 1
    assert "cannot reach the broker" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ runs


@pytest.fixture(scope="module")
def bench_broker() -> Iterator[ServedBroker]:
    with ServedBroker() as b:
        yield b


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    if "--warmup" not in argv:
        argv = (*argv, "--warmup", "0.2")  # short: these runs check counts, not speed
    rc = main(["bench", *argv, "--json", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0, out
    data: dict[str, Any] = json.loads(out)
    return data


def _check_role(r: dict[str, Any], messages: int, size: int) -> None:
    assert r["messages"] == messages
    assert r["bytes"] == messages * size
    assert r["errors"] == 0 and r["first_error"] is None
    assert r["elapsed_s"] > 0 and r["msgs_per_s"] > 0 and r["mb_per_s"] > 0
    assert sum(r["timeline"]["msgs"]) == messages and sum(r["timeline"]["bytes"]) == messages * size
    assert r["timeline"]["msgs_per_s"] and all(x >= 0 for x in r["timeline"]["mb_per_s"])


@pytest.mark.parametrize("client", ["kafkite", "confluent"])
def test_produce_run(bench_broker: ServedBroker, capsys: pytest.CaptureFixture[str], client: str) -> None:
    topic = f"bench-produce-{uuid.uuid4().hex[:8]}"
    data = _run(
        capsys,
        "produce",
        "--bootstrap",
        bench_broker.bootstrap,
        "--topic",
        topic,
        "--partitions",
        "3",
        "--count",
        "3000",
        "--size",
        "200",
        "--client",
        client,
        "--batch-bytes",
        "10000",
        "--warmup",
        "0",
    )
    assert data["mode"] == "produce" and data["settings"]["client"] == client
    assert data["settings"]["partitions"] == 3 and data["settings"]["acks"] == "all"
    (run,) = data["runs"]
    assert run["label"] == "kafkite" and not run["blackhole"]
    _check_role(run["produce"], 3000, 200)
    lat = run["produce"]["latency_ms"]
    assert lat["count"] == 3000
    assert 0 <= lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]
    assert data["vs_ceiling"] is None
    # The messages are really there: every partition got some, 3000 in all.
    from kafkite.bench.runner import offsets

    ends = offsets(bench_broker.bootstrap, [(topic, p) for p in range(3)], latest=True)
    assert sum(ends.values()) == 3000 and all(ends.values())


def test_consume_run_preloads_then_consumes_everything(
    bench_broker: ServedBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = f"bench-consume-{uuid.uuid4().hex[:8]}"
    common = ["--bootstrap", bench_broker.bootstrap, "--topic", topic, "--partitions", "2", "--size", "100"]
    data = _run(capsys, "consume", *common, "--count", "4000", "--client", "confluent", "--consumers", "2")
    (run,) = data["runs"]
    _check_role(run["preload"], 4000, 100)
    _check_role(run["consume"], 4000, 100)
    assert run["consume"]["workers"] == 2
    # A second run finds the messages already there and consumes them with the kafkite client.
    data = _run(capsys, "consume", *common, "--count", "4000")
    (run,) = data["runs"]
    assert "preload" not in run
    _check_role(run["consume"], 4000, 100)


@pytest.mark.parametrize("client", ["kafkite", "confluent"])
def test_e2e_run_measures_latency_of_every_message(
    bench_broker: ServedBroker, capsys: pytest.CaptureFixture[str], client: str
) -> None:
    topic = f"bench-e2e-{uuid.uuid4().hex[:8]}"
    data = _run(
        capsys,
        "e2e",
        "--bootstrap",
        bench_broker.bootstrap,
        "--topic",
        topic,
        "--partitions",
        "2",
        "--count",
        "2000",
        "--rate",
        "4000",
        "--size",
        "64",
        "--producers",
        "2",
        "--client",
        client,
        "--linger-ms",
        "1",
    )
    (run,) = data["runs"]
    _check_role(run["produce"], 2000, 64)
    _check_role(run["consume"], 2000, 64)
    assert run["produce"]["workers"] == 2
    lat = run["consume"]["latency_ms"]
    assert lat["count"] == 2000
    assert 0 <= lat["p50"] <= lat["p99"] <= lat["max"] < 10_000
    # 2000 messages at 4000/s take about half a second, not much less.
    assert run["produce"]["elapsed_s"] >= 0.4


def test_table_and_plot(bench_broker: ServedBroker, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    opts = BenchOptions(
        mode="e2e",
        bootstrap=bench_broker.bootstrap,
        topics=[f"bench-plot-{uuid.uuid4().hex[:8]}"],
        count=1000,
        rate=5000,
        size=100,
        quiet=True,
        warmup=0.2,
    )
    result = Runner(opts).run()
    text = report.table(result)
    assert "p99.9 ms" in text and "produce" in text and "e2e" in text and "1,000" in text
    png = tmp_path / "bench.png"
    report.plot(result, str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ctrl_c_stops_the_run_and_reports_what_was_measured(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "kafkite.cli",
        "bench",
        "e2e",
        "--serve",
        "--rate",
        "2000",
        "--warmup",
        "0.2",
    ]
    cmd += ["--duration", "60", "--json"]
    # A process group of its own, signalled as a terminal does on Ctrl-C: the runner, its workers, all of it.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        assert proc.stderr is not None
        notes = []
        for raw in proc.stderr:  # the runner's notes, until the workers are running
            notes.append(raw.decode())
            if "running 1 producer process(es) and 1 consumer process(es)" in notes[-1]:
                break
        else:
            pytest.fail("the run never started:\n" + "".join(notes))
        time.sleep(1.5)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err.decode()
    assert "interrupted" in err.decode()
    (run,) = json.loads(out)["runs"]
    produced, consumed = run["produce"]["messages"], run["consume"]["messages"]
    assert produced > 0 and run["produce"]["elapsed_s"] < 30
    assert 0 < consumed <= produced
    assert run["consume"]["latency_ms"]["count"] == consumed


# ------------------------------------------------------------------------------------------ how it measures


def _stamps(bootstrap: str, topic: str) -> list[int]:
    """The send-time stamps of every message in partition 0 of ``topic``, in log order."""
    import asyncio

    from kafkite.client import KafkaClient

    async def read() -> list[int]:
        out: list[int] = []
        async with KafkaClient(bootstrap) as client:
            offset = 0
            while True:
                fetched = await client.fetch(topic, 0, offset, max_bytes=4 << 20)
                buf = fetched.records
                recs = [
                    r
                    for pos, h in records.iter_headers(buf)
                    for r in records.iter_records(buf, pos, h)
                    if r.offset >= offset
                ]
                if not recs:
                    return out
                out += [stamp_of(r.value or b"") for r in recs]
                offset = recs[-1].offset + 1

    return asyncio.run(read())


@pytest.mark.parametrize("client", ["kafkite", "confluent"])
def test_e2e_sends_evenly_in_time_after_an_uncounted_warmup(
    bench_broker: ServedBroker, capsys: pytest.CaptureFixture[str], client: str
) -> None:
    topic = f"bench-pace-{uuid.uuid4().hex[:8]}"
    argv = ["e2e", "--bootstrap", bench_broker.bootstrap, "--topic", topic, "--size", "64"]
    data = _run(capsys, *argv, "--rate", "1000", "--count", "600", "--warmup", "0.3", "--client", client)
    (run,) = data["runs"]
    _check_role(run["produce"], 600, 64)
    _check_role(run["consume"], 600, 64)  # the warm-up's messages are not counted...
    assert run["consume"]["latency_ms"]["count"] == 600
    stamps = _stamps(bench_broker.bootstrap, topic)
    assert len(stamps) > 600 + 150  # ...but they were sent: about 300 of them, before the measured 600
    start_ns = int(run["produce"]["start"] * 1e9)  # the common start, after the warm-up
    measured = stamps[-600:]
    assert all(s >= start_ns for s in measured) and all(s < start_ns for s in stamps[:-600])
    # 600 messages at 1000/s: spread over about 0.6 s, a few at most in any millisecond (the kafkite client
    # sends what is due each millisecond as one batch; confluent one message at a time).
    span = (measured[-1] - measured[0]) / 1e9
    assert 0.55 <= span <= 0.9, span
    per_ms: dict[int, int] = {}
    for s in measured:
        per_ms[s // 1_000_000] = per_ms.get(s // 1_000_000, 0) + 1
    counts = sorted(per_ms.values())
    # A producer that lost the CPU for a while catches up at once (each message still stamped as sent): the
    # bounds hold for nearly every millisecond, not all of them, on a busy machine.
    assert counts[int(0.95 * len(counts))] <= (10 if client == "kafkite" else 2), counts[-20:]
    assert len(per_ms) >= (100 if client == "kafkite" else 300), len(per_ms)
    if client == "confluent":
        gaps = sorted(b - a for a, b in itertools.pairwise(measured))
        assert gaps[len(gaps) // 2] >= 0.5e6  # one message about every millisecond


def test_warmup_is_sent_but_not_counted(
    bench_broker: ServedBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    from kafkite.bench.runner import offsets

    for warmup, more in (("0", False), ("0.3", True)):
        topic = f"bench-warm-{uuid.uuid4().hex[:8]}"
        argv = ["produce", "--bootstrap", bench_broker.bootstrap, "--topic", topic, "--size", "100"]
        data = _run(capsys, *argv, "--count", "2000", "--warmup", warmup, "--client", "confluent")
        _check_role(data["runs"][0]["produce"], 2000, 100)
        (end,) = offsets(bench_broker.bootstrap, [(topic, 0)], latest=True).values()
        assert (end > 2000) is more and end >= 2000


@pytest.mark.parametrize("ack_latency", [True, False])
def test_confluent_producer_counts_failed_deliveries(
    capsys: pytest.CaptureFixture[str], ack_latency: bool
) -> None:
    # Batches over the broker's message.max.bytes are refused: nothing may be counted as acknowledged,
    # whether acknowledgements come one callback each or from the producer's queue length.
    with ServedBroker(["message.max.bytes=3000"]) as b:
        argv = ["bench", "produce", "--bootstrap", b.bootstrap, "--size", "1000", "--count", "500"]
        argv += ["--client", "confluent", "--warmup", "0", "--json", "--quiet"]
        rc = main([*argv] if ack_latency else [*argv, "--no-ack-latency"])
        data = json.loads(capsys.readouterr().out)
    assert rc == 1
    produce = data["runs"][0]["produce"]
    assert produce["messages"] == 0 and produce["errors"] == 500
    assert "MSG_SIZE_TOO_LARGE" in (produce["first_error"] or "") or produce["first_error"]


def test_confluent_produce_without_ack_latency_counts_every_message(
    bench_broker: ServedBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "produce",
        "--bootstrap",
        bench_broker.bootstrap,
        "--topic",
        f"bench-noack-{uuid.uuid4().hex[:8]}",
    ]
    data = _run(
        capsys, *argv, "--count", "5000", "--size", "300", "--client", "confluent", "--no-ack-latency"
    )
    produce = data["runs"][0]["produce"]
    _check_role(produce, 5000, 300)
    assert produce["latency_ms"] == {"count": 0}
    assert data["settings"]["ack_latency"] is False


def test_confluent_consumer_is_not_held_back_by_librdkafka_queue_thresholds() -> None:
    # librdkafka's defaults stop fetching at 100,000 queued messages and look again a second later, which
    # halved the measured consume rate: the benchmark consumer bounds its prefetch by bytes only.
    from kafkite.bench.workers import WorkerSpec, confluent_consumer_config

    conf = confluent_consumer_config(WorkerSpec("consumer", 0, "confluent", "127.0.0.1:1", [("t", 0)]))
    assert conf["queued.min.messages"] >= 1_000_000
    assert conf["fetch.queue.backoff.ms"] <= 100
    assert conf["queued.max.messages.kbytes"] >= 256 * 1024


def test_repeats_alternate_with_the_ceiling_and_report_median_and_spread(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["produce", "--serve", "--ceiling", "--count", "1000", "--size", "200", "--repeat", "3"]
    data = _run(capsys, *argv, "--warmup", "0")
    runs = data["runs"]
    for r in runs:  # one kafkite broker and one blackhole broker, served for the whole run
        assert r["served"] and r["broker"]["rss_mb"] > 0
        assert r["label"] == ("ceiling (blackhole)" if r["blackhole"] else "kafkite")
    assert len({r["bootstrap"] for r in runs}) == 2
    order = [("ceiling" if r["blackhole"] else "kafkite", r["repeat"]) for r in runs]
    assert order == [
        ("kafkite", 0),
        ("ceiling", 0),
        ("ceiling", 1),
        ("kafkite", 1),
        ("kafkite", 2),
        ("ceiling", 2),
    ]
    for r in runs:
        _check_role(r["produce"], 1000, 200)
        assert len(r["load_average_before"]) == 3 and len(r["load_average_after"]) == 3
        assert r["produce"]["client_cpu_s"] > 0
    assert len(data["load_average"]["start"]) == 3 and len(data["load_average"]["end"]) == 3
    ratios = []
    for i in range(3):
        (k,) = [r for r in runs if r["repeat"] == i and not r["blackhole"]]
        (c,) = [r for r in runs if r["repeat"] == i and r["blackhole"]]
        ratios.append(k["produce"]["msgs_per_s"] / c["produce"]["msgs_per_s"])
    vs = data["vs_ceiling"]
    assert vs["per_repeat"] == pytest.approx(ratios, rel=1e-3)
    assert vs["produce_msgs_per_s"] == pytest.approx(sorted(ratios)[1], rel=1e-3)
    assert vs["min"] <= vs["produce_msgs_per_s"] <= vs["max"]
    rates = sorted(r["produce"]["msgs_per_s"] for r in runs if not r["blackhole"])
    summary = data["summary"]["kafkite"]["produce"]["msgs_per_s"]
    assert summary["median"] == pytest.approx(rates[1], rel=1e-3)
    assert (summary["min"], summary["max"]) == (
        pytest.approx(rates[0], rel=1e-3),
        pytest.approx(rates[2], rel=1e-3),
    )


def test_sustained_run_reports_the_disk_the_rate_over_time_and_a_second_client(
    bench_broker: ServedBroker, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A short sustained run: warm-up by bytes, the disk measured before and after, the rate over the run and
    its slowest stretch, and what a second client saw meanwhile (these check the figures exist, not speed)."""
    topic = f"bench-sustained-{uuid.uuid4().hex[:8]}"
    data = _run(
        capsys,
        "produce",
        "--bootstrap",
        bench_broker.bootstrap,
        "--topic",
        topic,
        "--sustained",
        "--duration",
        "3",
        "--warmup-bytes",
        "2000000",
        "--disk-bytes",
        str(8 << 20),
        "--data-dir",
        str(tmp_path),
        "--size",
        "1000",
        "--probe-rate",
        "100",
    )
    assert data["sustained"] and data["warmup_bytes"] == 2_000_000
    assert [d["bytes"] for d in data["disk"]] == [8 << 20, 8 << 20] and all(
        d["mb_per_s"] > 0 for d in data["disk"]
    )
    assert not list(tmp_path.iterdir()), "the disk measurement removes its file"
    (run,) = data["runs"]
    s = run["sustained"]
    assert s["mb_per_s"] > 0 and s["first_minute_mb_per_s"] > 0 and s["slowest_10s_mb_per_s"] is not None
    assert s["after_first_minute_mb_per_s"] is None  # a 3 s run has no second minute
    assert 2.5 <= run["produce"]["elapsed_s"] <= 30
    probe = run["probe"]
    assert probe["counts"]["metadata"] > 10 and probe["counts"]["fetch"] == probe["counts"]["metadata"]
    assert probe["metadata_ms"]["count"] > 10 and probe["fetch_from_cache_ms"]["p99"] > 0
    assert probe["counts"]["side_produced"] > 0 and probe["side_lag_at_end"] == 0
    assert probe["side_e2e_ms"]["count"] == probe["counts"]["side_consumed"]
    vs = data["vs_disk"]
    assert vs["disk_mb_per_s"] == min(d["mb_per_s"] for d in data["disk"]) and vs["produce"]["median"] > 0


def test_sustained_is_a_produce_benchmark() -> None:
    from kafkite.bench.runner import BenchError

    with pytest.raises(BenchError, match="produce"):
        BenchOptions(mode="consume", sustained=True).validate()
    opts = BenchOptions(mode="produce", sustained=True)
    opts.validate()
    assert opts.duration == 120 and opts.count is None and opts.warmup_bytes and opts.warmup >= 300
    assert opts.broker_overrides == []  # a broker it does not start is left as it is
    # The disk is probed for as long as the run (a few GiB would measure the page cache), at most 64 GiB.
    st = os.statvfs(tempfile.gettempdir())
    assert opts.disk_seconds == 120 and opts.disk_bytes == min(64 << 30, st.f_bavail * st.f_frsize // 6)
    mine = BenchOptions(mode="produce", sustained=True, duration=30, disk_bytes=1 << 30)
    mine.validate()
    assert mine.disk_seconds == 30 and mine.disk_bytes == 1 << 30


def test_the_disk_probe_stops_at_its_time_and_removes_its_file(tmp_path: Path) -> None:
    from kafkite.bench.disk import write_bandwidth

    d = write_bandwidth(tmp_path, 1 << 40, seconds=0.3)
    assert d.for_seconds == 0.3 and d.bytes > 0 and d.seconds >= 0.3 and d.mb_per_s > 0
    assert d.to_json()["for_seconds"] == 0.3
    assert not list(tmp_path.iterdir())


def test_a_served_sustained_broker_keeps_its_log_to_a_share_of_the_free_space(tmp_path: Path) -> None:
    """Minutes at the disk's speed would fill the file system: the broker it starts deletes old segments."""
    from kafkite.bench.disk import sustained_retention_bytes

    opts = BenchOptions(mode="produce", sustained=True, serve=True, data_dir=str(tmp_path), partitions=2)
    opts.validate()
    keep = sustained_retention_bytes(tmp_path, 2)
    st = os.statvfs(tmp_path)
    assert keep == max(1 << 30, st.f_bavail * st.f_frsize // 3 // 2)
    assert opts.broker_overrides[:3] == [
        f"log.retention.bytes={keep}",
        f"log.segment.bytes={256 << 20}",
        "log.retention.check.interval.ms=5000",
    ]
    mine = BenchOptions(
        mode="produce", sustained=True, serve=True, broker_overrides=["log.retention.bytes=5000000000"]
    )
    mine.validate()
    assert mine.broker_overrides == ["log.retention.bytes=5000000000"]  # the user's own choice is kept
