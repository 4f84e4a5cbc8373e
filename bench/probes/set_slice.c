/* Whether a short EEVDF time slice lets aam's threads run before the job
 * they just woke behind: gives every thread of each PID the normal policy
 * (0) or the batch one (3) and a fair-class slice of NS nanoseconds
 * (Linux 6.12+: `sched_attr.sched_runtime` for SCHED_OTHER, clamped to
 * 0.1-100 ms; 0 puts the default back), keeping each thread's nice value,
 * with SCHED_FLAG_RESET_ON_FORK so that what they start afterwards (the
 * jobs, and new threads) gets the default slice. Threads made after the
 * call are not changed.
 *
 *   cc -O2 -o /tmp/set_slice bench/probes/set_slice.c
 *   /tmp/set_slice 100000 0 $(pgrep -f aam-worker)    # during `throughput`
 *   grep slice /proc/PID/sched                           # to check
 *
 * Used in BENCHMARKS.md, issue 18's eighteenth session (not kept). */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The kernel's `struct sched_attr`, SCHED_ATTR_SIZE_VER1. */
struct sched_attr {
    uint32_t size, policy;
    uint64_t flags;
    int32_t nice;
    uint32_t priority;
    uint64_t runtime, deadline, period;
    uint32_t util_min, util_max;
};
_Static_assert(sizeof(struct sched_attr) == 56, "SCHED_ATTR_SIZE_VER1");

#define RESET_ON_FORK 0x01

static int number(const char *text, unsigned long long *out) {
    char *end;
    errno = 0;
    *out = strtoull(text, &end, 10);
    return errno == 0 && end != text && *end == '\0';
}

int main(int argc, char **argv) {
    unsigned long long ns, policy;
    if (argc < 4 || !number(argv[1], &ns) || !number(argv[2], &policy) ||
        (policy != 0 && policy != 3)) {
        fprintf(stderr, "usage: %s NS POLICY(0|3) PID...\n", argv[0]);
        return 2;
    }
    int failed = 0;
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
            int tid = atoi(task->d_name);
            struct sched_attr attr;
            memset(&attr, 0, sizeof attr);
            /* Its nice value is kept: sched_setattr sets the one given. */
            if (syscall(SYS_sched_getattr, tid, &attr, sizeof attr, 0)) {
                perror(task->d_name);
                failed = 1;
                continue;
            }
            attr.size = sizeof attr;
            attr.policy = (uint32_t)policy;
            attr.flags = RESET_ON_FORK;
            attr.priority = 0;
            attr.runtime = ns;
            attr.deadline = attr.period = 0;
            if (syscall(SYS_sched_setattr, tid, &attr, 0)) {
                perror(task->d_name);
                failed = 1;
            }
        }
        closedir(tasks);
    }
    return failed;
}
