"""The soak's figures from what was observed, and the table it prints (Markdown).

What counts as lost, precisely:
- bus: labels the worker says it published (its frames_out, between two of its own statuses,
  which travel in order on the same socket) that the always-connected reader never got.
- log / mqtt: labels and events the reader saw on the bus that never reached the log file or
  the broker. Those from a window when that subscriber (or the broker) was down, from the
  last label it got before the fault (what was in transit then went down with it) to the
  fault's recovery, are lost by design (PUB/SUB keeps nothing for an absent
  reader; MQTT QoS 0 keeps nothing while disconnected). So are those from a worker restart:
  what a killed worker had queued dies with it, and a new worker publishes its first labels
  before every reader has reconnected (ZeroMQ's slow joiner). Any others are unexplained.
- Frames never labelled (label seq gaps) are not losses: the worker classifies only each
  camera's newest frame, so with an unthrottled source most frames are dropped by design.
"""

from __future__ import annotations

import statistics
from collections import Counter

STREAM_OF = {  # whose recovery is seen where
    "capture:cam0": "bus",
    "infer": "bus",
    "subscriber:log": "log",
    "subscriber:mqtt": "mqtt",
    "mosquitto": "mqtt",
    "forkserver": "bus",  # every child is forked from it, and dies with it
}
MARGIN = 1.0  # seconds before a fault whose messages may still have been queued in the victim


def _pair(stream: str, record) -> tuple[float, float | None]:
    """(received_at, captured_at of the label, or None) of one observed record."""
    if stream == "bus":
        return record[0], record[2]
    if stream == "log":
        return record[0], record[2] if record[1] == "label" else None
    return record


def first_fresh(stream: str, records: list, after: float) -> float | None:
    """When `stream` got its first label of a frame captured after `after` (None: never)."""
    found = None
    for index in range(len(records) - 1, -1, -1):  # newest first, back to `after`
        received, captured = _pair(stream, records[index])
        if received < after:
            break
        if captured is not None and captured > after:
            found = received
    return found


def recovery_time(fault: dict, streams: dict) -> float | None:
    """Seconds from the fault's end to the first label of a frame captured after it."""
    name = STREAM_OF[fault["target"]]
    found = first_fresh(name, streams.get(name) or [], fault["at"])
    return None if found is None else found - fault["at"]


def recoveries(faults: list[dict], streams: dict) -> list[tuple[dict, float | None]]:
    return [(fault, recovery_time(fault, streams)) for fault in faults]


def fault_name(fault: dict) -> str:
    return "broker restart" if fault["kind"] == "broker" else f"{fault['kind']} {fault['target']}"


def last_delivered(stream: str, records: list, before: float) -> float:
    """Capture time of the last label `stream` received before `before` (else `before`)."""
    for index in range(len(records) - 1, -1, -1):
        received, captured = _pair(stream, records[index])
        if received < before and captured is not None:
            return captured
    return before


def downtime(faults: list, targets: set, stream: str, records: list, kinds=("kill", "broker")):
    """(start, end) of each outage of `targets` as `stream` lived it: from the last label it
    got before the fault (what was in transit then was lost with it), or MARGIN earlier, to
    its first label of a frame captured after the fault."""
    windows = []
    for fault in faults:
        if fault["target"] in targets and fault["kind"] in kinds:
            start = fault.get("from", fault["at"])
            start = min(start - MARGIN, last_delivered(stream, records, start))
            end = first_fresh(stream, records, fault["at"]) or fault["at"] + 60.0
            windows.append((start, end))
    return windows


def _split(missing: list[float], windows: list, restarts: list, dropped: int, faults) -> dict:
    """Missing messages: while the receiver was down; while the worker restarted (a killed
    publisher's queue dies with it, and a new one publishes before readers reconnect);
    dropped by the receiver's host (counted); the rest, each with its nearest fault."""
    down = [t for t in missing if any(a <= t <= b for a, b in windows)]
    rest = [t for t in missing if not any(a <= t <= b for a, b in windows)]
    restarting = [t for t in rest if any(a <= t <= b + MARGIN for a, b in restarts)]
    dropped = min(dropped, len(rest) - len(restarting))
    unexplained = [t for t in rest if not any(a <= t <= b + MARGIN for a, b in restarts)]
    unexplained = unexplained[dropped:]
    near = [_nearest(t, faults) for t in unexplained[:20]]
    return {
        "missing": len(missing), "while_down": len(down), "worker_restarting":
        len(restarting), "dropped": dropped, "unexplained": len(unexplained), "near": near,
    }  # fmt: skip


def _nearest(t: float, faults: list[dict]) -> list:
    if not faults:
        return []
    fault = min(faults, key=lambda f: abs(t - f["at"]))
    return [fault_name(fault), round(t - fault["at"], 2)]


def seq_gaps(labels: list) -> int:
    """Frames between consecutive labels of one capture incarnation (seq restarts with it)."""
    gaps, previous = 0, None
    for _, seq, _, _ in labels:
        if previous is not None and seq > previous:
            gaps += seq - previous - 1
        previous = seq
    return gaps


def summarize(raw: dict) -> dict:
    """Plain, JSON-ready figures from the run's observations."""
    bus = raw["bus"]
    figures = {
        "duration_s": round(raw["duration"], 1),
        "faults": len(raw["faults"]),
        "frames_captured": bus.counter("capture:cam0.frames_out"),
        "frames_reached_worker": bus.counter("infer.frames_in"),
        "dropped_superseded": bus.counter("infer.dropped"),
        "stale": bus.counter("infer.stale"),
        "labels_published": bus.counter("infer.frames_out"),
        "labels_seen": len(bus.figures.labels),
        "label_seq_gaps": seq_gaps(bus.figures.labels),
        "bus_published_bracketed": bus.figures.published,
        "bus_lost": bus.figures.published - bus.figures.received,
        "events_seen": len(bus.figures.events),
        **deliveries(raw),
        "recovery": recovery_table(raw["recovery"]),
        "fault_log": [
            [round(fault["at"] - raw["began"], 2), fault_name(fault), seconds]
            for fault, seconds in raw["recovery"]
        ],
        "growth": growth_table(raw["first"], raw["last"]),
    }
    return figures


def deliveries(raw: dict) -> dict:
    """Labels and events seen on the bus during the soak that the log and the broker lack.
    Killing the fork server takes every child down with it: an outage for everyone."""
    bus, faults, log = raw["bus"], raw["faults"], raw["log"]
    began, stopping = raw["began"], raw["stopping"]
    labels = [r[2] for r in bus.figures.labels if began <= r[0] <= stopping]
    events = [e for e in bus.figures.events if began <= e[0] <= stopping]
    dropped = {name: bus.counter(f"subscriber:{name}.dropped") for name in ("log", "mqtt")}
    windows = downtime(faults, {"subscriber:log", "forkserver"}, "log", log)
    restarts = downtime(faults, {"infer"}, "log", log, kinds={"kill"})
    split = (windows, restarts, dropped["log"], faults)
    logged = {key for _, kind, key in log if kind == "label"}
    missing = [captured for captured in labels if captured not in logged]
    figures = {"log_labels": {"compared": len(labels), **_split(missing, *split)}}
    logged_events = Counter(key for _, kind, key in log if kind == "event")
    missing = []
    for received, seq, label in events:  # (seq, label) may repeat after a capture restart
        if logged_events[(seq, label)] > 0:
            logged_events[(seq, label)] -= 1
        else:
            missing.append(received)
    figures["log_events"] = {"compared": len(events), **_split(missing, *split)}
    if raw["mqtt"] is not None:
        mqtt = raw["mqtt"]
        on_broker = {captured for _, captured in mqtt}
        targets = {"subscriber:mqtt", "mosquitto", "forkserver"}
        windows = downtime(faults, targets, "mqtt", mqtt)
        restarts = downtime(faults, {"infer"}, "mqtt", mqtt, kinds={"kill"})
        missing = [captured for captured in labels if captured not in on_broker]
        split = _split(missing, windows, restarts, dropped["mqtt"], faults)
        figures["mqtt_labels"] = {"compared": len(labels), **split}
    return figures


def recovery_table(recovered: list) -> dict[str, dict]:
    by_kind: dict[str, list] = {}
    for fault, seconds in recovered:
        by_kind.setdefault(fault_name(fault), []).append(seconds)
    table = {}
    for kind, values in sorted(by_kind.items()):
        done = [v for v in values if v is not None]
        table[kind] = {
            "n": len(values),
            "p50_s": round(statistics.median(done), 2) if done else None,
            "max_s": round(max(done), 2) if done else None,
            "not_recovered": len(values) - len(done),
        }
    return table


def growth_table(first: dict, last: dict) -> dict[str, dict]:
    """component -> RSS and open files at its first and last sample (pid shows restarts)."""
    table = {}
    for name in sorted(set(first) & set(last)):  # one being restarted at the end is left out
        (pid0, rss0, fds0), (pid1, rss1, fds1) = first[name], last[name]
        table[name] = {
            "rss_mb": [round(rss0 / 1024, 1), round(rss1 / 1024, 1)],
            "fds": [fds0, fds1],
            "same_process": pid0 == pid1,
        }
    return table


def report(f: dict) -> str:
    lines = [
        f"soak: {f['duration_s']:.0f} s, {f['faults']} faults, one every {f['fault_every_s']:g} s "
        "after the previous recovered; recovery = fault end -> first label of a frame captured "
        "after it, seen on the bus (capture, worker), in the log file or on the broker (mqtt)",
        "",
        "| figure | value |",
        "|---|---|",
    ]
    for key in ("frames_captured", "frames_reached_worker", "dropped_superseded", "stale",
                "labels_published", "labels_seen", "label_seq_gaps", "events_seen",
                "bus_published_bracketed", "bus_lost"):  # fmt: skip
        lines.append(f"| {key} | {f[key]} |")
    for key in ("log_labels", "log_events", "mqtt_labels"):
        if key in f:
            v = f[key]
            lines.append(
                f"| {key} not delivered (of {v['compared']}): missing / while down / while the "
                f"worker restarted / dropped by its host / unexplained | {v['missing']} / "
                f"{v['while_down']} / {v['worker_restarting']} / {v['dropped']} / "
                f"{v['unexplained']} |"
            )
    lines += ["", "| fault | n | recovery p50 s | max s | not recovered |", "|---|---|---|---|---|"]
    for kind, v in f["recovery"].items():
        lines.append(f"| {kind} | {v['n']} | {v['p50_s']} | {v['max_s']} | {v['not_recovered']} |")
    lines += ["", "| component | RSS MB first -> last | open files first -> last | same pid |"]
    lines.append("|---|---|---|---|")
    for name, v in f["growth"].items():
        rss, fds = v["rss_mb"], v["fds"]
        lines.append(f"| {name} | {rss[0]} -> {rss[1]} | {fds[0]} -> {fds[1]} | "
                     f"{'yes' if v['same_process'] else 'no (restarted)'} |")  # fmt: skip
    return "\n".join(lines)
