/* What a durable append of the store's log costs on this disk: 2,000
 * appends of 300 bytes (a commit group's frames) to a file written and
 * synced ahead, as aam's log is, each made durable by pwrite + fdatasync
 * (mode 0, what aam does), pwrite on an O_DSYNC file (1), or a pwrite of
 * the whole 4 KiB block on an O_DIRECT | O_DSYNC file (2). Prints the
 * median and p90 of one append. The file is DIR/probe.wal (default: the
 * current directory), removed afterwards.
 *
 *   cc -O2 -o /tmp/log_sync bench/probes/log_sync.c
 *   for r in 1 2 3; do for m in 0 1 2; do /tmp/log_sync $m; done; done
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define APPENDS 2000
#define FRAME 300
#define AHEAD (16 << 20)

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODE(0|1|2) [DIR]\n", argv[0]);
        return 2;
    }
    int mode = atoi(argv[1]);
    char path[4096];
    snprintf(path, sizeof path, "%s/probe.wal", argc > 2 ? argv[2] : ".");
    /* Written and synced ahead: an append then changes no block map. */
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    char *zeros = calloc(1, AHEAD);
    if (fd < 0 || !zeros || write(fd, zeros, AHEAD) != AHEAD || fsync(fd) != 0) {
        perror(path);
        return 1;
    }
    close(fd);
    int flags = O_RDWR | (mode == 1 ? O_DSYNC : 0) | (mode == 2 ? O_DSYNC | O_DIRECT : 0);
    fd = open(path, flags);
    char *block;
    if (fd < 0 || posix_memalign((void **)&block, 4096, 4096) != 0) {
        perror(path);
        return 1;
    }
    memset(block, 'x', 4096);
    double took[APPENDS];
    off_t at = 0;
    for (int i = 0; i < APPENDS; i++) {
        double start = now_us();
        ssize_t n;
        if (mode == 0) {
            n = pwrite(fd, block, FRAME, at);
            if (n == FRAME && fdatasync(fd) != 0) n = -1;
        } else if (mode == 1) {
            n = pwrite(fd, block, FRAME, at);
        } else {
            n = pwrite(fd, block, 4096, at & ~(off_t)4095) == 4096 ? FRAME : -1;
        }
        if (n != FRAME) {
            perror("append");
            return 1;
        }
        took[i] = now_us() - start;
        at += FRAME;
    }
    qsort(took, APPENDS, sizeof took[0], by_value);
    printf("mode %d: p50 %.1f us, p90 %.1f us\n", mode, took[APPENDS / 2], took[APPENDS * 9 / 10]);
    unlink(path);
    return 0;
}
