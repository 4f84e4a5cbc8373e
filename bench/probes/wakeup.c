/* What one thread handing work to another costs on this machine, as the
 * manager's event loop and its commit thread do twice a commit: thread A
 * wakes thread B through a futex and sleeps until B wakes it back, 2,000
 * times, each after GAP_US of idle time (so an idle CPU has halted). B
 * sleeps WORK_US in between (0: answers at once). Prints the median and
 * p90 of the round trip. A_CPU and B_CPU pin the threads (-1: where the
 * scheduler puts them); in a VM, waking a halted virtual CPU is an exit to
 * the hypervisor, which a wake on the waker's own CPU does not pay.
 *
 *   cc -O2 -pthread -o /tmp/wakeup bench/probes/wakeup.c
 *   /tmp/wakeup 0 1 1000 0; /tmp/wakeup 0 0 1000 0; /tmp/wakeup -1 -1 1000 0
 */
#define _GNU_SOURCE
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS 2000

static _Atomic int ping, pong;
static int b_cpu = -1, work_us;

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static void futex_wait(_Atomic int *word, int seen) {
    syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, seen, NULL, NULL, 0);
}

static void futex_wake(_Atomic int *word) {
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static void pin(int cpu) {
    if (cpu < 0)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof set, &set);
}

static void sleep_us(int us) {
    struct timespec t = {0, us * 1000L};
    nanosleep(&t, NULL);
}

static void *thread_b(void *unused) {
    (void)unused;
    pin(b_cpu);
    int seen = 0;
    for (;;) {
        while (atomic_load(&ping) == seen)
            futex_wait(&ping, seen);
        seen = atomic_load(&ping);
        if (seen < 0)
            return NULL;
        if (work_us)
            sleep_us(work_us);
        atomic_store(&pong, seen);
        futex_wake(&pong);
    }
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s A_CPU B_CPU GAP_US WORK_US\n", argv[0]);
        return 2;
    }
    int a_cpu = atoi(argv[1]), gap_us = atoi(argv[3]);
    b_cpu = atoi(argv[2]);
    work_us = atoi(argv[4]);
    pin(a_cpu);
    pthread_t b;
    pthread_create(&b, NULL, thread_b, NULL);
    static double took[ROUNDS];
    sleep_us(10000);
    for (int i = 0; i < ROUNDS; i++) {
        sleep_us(gap_us);
        double start = now_us();
        atomic_store(&ping, i + 1);
        futex_wake(&ping);
        while (atomic_load(&pong) != i + 1)
            futex_wait(&pong, i);
        took[i] = now_us() - start;
    }
    qsort(took, ROUNDS, sizeof took[0], by_value);
    printf("A on %d, B on %d, %d us idle, B sleeps %d us: round trip p50 %.1f us, p90 %.1f us\n",
           a_cpu, b_cpu, gap_us, work_us, took[ROUNDS / 2], took[ROUNDS * 9 / 10]);
    atomic_store(&ping, -1);
    futex_wake(&ping);
    pthread_join(b, NULL);
    return 0;
}
