/* What the worker's small per-job syscalls cost on this machine, each
 * repeated 200,000 times in a loop (warm caches: a lower bound): opening
 * and closing /dev/null (a job's stdin), tokio's checks of a pipe end it
 * is given (`fstat` and `F_GETFL`), a trivial syscall (`pread` of zero
 * bytes from a pipe, as cheap as a syscall gets), and `getpid`.
 *
 *   cc -O2 -o /tmp/job_syscalls bench/probes/job_syscalls.c && /tmp/job_syscalls
 *
 * Used in BENCHMARKS.md, issue 18's eighteenth session. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define N 200000

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

int main(void) {
    int pipe_fds[2];
    if (pipe2(pipe_fds, O_CLOEXEC)) {
        perror("pipe2");
        return 1;
    }
    double t0 = now_us();
    for (int i = 0; i < N; i++) {
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        close(fd);
    }
    double t1 = now_us();
    struct stat st;
    for (int i = 0; i < N; i++) {
        fstat(pipe_fds[0], &st);
        fcntl(pipe_fds[0], F_GETFL);
    }
    double t2 = now_us();
    char byte;
    for (int i = 0; i < N; i++)
        if (pread(pipe_fds[0], &byte, 0, 0) > 0)
            return 1;
    double t3 = now_us();
    for (int i = 0; i < N; i++)
        getpid();
    double t4 = now_us();
    printf("open + close /dev/null %.2f us; fstat + F_GETFL %.2f us; a trivial syscall %.2f us; "
           "getpid %.2f us\n",
           (t1 - t0) / N, (t2 - t1) / N, (t3 - t2) / N, (t4 - t3) / N);
    return 0;
}
