#!/usr/bin/env python3
"""Where a short-job run's CPUs go, from a scheduler trace of the worker.

Reads `perf script` output of `perf sched record` taken during the
`throughput` bench's aam phase (BENCHMARKS.md, issue 18's eighteenth
session) and prints:
- how long each CPU was idle, and for how much of it some task was queued
  on the other CPU (runnable, not running: work the idle CPU could have
  taken), by the waiting task's name;
- the jobs' slot occupancy: the share of the time with 0, 1, 2, ... job
  processes alive (from the worker's clone of a leader to its exit);
- the gap from a job's exit to the worker's next clone.

    perf sched record -o sched.data -- sleep 1      # during the aam phase
    perf script -i sched.data > sched.txt
    bench/sched_slots.py sched.txt [WORKER_COMM] [JOB_COMM]
"""

import bisect
import collections
import re
import sys

LINE = re.compile(r"^\s*(\S.*?)\s+(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+sched:(\w+):\s*(.*)$")


def fields(text):
    """`key=value` pairs of a tracepoint's text (values without spaces)."""
    return dict(re.findall(r"(\w+)=(\S+)", text))


def main():
    path = sys.argv[1]
    worker = sys.argv[2] if len(sys.argv) > 2 else "aam-worker"
    job = sys.argv[3] if len(sys.argv) > 3 else "true"

    queued_on = {}  # pid -> (cpu it waits on, since when, name)
    waits = collections.defaultdict(list)  # cpu -> [(start, end, name)]
    idle_since = {}  # cpu -> when it went idle
    idles = collections.defaultdict(list)  # cpu -> [(start, end)]
    born = {}  # job pid -> clone time
    lives = []  # (clone, exit)

    def stop_wait(pid, at):
        if pid in queued_on:
            cpu, since, name = queued_on.pop(pid)
            waits[cpu].append((since, at, name))

    for line in open(path, errors="replace"):
        m = LINE.match(line)
        if not m:
            continue
        cpu, at, event, rest = int(m.group(3)), float(m.group(4)), m.group(5), m.group(6)
        f = fields(rest)
        if event in ("sched_waking", "sched_wakeup_new"):
            pid = f.get("pid")
            name = rest.split("comm=", 1)[1].split(" pid=", 1)[0]
            if pid not in queued_on:
                queued_on[pid] = (int(f["target_cpu"]), at, name)
        elif event == "sched_migrate_task":
            pid = f.get("pid")
            if pid in queued_on:
                old, since, name = queued_on[pid]
                waits[old].append((since, at, name))
                queued_on[pid] = (int(f["dest_cpu"]), at, name)
        elif event == "sched_process_fork":
            if rest.startswith(f"comm={worker} "):
                born[f["child_pid"]] = at
        elif event == "sched_switch":
            prev_pid, next_pid = f["prev_pid"], f["next_pid"]
            prev_state = f.get("prev_state", "")
            if prev_pid == "0":
                if cpu in idle_since:
                    idles[cpu].append((idle_since.pop(cpu), at))
            elif prev_state.startswith("R"):
                # Preempted: it waits on this CPU from now on.
                name = rest.split("prev_comm=", 1)[1].split(" prev_pid=", 1)[0]
                queued_on[prev_pid] = (cpu, at, name)
            if prev_state.startswith(("Z", "X")) and prev_pid in born:
                # A thread of the worker's own ending is not a job.
                started = born.pop(prev_pid)
                if rest.startswith(f"prev_comm={job} "):
                    lives.append((started, at))
            if next_pid == "0":
                idle_since[cpu] = at
            else:
                stop_wait(next_pid, at)

    cpus = sorted(set(idles) | set(waits))
    for cpu in cpus:
        # The tracer's own waits (`perf` writing its buffers) are left out.
        others = sorted(
            w for c, ws in waits.items() if c != cpu for w in ws if not w[2].startswith("perf")
        )
        idle = sum(e - s for s, e in idles[cpu])
        by_name = collections.Counter()
        covered = 0.0
        for s, e in idles[cpu]:
            spans = [(max(s, ws), min(e, we), n) for ws, we, n in others if ws < e and we > s]
            for a, b, n in spans:
                by_name[n] += b - a
            # The union: time of this idle span with at least one waiter.
            end = s
            for a, b, _ in sorted(spans):
                if b > end:
                    covered += b - max(a, end)
                    end = b
        top = ", ".join(f"{n} {1e3 * t:.1f}" for n, t in by_name.most_common(5))
        print(
            f"cpu{cpu}: idle {1e3 * idle:.1f} ms, of which {1e3 * covered:.1f} ms with a task"
            f" queued on another CPU (ms by task: {top})"
        )

    if lives:
        edges = sorted([(s, 1) for s, _ in lives] + [(e, -1) for _, e in lives])
        share = collections.Counter()
        alive, last = 0, edges[0][0]
        for at, step in edges:
            share[alive] += at - last
            alive, last = alive + step, at
        span = sum(share.values())
        occupancy = ", ".join(f"{n}: {100 * t / span:.1f}%" for n, t in sorted(share.items()))
        life = sorted(e - s for s, e in lives)
        print(
            f"{len(lives)} jobs; time with N alive: {occupancy};"
            f" life p50 {1e6 * life[len(life) // 2]:.0f} us"
        )
        # The clones of jobs (not of the worker's own threads), ended in the trace.
        clones = sorted(start for start, _ in lives)
        gaps = []
        for _, end in lives:
            i = bisect.bisect_left(clones, end)
            if i < len(clones):
                gaps.append(clones[i] - end)
        gaps.sort()
        if gaps:
            q = lambda p: 1e6 * gaps[min(len(gaps) - 1, int(p * len(gaps)))]
            print(
                f"exit to the next clone: p10 {q(0.1):.0f}, p50 {q(0.5):.0f}, p90 {q(0.9):.0f},"
                f" mean {1e6 * sum(gaps) / len(gaps):.0f} us"
            )


if __name__ == "__main__":
    main()
