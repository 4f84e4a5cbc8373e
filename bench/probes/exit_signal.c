/* Whether a job's leader could end without sending the worker a SIGCHLD:
 * a vfork-style clone with CLONE_PIDFD and exit signal 0 (its end watched
 * through the pidfd alone), the child exiting at once or after execve of
 * /bin/true. Prints whether a SIGCHLD came in each case. On Linux 6.18 it
 * does after the exec: execve gives the child the exit signal SIGCHLD
 * again (the kernel resets it when a process changes execution domain), so
 * a job's end always signals its worker (sixteenth session of issue 18).
 *
 *   cc -O2 -o /tmp/exit_signal bench/probes/exit_signal.c && /tmp/exit_signal
 */
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/wait.h>

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x1000
#endif

static volatile sig_atomic_t signals;
static char stack[64 * 1024];

static void count(int sig) {
    (void)sig;
    signals++;
}

static int child(void *exec) {
    if (exec) {
        char *argv[] = {"/bin/true", NULL};
        execv("/bin/true", argv);
    }
    _exit(0);
}

static void once(int exec) {
    signals = 0;
    int pidfd = -1;
    int pid = clone(child, stack + sizeof stack, CLONE_VM | CLONE_VFORK | CLONE_PIDFD,
                    exec ? (void *)1 : NULL, &pidfd);
    if (pid < 0) {
        perror("clone");
        return;
    }
    int status;
    /* __WALL: a child with no exit signal counts as a "clone" child. */
    waitpid(pid, &status, __WALL);
    usleep(10000); /* a signal sent at the exit has arrived by now */
    printf("%-24s pidfd %s, SIGCHLD %s\n", exec ? "exec of /bin/true:" : "exit without exec:",
           pidfd >= 0 ? "given" : "none", signals ? "sent" : "not sent");
}

int main(void) {
    signal(SIGCHLD, count);
    once(0);
    once(1);
    return 0;
}
