#!/usr/bin/env python3
"""Where one-job sessions spend their time, thread by thread, from a
`perf sched timehist -w` of the `latency` bench: per session (one cycle,
from a job's end to the next one's), each thread's time on a CPU, its
wait for one once woken (scheduling delay) and its switches; then the
same split by who woke the thread. The figures BENCHMARKS.md gives for
issue 18's point 3 inside a client.

    cd tests && perf sched record -o /tmp/sched.data -- \\
        env AAM_BIN_DIR=<build> <target/release/deps/throughput-*> --bench latency
    perf sched timehist -i /tmp/sched.data -w > /tmp/timehist.txt
    bench/sched_cycle.py /tmp/timehist.txt

Run it on a bench of the default 200 sessions (or more): the cycles
counted are those between the 21st and the 201st `true` process (by
first appearance), past the warm-up, and the bench's own `/bin/true`
runs (its floor) come after its sessions. A thread resumed after a
preemption has no waker: it is counted as "(preempted)".
"""
import collections
import re
import sys

RUN = re.compile(
    r"\s*([\d.]+)\s+\[(\d+)\]\s+(\S.*?)(?:\[(\d+)(?:/\d+)?\])?\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$"
)
WAKE = re.compile(r"\s*([\d.]+)\s+\[(\d+)\]\s+(\S.*?)(?:\[\d+(?:/\d+)?\])?\s+awakened: (\S.*?)\[(\d+)")
THREADS = ("aam-worker", "aam-manager", "aam-commit")


def main(path):
    runs, wakes = [], []
    waker_of = {}
    first_true = {}  # a `true` process's first slice on a CPU, by tid
    for line in open(path):
        wake = WAKE.match(line)
        if wake:
            waker_of[int(wake.group(5))] = wake.group(3).strip()
            continue
        run = RUN.match(line)
        if not run or run.group(4) is None:
            continue
        tid, comm = int(run.group(4)), run.group(3).strip()
        # timehist: the time in seconds, the delay and the run in ms.
        time, delay, ran = float(run.group(1)), float(run.group(6)), float(run.group(7))
        runs.append((time, comm, delay, ran))
        if comm == "true":
            first_true.setdefault(tid, time)
        wakes.append((comm, waker_of.pop(tid, "(preempted)"), delay, ran))
    starts = sorted(first_true.values())
    if len(starts) < 201:
        sys.exit(f"{path}: {len(starts)} runs of `true`, not a latency bench's 200 sessions and more")
    first, last = starts[20], starts[200]
    cycles = 180
    total, delay, switches = collections.Counter(), collections.Counter(), collections.Counter()
    for time, comm, d, ran in runs:
        if first <= time <= last:
            total[comm] += ran
            delay[comm] += d
            switches[comm] += 1
    print(f"{cycles} sessions, {(last - first) / cycles * 1e3:.3f} ms each")
    print(f"{'thread':20} {'on a CPU':>10} {'sched delay':>12} {'switches':>9}  (per session)")
    for comm, ran in total.most_common(8):
        print(
            f"{comm:20} {ran / cycles * 1e3:8.1f} us {delay[comm] / cycles * 1e3:9.1f} us"
            f" {switches[comm] / cycles:9.2f}"
        )
    by_waker = collections.defaultdict(list)
    for comm, waker, d, ran in wakes:
        if comm.startswith(THREADS) or comm.startswith("throughput"):
            by_waker[(comm, waker)].append((d * 1e3, ran * 1e3))
    print(f"\n{'thread':16} {'woken by':20} {'n':>5} {'delay p50':>10} {'on a CPU p50':>13}")
    for (comm, waker), samples in sorted(by_waker.items(), key=lambda kv: -len(kv[1])):
        if len(samples) < 50:
            continue
        d = sorted(s[0] for s in samples)
        r = sorted(s[1] for s in samples)
        print(f"{comm:16} {waker:20} {len(samples):5} {d[len(d) // 2]:7.1f} us {r[len(r) // 2]:10.1f} us")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
