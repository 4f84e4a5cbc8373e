/* Whether one thread starting every job holds a runner back: N spawns of
 * /bin/true, two at a time, either from two threads that each spawn and
 * wait in turn (2, as the throughput bench's raw peer does) or from one
 * thread that keeps two running, starting the next as soon as `wait`
 * returns any (1, as aam-worker's event loop does with its slots). Both
 * use posix_spawn (glibc: a vfork-style clone). Prints jobs per second.
 *
 *   cc -O2 -o /tmp/one_spawner bench/probes/one_spawner.c -lpthread
 *   for r in 1 2 3; do /tmp/one_spawner 2 6000; /tmp/one_spawner 1 6000; done
 */
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>

extern char **environ;
static int jobs;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static pid_t spawn_true(void) {
    pid_t pid;
    char *argv[] = {"/bin/true", NULL};
    if (posix_spawn(&pid, "/bin/true", NULL, NULL, argv, environ) != 0) {
        perror("posix_spawn");
        exit(1);
    }
    return pid;
}

static void *spawn_and_wait(void *unused) {
    (void)unused;
    for (int i = 0; i < jobs / 2; i++) {
        int status;
        waitpid(spawn_true(), &status, 0);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3 || (argv[1][0] != '1' && argv[1][0] != '2')) {
        fprintf(stderr, "usage: %s 1|2 JOBS\n", argv[0]);
        return 2;
    }
    jobs = atoi(argv[2]);
    double start = now();
    if (argv[1][0] == '1') {
        int started = 2, ended = 0, status;
        spawn_true();
        spawn_true();
        while (ended < jobs) {
            wait(&status);
            ended++;
            if (started < jobs) {
                spawn_true();
                started++;
            }
        }
    } else {
        pthread_t a, b;
        pthread_create(&a, NULL, spawn_and_wait, NULL);
        pthread_create(&b, NULL, spawn_and_wait, NULL);
        pthread_join(a, NULL);
        pthread_join(b, NULL);
    }
    printf("%s: %.0f jobs/s\n", argv[1][0] == '1' ? "one thread, two running" : "two threads",
           jobs / (now() - start));
    return 0;
}
