#!/usr/bin/env python3
"""The `aam` CLI's own time, process start included: `aam up` in a fresh
directory, then each command run N times (default 200) one after another,
its p50 and p90 printed beside /bin/true's (the floor of any process
start on this machine). The figures BENCHMARKS.md gives for issue 18's
point 3 through the CLI.

    cargo build --release
    bench/cli_latency.py                      # target/release/aam
    N=500 bench/cli_latency.py /tmp/old/aam   # another build
"""
import json
import os
import subprocess
import sys
import tempfile
import time

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
aam = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "target/release/aam"))
n = int(os.environ.get("N", "200"))


def timed(argv):
    devnull = os.open(os.devnull, os.O_WRONLY)
    actions = [(os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)]
    times = []
    for _ in range(n):
        start = time.perf_counter()
        pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=actions)
        _, status = os.waitpid(pid, 0)
        times.append((time.perf_counter() - start) * 1000)
        if status != 0:
            sys.exit(f"{' '.join(argv)} exited with status {status}")
    os.close(devnull)
    times.sort()
    return times[n // 2], times[n * 9 // 10]


with tempfile.TemporaryDirectory() as work:
    os.chdir(work)
    subprocess.run([aam, "up"], check=True, stdout=subprocess.DEVNULL)
    try:
        with open("one.json", "w") as f:
            json.dump({"name": "one", "jobs": [{"name": "j", "command": ["/bin/true"]}]}, f)
        # The local worker must have registered before the first timed run.
        deadline = time.monotonic() + 30
        while b"local" not in subprocess.run([aam, "workers"], capture_output=True).stdout:
            if time.monotonic() > deadline:
                sys.exit("the local worker did not register within 30 s")
            time.sleep(0.05)
        for argv in (["/bin/true"], [aam, "--version"], [aam, "workers"],
                     [aam, "submit", "one.json"], [aam, "submit", "one.json", "--wait"]):
            p50, p90 = timed(argv)
            name = "/bin/true" if len(argv) == 1 else "aam " + " ".join(argv[1:])
            print(f"{name:<32} p50 {p50:5.2f} ms   p90 {p90:5.2f} ms   ({n} runs)")
    finally:
        subprocess.run([aam, "down"], stdout=subprocess.DEVNULL)
