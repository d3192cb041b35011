"""What the browser's main thread did in a Chromium performance trace (`bench/app_jobs.py --trace FILE`): the time
its tasks took in each span between the app's script-state stamps ("hs:running" / "hs:notRunning"), and after the
last script run ended, the largest tasks with what they ran (scripts by function and file, layout, style, paint, GC).

    python bench/trace_summary.py trace.json
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

NAMED = {"FunctionCall", "EvaluateScript", "v8.compile", "Layout", "UpdateLayoutTree", "Paint", "PrePaint",
         "MinorGC", "MajorGC", "ParseHTML", "TimerFire", "FireAnimationFrame", "EventDispatch", "Commit",
         "v8.parseOnBackground", "HitTest", "v8.evaluateModule", "RunMicrotasks", "XHRReadyStateChange"}


def main_thread(events: list[dict]) -> tuple[int, int]:
    for event in events:
        if event.get("ph") == "M" and event.get("name") == "thread_name" and \
                event.get("args", {}).get("name") == "CrRendererMain":
            return event["pid"], event["tid"]
    raise SystemExit("no renderer main thread in the trace")


def describe(event: dict) -> str:
    data = event.get("args", {}).get("data", {}) or {}
    if event["name"] == "FunctionCall":
        return f"FunctionCall {data.get('functionName') or '?'} {str(data.get('url', ''))[-40:]}"
    if event["name"] == "EvaluateScript":
        return f"EvaluateScript {str(data.get('url', ''))[-50:]}"
    if event["name"] == "EventDispatch":
        return f"EventDispatch {data.get('type')}"
    return event["name"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trace", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    loaded = json.loads(args.trace.read_text())
    events = loaded["traceEvents"] if isinstance(loaded, dict) else loaded
    pid, tid = main_thread(events)
    mine = [e for e in events if e.get("pid") == pid and e.get("tid") == tid and "ts" in e]
    start = min(e["ts"] for e in mine)
    stamps = [(e["ts"], message) for e in mine if e.get("name") == "TimeStamp"
              and (message := str((e.get("args", {}).get("data") or {}).get("message", ""))).startswith("hs:")]
    tasks = sorted((e for e in mine if e.get("ph") == "X" and e.get("name") == "RunTask"), key=lambda e: e["ts"])
    end = max(e["ts"] + e.get("dur", 0) for e in mine)
    print(f"trace {(end - start) / 1e6:.2f} s; stamps: " +
          ", ".join(f"{message} {(ts - start) / 1e6:.2f}" for ts, message in stamps))
    last_end = max((ts for ts, message in stamps if message == "hs:notRunning"), default=start)
    busy = sum(t.get("dur", 0) for t in tasks if t["ts"] >= last_end)
    print(f"after the last script end ({(last_end - start) / 1e6:.2f} s): {(end - last_end) / 1e6:.2f} s, main thread "
          f"busy {busy / 1e6:.2f} s in {sum(1 for t in tasks if t['ts'] >= last_end)} tasks")
    before = sum(t.get("dur", 0) for t in tasks if t["ts"] < last_end)
    print(f"before it: main thread busy {before / 1e6:.2f} s")
    children = [e for e in mine if e.get("ph") == "X" and e.get("name") in NAMED]
    for label, low, high in (("while the script ran", start, last_end), ("after the script", last_end, end)):
        totals: collections.Counter = collections.Counter()
        for event in children:
            if low <= event["ts"] < high:
                totals[describe(event)] += event.get("dur", 0)
        print(f"-- {label}: largest named events (inclusive ms)")
        for name, micros in totals.most_common(args.top):
            print(f"   {micros / 1e3:9.1f}  {name}")
    print("-- tasks over 30 ms after the script:")
    for task in tasks:
        if task["ts"] >= last_end and task.get("dur", 0) > 30_000:
            inside = [describe(e) for e in children if task["ts"] <= e["ts"] < task["ts"] + task["dur"]
                      and e.get("dur", 0) > 5_000]
            print(f"   at {(task['ts'] - start) / 1e6:.2f} s {task['dur'] / 1e3:.0f} ms: {', '.join(inside[:8])}")


if __name__ == "__main__":
    main()
