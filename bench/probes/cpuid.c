/* What the `cpuid` instruction costs a process start on this machine. A
 * hypervisor may trap every `cpuid`, and the dynamic loader runs dozens
 * while it picks its string functions and reads the cache sizes, in every
 * process it starts: a job's `/bin/true` as much as aam's CLI.
 *
 *   cc -O2 -o /tmp/cpuid bench/probes/cpuid.c
 *   /tmp/cpuid                        # the cost of one cpuid, by leaf
 *   /tmp/cpuid /bin/true              # how many a start runs, and where
 *   /tmp/cpuid target/release/aam --version
 *
 * Given a program, it runs it under ptrace one instruction at a time (slow:
 * seconds for /bin/true, a minute for aam) and counts the `cpuid`s
 * (0F A2) it executes, each counted by the mapping it sits in. One thread
 * only: the program's other threads are not followed.
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static void cost(void) {
    const unsigned leaves[] = {0, 1, 4, 7, 0xd, 0x80000000, 0x80000001, 0x8000001d};
    for (size_t l = 0; l < sizeof leaves / sizeof *leaves; l++) {
        unsigned a, b, c, d;
        double start = now_us();
        for (int i = 0; i < 1000; i++)
            __cpuid_count(leaves[l], 0, a, b, c, d);
        printf("cpuid leaf %#x: %.2f us each\n", leaves[l], (now_us() - start) / 1000);
    }
}

/* The path of the mapping of `pid` that holds `addr`, into `out`. */
static void mapping_of(pid_t pid, unsigned long addr, char *out, size_t size) {
    char path[64], line[512];
    snprintf(path, sizeof path, "/proc/%d/maps", pid);
    snprintf(out, size, "?");
    FILE *maps = fopen(path, "r");
    if (!maps)
        return;
    while (fgets(line, sizeof line, maps)) {
        unsigned long lo, hi;
        int name = 0;
        if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %n", &lo, &hi, &name) >= 2 && addr >= lo &&
            addr < hi) {
            line[strcspn(line, "\n")] = 0;
            snprintf(out, size, "%s", name ? line + name : "?");
            break;
        }
    }
    fclose(maps);
}

static int count(char **argv) {
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 1;
    }
    if (pid == 0) {
        ptrace(PTRACE_TRACEME, 0, 0, 0);
        execv(argv[0], argv);
        perror("execv");
        _exit(127);
    }
    char where[64][256];
    long counts[64] = {0}, steps = 0, total = 0;
    int places = 0, status;
    waitpid(pid, &status, 0);
    while (WIFSTOPPED(status)) {
        struct user_regs_struct regs;
        ptrace(PTRACE_GETREGS, pid, 0, &regs);
        long word = ptrace(PTRACE_PEEKTEXT, pid, regs.rip, 0);
        if ((word & 0xffff) == 0xa20f) {
            char name[256];
            mapping_of(pid, regs.rip, name, sizeof name);
            int k = 0;
            while (k < places && strcmp(where[k], name) != 0)
                k++;
            if (k == places && places < 64)
                snprintf(where[places++], sizeof where[0], "%s", name);
            if (k < 64)
                counts[k]++;
            total++;
        }
        steps++;
        if (ptrace(PTRACE_SINGLESTEP, pid, 0, 0) < 0 || waitpid(pid, &status, 0) < 0)
            break;
    }
    printf("%s: %ld instructions, %ld cpuid\n", argv[0], steps, total);
    for (int k = 0; k < places; k++)
        printf("  %5ld in %s\n", counts[k], where[k]);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        cost();
        return 0;
    }
    return count(argv + 1);
}
