#!/usr/bin/env python3
"""The `aam` CLI's own time, process start included: `aam up` in a fresh
directory, then each command run N times (default 200) one after another,
its p50 and p90 printed beside /bin/true's (the floor of any process
start on this machine). The figures BENCHMARKS.md gives for issue 18's
point 3 through the CLI.

Given two builds, each gets its own `aam up` and the runs alternate
between them (A B, B A, ...), so both are measured in the same minutes:
on a shared machine only such pairs compare.

    cargo build --release
    bench/cli_latency.py                        # target/release/aam
    N=500 bench/cli_latency.py /tmp/old/aam     # another build
    bench/cli_latency.py /tmp/old/aam target/release/aam   # the two, alternated
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
builds = [os.path.abspath(a) for a in sys.argv[1:]] or [os.path.join(root, "target/release/aam")]
n = int(os.environ.get("N", "200"))
COMMANDS = [["--version"], ["workers"], ["submit", "one.json"], ["submit", "one.json", "--wait"]]


def start(aam, work):
    """`aam up` in `work`, a one-job batch beside it; returns once the
    local worker has registered (before the first timed run)."""
    subprocess.run([aam, "up"], cwd=work, check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(work, "one.json"), "w") as f:
        json.dump({"name": "one", "jobs": [{"name": "j", "command": ["/bin/true"]}]}, f)
    deadline = time.monotonic() + 30
    while b"local" not in subprocess.run([aam, "workers"], cwd=work, capture_output=True).stdout:
        if time.monotonic() > deadline:
            sys.exit(f"{aam}: the local worker did not register within 30 s")
        time.sleep(0.05)


def timed_runs(runs):
    """`runs` is a list of (argv, directory); each is run n times, in turn
    (reversed every other round); returns each one's sorted times in ms."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    actions = [(os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)]
    times = [[] for _ in runs]
    for i in range(n):
        order = range(len(runs)) if i % 2 == 0 else reversed(range(len(runs)))
        for k in order:
            argv, work = runs[k]
            os.chdir(work)
            begin = time.perf_counter()
            pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=actions)
            _, status = os.waitpid(pid, 0)
            times[k].append((time.perf_counter() - begin) * 1000)
            if status != 0:
                sys.exit(f"{' '.join(argv)} exited with status {status}")
    os.close(devnull)
    return [sorted(t) for t in times]


def show(name, t):
    print(f"{name:<60} p50 {t[n // 2]:5.2f} ms   p90 {t[n * 9 // 10]:5.2f} ms   ({n} runs)")


works = [tempfile.mkdtemp(prefix="aam-cli-latency-") for _ in builds]
started = []
try:
    for aam, work in zip(builds, works):
        start(aam, work)
        started.append((aam, work))
    show("/bin/true", timed_runs([(["/bin/true"], works[0])])[0])
    for args in COMMANDS:
        runs = [([aam] + args, work) for aam, work in zip(builds, works)]
        for (argv, _), t in zip(runs, timed_runs(runs)):
            label = "aam " + " ".join(args)
            show(label if len(builds) == 1 else f"{label}  [{argv[0]}]", t)
finally:
    for aam, work in started:
        subprocess.run([aam, "down"], cwd=work, stdout=subprocess.DEVNULL)
    for work in works:
        shutil.rmtree(work, ignore_errors=True)
