/* What a job's cgroup costs its start: fork + exec of /bin/true N times,
 * the child either left where it is (0), moving itself into a cgroup v2
 * by writing "0" to its cgroup.procs, as aam-worker's leaders do (1), or
 * born there with clone3's CLONE_INTO_CGROUP (2). Prints wall time and
 * the children's CPU per spawn. Root, and a cgroup v2 hierarchy at CG
 * (default /sys/fs/cgroup/unified, this VM's hybrid layout; use
 * /sys/fs/cgroup on a pure v2 host).
 *
 *   cc -O2 -o /tmp/spawn_cgroup bench/probes/spawn_cgroup.c
 *   for r in 1 2 3 4; do for m in 1 2; do /tmp/spawn_cgroup $m 4000; done; done
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static double cpu(const struct rusage *r) {
    return r->ru_utime.tv_sec + r->ru_stime.tv_sec +
           (r->ru_utime.tv_usec + r->ru_stime.tv_usec) / 1e6;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODE(0|1|2) N\n", argv[0]);
        return 2;
    }
    int mode = atoi(argv[1]), n = atoi(argv[2]);
    const char *root = getenv("CG") ? getenv("CG") : "/sys/fs/cgroup/unified";
    char dir[512], procs[600];
    snprintf(dir, sizeof dir, "%s/aam-spawn-probe", root);
    snprintf(procs, sizeof procs, "%s/cgroup.procs", dir);
    mkdir(dir, 0755);
    int dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int procs_fd = open(procs, O_WRONLY | O_CLOEXEC);
    if (dir_fd < 0 || procs_fd < 0) {
        perror(dir);
        return 1;
    }
    char *child_argv[] = {"/bin/true", NULL}, *child_env[] = {NULL};
    struct rusage before, after;
    getrusage(RUSAGE_CHILDREN, &before);
    double start = now();
    for (int i = 0; i < n; i++) {
        pid_t pid;
        if (mode == 2) {
            struct clone_args args;
            memset(&args, 0, sizeof args);
            args.flags = CLONE_INTO_CGROUP;
            args.exit_signal = SIGCHLD;
            args.cgroup = dir_fd;
            pid = syscall(SYS_clone3, &args, sizeof args);
        } else {
            pid = fork();
        }
        if (pid < 0) {
            perror("clone");
            return 1;
        }
        if (pid == 0) {
            if (mode == 1 && write(procs_fd, "0", 1) != 1)
                _exit(126);
            execve(child_argv[0], child_argv, child_env);
            _exit(127);
        }
        int status;
        waitpid(pid, &status, 0);
        if (status != 0) {
            fprintf(stderr, "child status %d\n", status);
            return 1;
        }
    }
    double wall = now() - start;
    getrusage(RUSAGE_CHILDREN, &after);
    printf("mode %d: %.1f us wall a spawn, children's CPU %.1f us\n", mode,
           wall / n * 1e6, (cpu(&after) - cpu(&before)) / n * 1e6);
    rmdir(dir);
    return 0;
}
