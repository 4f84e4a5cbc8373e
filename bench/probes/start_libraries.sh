#!/usr/bin/env bash
# What the libraries a Rust binary loads beside libc cost a process start:
# an empty C program linked with libc only, with libgcc_s too, and with
# libm as well (aam links all three), each started 1,500 times in a row,
# the median printed; three rounds.
#
#   bench/probes/start_libraries.sh
set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo 'int main(void) { return 0; }' > "$work/empty.c"
cc -O2 -o "$work/libc" "$work/empty.c"
cc -O2 -o "$work/libgcc_s" "$work/empty.c" -Wl,--no-as-needed -lgcc_s
cc -O2 -o "$work/libgcc_s+libm" "$work/empty.c" -Wl,--no-as-needed -lgcc_s -lm
python3 - "$work" <<'PY'
import os, sys, time
work = sys.argv[1]
def median(path, n=1500):
    times = []
    for _ in range(n):
        start = time.perf_counter()
        os.waitpid(os.posix_spawn(path, [path], {}), 0)
        times.append((time.perf_counter() - start) * 1000)
    return sorted(times)[n // 2]
for _ in range(3):
    print("   ".join(f"{name} {median(os.path.join(work, name)):.3f} ms"
                     for name in ("libc", "libgcc_s", "libgcc_s+libm")))
PY
