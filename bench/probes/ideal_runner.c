/* The best a runner with aam's per-job guarantees could do on this
 * machine: N jobs of /bin/true, two at a time, started by one event loop
 * in one process (no manager, no protocol, no TLS, no Rust), each feature
 * of aam's job start and end added by a letter, beside the throughput
 * bench's raw peer measured in the same run. What the letters add is what
 * aam-worker and aam-manager do for every short job:
 *
 *   -  one event loop: vfork-style start (vfork, as posix_spawn), a pidfd
 *      in epoll, waitid on it, the next job started at once
 *   g  the leader's guards before its exec: its own process group,
 *      PR_SET_PDEATHSIG, every signal blocked across the vfork
 *   c  the leader moves itself into a job cgroup (two kept and reused, as
 *      aam-worker's spare ones) by writing to its cgroup.procs; the end
 *      reads cgroup.events, as the worker asks whether anything is left
 *   p  stdin opened on /dev/null, stdout and stderr pipes read in the same
 *      epoll until their end of file, as the worker streams a job's output
 *   d  every end appended to a log that a second thread makes durable
 *      (write + fdatasync, all ends waiting in one group), as the manager
 *      commits each end before it is acknowledged; the run ends when the
 *      last end is durable
 *   F  the job started by clone3 as a copy of the runner (CLONE_VFORK
 *      without CLONE_VM: cheap for this small process, not for a big one)
 *   C  F, and the job born in its cgroup (CLONE_INTO_CGROUP) instead of
 *      moving itself there as with `c`
 *   V  the job started as with `-` (sharing the runner's memory until its
 *      exec) but born in its cgroup: clone3 with CLONE_VM, CLONE_VFORK
 *      and CLONE_INTO_CGROUP on a stack of its own (x86_64)
 *   m  with d: the ends are made durable by a second process instead,
 *      reached over loopback TCP, which acknowledges each group, as
 *      aam-worker sends its ends to aam-manager (the manager's CPU is
 *      its own figure, not in the runner's); the run ends at the last
 *      acknowledgement
 *   l  one job at a time (one slot), as the latency bench: with `dm`, a
 *      submission record is made durable and acknowledged before the job
 *      starts, and its end after it; prints the p50 and p99 of a job's
 *      time from its submission to its end's acknowledgement
 *
 *   cc -O2 -o /tmp/ideal_runner bench/probes/ideal_runner.c -lpthread
 *   cd /work && for r in 1 2 3; do for m in raw - gcp gcpd gcpdm; do /tmp/ideal_runner $m 6000; done; done
 *   cd /work && for r in 1 2 3; do for m in l gcpVl gcpVdml; do /tmp/ideal_runner $m 400; done; done
 *
 * The log is written in the current directory (put it on the disk the
 * manager's store would use); the cgroups under CG (default
 * /sys/fs/cgroup/unified, this VM's hybrid layout). Root for `c`, `C`
 * and `V`. A failure removes the probe's cgroups and log before it exits.
 * Used in BENCHMARKS.md, issue 18's nineteenth session. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <linux/sched.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SLOTS 2

extern char **environ;

static int jobs, guards, cgroups, born_in, forked, vm_into, pipes, durable, remote, one_at_a_time;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static double cpu(const struct rusage *r) {
    return r->ru_utime.tv_sec + r->ru_stime.tv_sec +
           (r->ru_utime.tv_usec + r->ru_stime.tv_usec) / 1e6;
}

static void die(const char *what) {
    perror(what);
    exit(1); /* the atexit clean-up (`clean_up`) runs */
}

/* The raw peer: two threads that each posix_spawn /bin/true and wait for
 * it, as the throughput bench's `raw_spawn` (Rust's `Command::status`). */
static void *spawn_and_wait(void *unused) {
    (void)unused;
    char *argv[] = {"/bin/true", NULL};
    for (int i = 0; i < jobs / 2; i++) {
        pid_t pid;
        int status;
        if (posix_spawn(&pid, "/bin/true", NULL, NULL, argv, environ) != 0)
            die("posix_spawn");
        waitpid(pid, &status, 0);
    }
    return NULL;
}

/* The commit thread's side of `d`: ends waiting to be made durable. */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t log_wake = PTHREAD_COND_INITIALIZER;
static char pending[1 << 16];
static size_t pending_len;
static int log_fd, ends_logged, ends_durable, groups;

static void *commit_loop(void *unused) {
    (void)unused;
    static char batch[sizeof pending];
    pthread_mutex_lock(&log_lock);
    while (ends_durable < jobs) {
        while (pending_len == 0)
            pthread_cond_wait(&log_wake, &log_lock);
        size_t len = pending_len;
        int ends = ends_logged;
        memcpy(batch, pending, len);
        pending_len = 0;
        pthread_mutex_unlock(&log_lock);
        if (write(log_fd, batch, len) != (ssize_t)len || fdatasync(log_fd) != 0)
            die("log");
        groups++;
        pthread_mutex_lock(&log_lock);
        ends_durable = ends;
    }
    pthread_mutex_unlock(&log_lock);
    return NULL;
}

static void log_end(int job, int status) {
    pthread_mutex_lock(&log_lock);
    int len = snprintf(pending + pending_len, sizeof pending - pending_len,
                       "job %d attempt 1 exit %d\n", job, status);
    if (len <= 0 || (size_t)len >= sizeof pending - pending_len)
        die("log buffer");
    pending_len += len;
    ends_logged++;
    pthread_cond_signal(&log_wake);
    pthread_mutex_unlock(&log_lock);
}

/* `m`: the ends go to a second process over loopback TCP, which makes
 * them durable (read what has come, write, fdatasync) and answers each
 * group with one acknowledgement, as aam-manager commits a worker's ends
 * and acknowledges them. One thread: ends that come during an fdatasync
 * wait in the socket and make the next group. */
static int manager_sock, acked;

static void manager_loop(int sock) {
    char buf[1 << 16];
    int ends = 0, made = 0;
    for (;;) {
        ssize_t got = read(sock, buf, sizeof buf);
        if (got <= 0)
            _exit(got == 0 ? 0 : 1);
        int these = 0;
        for (ssize_t i = 0; i < got; i++)
            these += buf[i] == '\n';
        if (write(log_fd, buf, got) != got || fdatasync(log_fd) != 0)
            _exit(1);
        ends += these;
        made++;
        char ack[48];
        int len = snprintf(ack, sizeof ack, "ack %d %d\n", ends, made);
        if (write(sock, ack, len) != len)
            _exit(1);
    }
}

static pid_t start_manager(void) {
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    if (listener < 0 || bind(listener, (struct sockaddr *)&addr, len) ||
        listen(listener, 1) || getsockname(listener, (struct sockaddr *)&addr, &len))
        die("listen");
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        int sock = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
        if (sock < 0 || setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one))
            _exit(1);
        manager_loop(sock);
    }
    close(listener);
    manager_sock = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (manager_sock < 0 || connect(manager_sock, (struct sockaddr *)&addr, len) ||
        setsockopt(manager_sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one))
        die("connect");
    return pid;
}

static void send_record(const char *what, int job, int status) {
    char record[64];
    int len = snprintf(record, sizeof record, "%s job %d attempt 1 exit %d\n", what, job, status);
    if (write(manager_sock, record, len) != len)
        die("send");
}

/* Reads the acknowledgements that have come: the last says how many. */
static void read_acks(void) {
    /* A line may come in two reads: the part after the last newline is
     * kept for the next. */
    static char buf[4096];
    static size_t kept;
    ssize_t got = read(manager_sock, buf + kept, sizeof buf - 1 - kept);
    if (got <= 0)
        die("read ack");
    kept += got;
    buf[kept] = 0;
    char *line = buf, *end;
    while ((end = strchr(line, '\n')) != NULL) {
        if (sscanf(line, "ack %d %d", &acked, &groups) != 2)
            die("ack");
        line = end + 1;
    }
    kept = strlen(line);
    memmove(buf, line, kept);
}

/* A slot: its job's process and what is still open of it. */
struct slot {
    int job, pidfd, out, err, open;
    int dir, procs, events; /* its cgroup's directory and files, for `c` and `C` */
};

/* What an epoll event points at: the slot and which of its fds. */
#define KIND_PID 0
#define KIND_OUT 1
#define KIND_ERR 2
#define KIND_ACK 3
static uint64_t tag(int slot, int kind) { return (uint64_t)slot << 8 | kind; }

static int epfd, dev_null_flags = O_RDONLY | O_CLOEXEC;
static struct slot slots[SLOTS];
static char *child_argv[] = {"/bin/true", NULL};

static void watch(int fd, uint64_t what) {
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = what};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
        die("epoll_ctl");
}

/* What the child between its start and its exec reads: set by `start`
 * before each start (the vfork-style child borrows this memory). */
static int child_in, child_out[2], child_err[2];
static sigset_t child_mask;

/* The child borrows our memory until it execs: syscalls only. */
static int child_main(void *arg) {
    struct slot *s = arg;
    if (guards) {
        if (setpgid(0, 0) || prctl(PR_SET_PDEATHSIG, SIGKILL))
            _exit(126);
    }
    if (cgroups && !born_in && write(s->procs, "0", 1) != 1)
        _exit(126);
    if (pipes && (dup2(child_in, 0) < 0 || dup2(child_out[1], 1) < 0 || dup2(child_err[1], 2) < 0))
        _exit(126);
    if (guards)
        pthread_sigmask(SIG_SETMASK, &child_mask, NULL);
    execve(child_argv[0], child_argv, environ);
    _exit(127);
}

/* `V`: clone3 with CLONE_VM | CLONE_VFORK on a stack of its own, born in
 * the slot's cgroup; the child calls `child_main` on that stack (glibc's
 * `clone` does the same for the old clone syscall, which cannot take a
 * cgroup). x86_64 only. */
static pid_t clone3_vm_into(struct slot *s) {
    static char *stack;
    const size_t stack_size = 64 * 1024;
    if (!stack && !(stack = aligned_alloc(4096, stack_size)))
        die("stack");
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_VM | CLONE_VFORK | CLONE_INTO_CGROUP;
    args.exit_signal = SIGCHLD;
    args.stack = (uint64_t)(uintptr_t)stack;
    args.stack_size = stack_size;
    args.cgroup = s->dir;
#ifdef __x86_64__
    long ret;
    register void *fn asm("r12") = (void *)child_main;
    register void *fn_arg asm("r13") = s;
    asm volatile("syscall\n\t"
                 "test %%rax, %%rax\n\t"
                 "jnz 1f\n\t"
                 "mov %%r13, %%rdi\n\t"
                 "call *%%r12\n\t"
                 "mov $127, %%edi\n\t"
                 "mov $60, %%eax\n\t"
                 "syscall\n\t"
                 "1:"
                 : "=a"(ret)
                 : "0"((long)SYS_clone3), "D"(&args), "S"(sizeof args), "r"(fn), "r"(fn_arg)
                 : "rcx", "r11", "memory");
    if (ret < 0) {
        errno = -ret;
        return -1;
    }
    return ret;
#else
    (void)s;
    fprintf(stderr, "V: x86_64 only\n");
    exit(2);
#endif
}

static void start(int i, int job) {
    struct slot *s = &slots[i];
    if (pipes) {
        child_in = open("/dev/null", dev_null_flags);
        if (child_in < 0 || pipe2(child_out, O_CLOEXEC) || pipe2(child_err, O_CLOEXEC))
            die("pipes");
    }
    sigset_t all, old;
    if (guards) {
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        child_mask = old;
    }
    pid_t pid;
    if (vm_into) {
        pid = clone3_vm_into(s);
    } else if (forked) {
        struct clone_args args;
        memset(&args, 0, sizeof args);
        args.flags = CLONE_VFORK | (born_in ? CLONE_INTO_CGROUP : 0);
        args.exit_signal = SIGCHLD;
        args.cgroup = s->dir;
        pid = syscall(SYS_clone3, &args, sizeof args);
        if (pid == 0)
            child_main(s);
    } else {
        pid = vfork();
        if (pid == 0)
            child_main(s);
    }
    if (guards)
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pid < 0)
        die(vm_into ? "clone3" : forked ? "clone3 (a copy)" : "vfork");
    s->job = job;
    s->pidfd = syscall(SYS_pidfd_open, pid, 0);
    if (s->pidfd < 0)
        die("pidfd_open");
    watch(s->pidfd, tag(i, KIND_PID));
    s->open = 1;
    if (pipes) {
        close(child_in);
        close(child_out[1]);
        close(child_err[1]);
        s->out = child_out[0];
        s->err = child_err[0];
        watch(s->out, tag(i, KIND_OUT));
        watch(s->err, tag(i, KIND_ERR));
        s->open = 3;
    }
}

/* The slot's job is over (exited, output at its end): its end recorded. */
static void finish(int i, int status) {
    struct slot *s = &slots[i];
    if (cgroups) {
        char buf[128];
        if (pread(s->events, buf, sizeof buf, 0) <= 0)
            die("cgroup.events");
    }
    if (remote)
        send_record("end", s->job, status);
    else if (durable)
        log_end(s->job, status);
}

/* One event of a slot's job (its pidfd or a pipe): the slot, if its job
 * is over with it (exited, its output at its end), else -1. */
static int on_job_event(uint64_t what, int status[SLOTS]) {
    int i = what >> 8, kind = what & 0xff;
    struct slot *s = &slots[i];
    if (kind == KIND_PID) {
        siginfo_t info;
        memset(&info, 0, sizeof info);
        if (waitid(P_PIDFD, s->pidfd, &info, WEXITED) != 0)
            die("waitid");
        status[i] = info.si_status;
        epoll_ctl(epfd, EPOLL_CTL_DEL, s->pidfd, NULL);
        close(s->pidfd);
    } else {
        int fd = kind == KIND_OUT ? s->out : s->err;
        char buf[4096];
        ssize_t got = read(fd, buf, sizeof buf);
        if (got > 0)
            return -1;
        epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
        close(fd);
    }
    return --s->open == 0 ? i : -1;
}

static void run_loop(void) {
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        die("epoll_create1");
    int started = 0, ended = 0, status[SLOTS] = {0};
    for (int i = 0; i < SLOTS && started < jobs; i++)
        start(i, started++);
    if (remote)
        watch(manager_sock, KIND_ACK);
    while (ended < jobs || (remote && acked < jobs)) {
        struct epoll_event evs[8];
        int n = epoll_wait(epfd, evs, 8, -1);
        if (n < 0)
            die("epoll_wait");
        for (int e = 0; e < n; e++) {
            if ((evs[e].data.u64 & 0xff) == KIND_ACK) {
                read_acks();
                continue;
            }
            int i = on_job_event(evs[e].data.u64, status);
            if (i < 0)
                continue;
            finish(i, status[i]);
            ended++;
            if (started < jobs)
                start(i, started++);
        }
    }
}

/* `l`: one job at a time, as the latency bench: with `dm`, a submission
 * record made durable (and acknowledged) before the job starts and its
 * end after it, as aam commits a session before it runs its job; each
 * job's time from the submission to the end's acknowledgement. */
static double *latencies;

static void run_one_at_a_time(void) {
    epfd = epoll_create1(EPOLL_CLOEXEC);
    latencies = calloc(jobs, sizeof *latencies);
    if (epfd < 0 || !latencies)
        die("setup");
    int status[SLOTS] = {0};
    for (int k = 0; k < jobs; k++) {
        double t = now();
        if (remote) {
            send_record("submit", k, 0);
            while (acked < 2 * k + 1)
                read_acks();
        }
        start(0, k);
        int over = -1;
        while (over < 0) {
            struct epoll_event ev;
            int n = epoll_wait(epfd, &ev, 1, -1);
            if (n < 0)
                die("epoll_wait");
            if (n == 1)
                over = on_job_event(ev.data.u64, status);
        }
        finish(0, status[0]);
        if (remote)
            while (acked < 2 * k + 2)
                read_acks();
        latencies[k] = now() - t;
    }
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* What the probe made, removed when it exits however (atexit): its job
 * cgroups (empty by then, but after a failure) and its log. */
static const char *made_root, *made_log;
static int made_cgroups;

static void clean_up(void) {
    for (int i = 0; i < made_cgroups; i++) {
        char dir[512];
        snprintf(dir, sizeof dir, "%s/aam-ideal-runner-%d", made_root, i);
        if (rmdir(dir) != 0)
            fprintf(stderr, "cannot remove %s: %s\n", dir, strerror(errno));
    }
    if (made_log)
        unlink(made_log);
}

static void open_cgroups(const char *root) {
    for (int i = 0; i < SLOTS; i++) {
        char dir[512], file[600];
        snprintf(dir, sizeof dir, "%s/aam-ideal-runner-%d", root, i);
        if (mkdir(dir, 0755) != 0 && errno != EEXIST)
            die(dir);
        made_root = root;
        made_cgroups = i + 1;
        snprintf(file, sizeof file, "%s/cgroup.procs", dir);
        slots[i].dir = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        slots[i].procs = open(file, O_WRONLY | O_CLOEXEC);
        snprintf(file, sizeof file, "%s/cgroup.events", dir);
        slots[i].events = open(file, O_RDONLY | O_CLOEXEC);
        if (slots[i].dir < 0 || slots[i].procs < 0 || slots[i].events < 0)
            die(file);
    }
}

int main(int argc, char **argv) {
    if (argc != 3 || (strcmp(argv[1], "raw") != 0 &&
                      (strspn(argv[1], "-gcpdmFCVl") != strlen(argv[1]) ||
                       (strchr(argv[1], 'm') && !strchr(argv[1], 'd')) ||
                       (strchr(argv[1], 'l') && strchr(argv[1], 'd') && !strchr(argv[1], 'm'))))) {
        fprintf(stderr, "usage: %s raw|-|[gcpdFCVml]... JOBS (m only with d; l with d only with m)\n", argv[0]);
        return 2;
    }
    jobs = atoi(argv[2]);
    if (jobs < SLOTS || jobs % 2) {
        fprintf(stderr, "JOBS: an even number of at least %d\n", SLOTS);
        return 2;
    }
    const char *mode = argv[1];
    int raw = strcmp(mode, "raw") == 0;
    guards = !raw && strchr(mode, 'g');
    vm_into = !raw && strchr(mode, 'V');
    born_in = !raw && (strchr(mode, 'C') || vm_into);
    cgroups = !raw && (strchr(mode, 'c') || born_in);
    forked = !raw && (strchr(mode, 'F') || (born_in && !vm_into));
    pipes = !raw && strchr(mode, 'p');
    durable = !raw && strchr(mode, 'd');
    remote = !raw && strchr(mode, 'm');
    one_at_a_time = !raw && strchr(mode, 'l');
    const char *root = getenv("CG") ? getenv("CG") : "/sys/fs/cgroup/unified";
    atexit(clean_up);
    if (cgroups)
        open_cgroups(root);
    const char *log_name = "ideal_runner.log";
    pthread_t committer;
    pid_t manager = 0;
    if (durable) {
        log_fd = open(log_name, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
        if (log_fd < 0)
            die(log_name);
        made_log = log_name;
        if (remote)
            manager = start_manager();
        else
            pthread_create(&committer, NULL, commit_loop, NULL);
    }
    struct rusage self0, self1, kids0, kids1;
    getrusage(RUSAGE_SELF, &self0);
    getrusage(RUSAGE_CHILDREN, &kids0);
    double t0 = now();
    if (raw) {
        pthread_t a, b;
        pthread_create(&a, NULL, spawn_and_wait, NULL);
        pthread_create(&b, NULL, spawn_and_wait, NULL);
        pthread_join(a, NULL);
        pthread_join(b, NULL);
    } else if (one_at_a_time) {
        run_one_at_a_time();
    } else {
        run_loop();
        if (durable && !remote)
            pthread_join(committer, NULL);
    }
    double wall = now() - t0;
    getrusage(RUSAGE_SELF, &self1);
    getrusage(RUSAGE_CHILDREN, &kids1);
    if (one_at_a_time) {
        qsort(latencies, jobs, sizeof *latencies, by_value);
        printf("%-6s p50 %.3f ms, p99 %.3f ms a job, one at a time; ", mode,
               latencies[jobs / 2] * 1e3, latencies[jobs * 99 / 100] * 1e3);
    }
    printf("%-6s %5.0f jobs/s, runner CPU %5.1f us a job, jobs' %5.1f us", mode, jobs / wall,
           (cpu(&self1) - cpu(&self0)) / jobs * 1e6, (cpu(&kids1) - cpu(&kids0)) / jobs * 1e6);
    if (remote) {
        struct rusage ru;
        int status;
        close(manager_sock);
        if (wait4(manager, &status, 0, &ru) != manager || status != 0)
            die("manager");
        printf(", manager's %5.1f us", cpu(&ru) / jobs * 1e6);
    }
    if (durable)
        printf(", %.1f %s a commit", (one_at_a_time ? 2.0 : 1.0) * jobs / groups,
               one_at_a_time ? "records" : "ends");
    printf("\n");
    return 0;
}
