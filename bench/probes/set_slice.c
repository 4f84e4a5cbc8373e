/* Whether a short EEVDF time slice lets aam's threads run before the job
 * they just woke behind: gives every thread of each PID the normal policy
 * (0) or the batch one (3) and a fair-class slice of NS nanoseconds
 * (Linux 6.12+: `sched_attr.sched_runtime` for SCHED_OTHER, clamped to
 * 0.1-100 ms; 0 keeps the default), with SCHED_FLAG_RESET_ON_FORK so that
 * processes they start (the jobs) get the default slice back.
 *
 *   cc -O2 -o /tmp/set_slice bench/probes/set_slice.c
 *   /tmp/set_slice 100000 0 $(pgrep -f aam-worker)    # during `throughput`
 *   grep slice /proc/PID/sched                           # to check
 *
 * Used in BENCHMARKS.md, issue 18's eighteenth session (not kept). */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

struct sched_attr {
    uint32_t size, policy;
    uint64_t flags;
    int32_t nice;
    uint32_t priority;
    uint64_t runtime, deadline, period;
    uint32_t util_min, util_max;
};

#define RESET_ON_FORK 0x01

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s NS POLICY PID...\n", argv[0]);
        return 2;
    }
    uint64_t ns = strtoull(argv[1], 0, 10);
    int policy = atoi(argv[2]), failed = 0;
    for (int i = 3; i < argc; i++) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%s/task", argv[i]);
        DIR *tasks = opendir(path);
        if (!tasks) {
            perror(path);
            failed = 1;
            continue;
        }
        struct dirent *task;
        while ((task = readdir(tasks))) {
            if (task->d_name[0] == '.')
                continue;
            struct sched_attr attr;
            memset(&attr, 0, sizeof attr);
            attr.size = sizeof attr;
            attr.policy = policy;
            attr.flags = RESET_ON_FORK;
            attr.runtime = ns;
            if (syscall(SYS_sched_setattr, atoi(task->d_name), &attr, 0)) {
                perror(task->d_name);
                failed = 1;
            }
        }
        closedir(tasks);
    }
    return failed;
}
