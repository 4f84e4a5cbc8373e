#!/usr/bin/env python3
"""Where a short-job run's CPUs go, from a scheduler trace of the worker.

Reads `perf script` output of `perf sched record` taken during the
`throughput` bench's aam phase (BENCHMARKS.md, issue 18's eighteenth
session) and prints:
- the trace's span, how long each CPU was idle, and for how much of it
  some task was queued on another CPU (runnable, not running: work the
  idle CPU could have taken; per-CPU kernel threads are left out, they
  cannot move), by the waiting task's name ("leader" is a job's process
  between the worker's clone and its exec, which still has the worker's
  name);
- the worker's waits over 0.2 ms, by what woke it;
- the jobs' slot occupancy: the share of the time with 0, 1, 2, ... job
  processes alive (from the worker's clone of a leader to its exit);
- the gap from a job's exit to the clone that takes its slot (exits and
  clones matched in order).

    perf sched record -o sched.data -- sleep 1      # during the aam phase
    perf script -i sched.data > sched.txt
    bench/sched_slots.py sched.txt [WORKER_COMM] [JOB_COMM]

It expects perf's plain text for the sched events (`key=value` fields);
with libtraceevent's sched plugins perf prints another form, refused here.
"""

import bisect
import collections
import re
import sys

LINE = re.compile(r"^\s*(\S.*?)\s+(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+sched:(\w+):\s*(.*)$")

# Kernel threads bound to one CPU: no other CPU could have run them.
PER_CPU_THREAD = re.compile(r"^(ksoftirqd|migration|cpuhp|idle_inject|rcuc|kworker/\d+:)")

LONG_WAIT = 0.0002


def fields(text):
    """`key=value` pairs of a tracepoint's text (values without spaces)."""
    return dict(re.findall(r"(\w+)=(\S+)", text))


def between(text, start, end):
    """The text between `start` and `end` (a comm may hold spaces)."""
    return text.split(start, 1)[1].split(end, 1)[0]


def events(path):
    """(waker comm, waker pid, cpu, time, event, fields text) of each sched event."""
    for line in open(path, errors="replace"):
        m = LINE.match(line)
        if m:
            yield m.group(1), m.group(2), int(m.group(3)), float(m.group(4)), m.group(5), m.group(6)


def main():
    path = sys.argv[1]
    worker = sys.argv[2] if len(sys.argv) > 2 else "aam-worker"
    job = sys.argv[3] if len(sys.argv) > 3 else "true"

    # First pass: which processes the worker cloned became jobs (their
    # last switch-out is as the job's command), and the worker's threads.
    forked, jobs, workers = set(), set(), set()
    for comm, pid, _, _, event, rest in events(path):
        if event == "sched_process_fork" and rest.startswith(f"comm={worker} "):
            forked.add(fields(rest)["child_pid"])
        elif event == "sched_switch" and rest.startswith(f"prev_comm={job} "):
            f = fields(rest)
            if f["prev_state"].startswith(("Z", "X")) and f["prev_pid"] in forked:
                jobs.add(f["prev_pid"])
        if comm == worker and pid not in forked:
            workers.add(pid)
    if not forked:
        sys.exit(f"{path}: no clone by {worker} (or not perf's plain text for sched events)")

    def label(pid, name):
        return "leader" if pid in jobs and name == worker else name

    queued_on = {}  # pid -> (cpu it waits on, since when, name, waker)
    waits = collections.defaultdict(list)  # cpu -> [(start, end, name)]
    worker_waits = collections.Counter()  # waker -> waits over LONG_WAIT
    idle_since = {}  # cpu -> when it went idle
    idles = collections.defaultdict(list)  # cpu -> [(start, end)]
    seen = {}  # cpu -> (first, last) event time
    born = {}  # job pid -> clone time
    lives = []  # (clone, exit)

    def stop_wait(pid, at):
        if pid in queued_on:
            cpu, since, name, waker = queued_on.pop(pid)
            waits[cpu].append((since, at, name))
            if pid in workers and at - since > LONG_WAIT:
                worker_waits[waker] += 1

    for comm, waker_pid, cpu, at, event, rest in events(path):
        first, _ = seen.get(cpu, (at, at))
        seen[cpu] = (first, at)
        f = fields(rest)
        if event in ("sched_waking", "sched_wakeup_new"):
            pid = f.get("pid")
            name = label(pid, between(rest, "comm=", " pid="))
            if pid not in queued_on:
                queued_on[pid] = (int(f["target_cpu"]), at, name, label(waker_pid, comm))
        elif event == "sched_migrate_task":
            pid = f.get("pid")
            if pid in queued_on:
                old, since, name, waker = queued_on[pid]
                waits[old].append((since, at, name))
                queued_on[pid] = (int(f["dest_cpu"]), at, name, waker)
        elif event == "sched_process_fork":
            if f["child_pid"] in jobs:
                born[f["child_pid"]] = at
        elif event == "sched_switch":
            prev_pid, next_pid = f["prev_pid"], f["next_pid"]
            prev_state = f.get("prev_state", "")
            # It was running, so queued nowhere: a wake-up seen while it
            # ran (or before it slept) queued nothing.
            queued_on.pop(prev_pid, None)
            if prev_pid == "0":
                if cpu in idle_since:
                    idles[cpu].append((idle_since.pop(cpu), at))
            elif prev_state.startswith("R"):
                # Preempted: it waits on this CPU from now on.
                name = label(prev_pid, between(rest, "prev_comm=", " prev_pid="))
                queued_on[prev_pid] = (cpu, at, name, "preempted")
            if prev_state.startswith(("Z", "X")) and prev_pid in born:
                lives.append((born.pop(prev_pid), at))
            if next_pid == "0":
                idle_since[cpu] = at
            else:
                stop_wait(next_pid, at)

    start = min(first for first, _ in seen.values())
    end = max(last for _, last in seen.values())
    print(f"trace: {1e3 * (end - start):.1f} ms")
    longest = {c: max((e - s for s, e, _ in ws), default=0.0) for c, ws in waits.items()}
    for cpu in sorted(seen):
        # Waits on the other CPUs, by start, for a bisect: a wait can only
        # overlap an idle spell if it starts less than the longest wait
        # before the spell.
        others = sorted(
            w
            for c, ws in waits.items()
            if c != cpu
            for w in ws
            if not w[2].startswith("perf") and not PER_CPU_THREAD.match(w[2])
        )
        starts = [w[0] for w in others]
        reach = max((longest[c] for c in waits if c != cpu), default=0.0)
        idle = sum(e - s for s, e in idles[cpu])
        by_name = collections.Counter()
        covered = 0.0
        for s, e in idles[cpu]:
            lo, hi = bisect.bisect_left(starts, s - reach), bisect.bisect_left(starts, e)
            spans = [
                (max(s, ws), min(e, we), n) for ws, we, n in others[lo:hi] if we > s
            ]
            for a, b, n in spans:
                by_name[n] += b - a
            # The union: time of this idle spell with at least one waiter.
            until = s
            for a, b, _ in sorted(spans):
                if b > until:
                    covered += b - max(a, until)
                    until = b
        first, last = seen[cpu]
        top = ", ".join(f"{n} {1e3 * t:.1f}" for n, t in by_name.most_common(5))
        print(
            f"cpu{cpu}: traced {1e3 * (last - first):.1f} ms, idle {1e3 * idle:.1f} ms,"
            f" of which {1e3 * covered:.1f} ms with a task queued on another CPU"
            f" (ms by task, overlapping: {top})"
        )
    woke = ", ".join(f"{n} {c}" for n, c in worker_waits.most_common(6))
    print(f"{worker} waits over {1e3 * LONG_WAIT:.1f} ms: {sum(worker_waits.values())}, woken by: {woke}")

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
        # Each exit, in order, to the first clone after it not taken yet.
        clones = sorted(s for s, _ in lives)
        gaps, j = [], 0
        for end_at in sorted(e for _, e in lives):
            while j < len(clones) and clones[j] < end_at:
                j += 1
            if j == len(clones):
                break
            gaps.append(clones[j] - end_at)
            j += 1
        gaps.sort()
        if gaps:
            q = lambda p: 1e6 * gaps[min(len(gaps) - 1, int(p * len(gaps)))]
            print(
                f"exit to the clone that takes its slot: p10 {q(0.1):.0f}, p50 {q(0.5):.0f},"
                f" p90 {q(0.9):.0f}, mean {1e6 * sum(gaps) / len(gaps):.0f} us"
            )


if __name__ == "__main__":
    main()
