#define _GNU_SOURCE
/* A CPU-bound HTTP/1.1 upstream for scale up (bench/serve-scaleup, tests/integration/test_serve_scaleup.py):
 * WORKERS processes (argv[2], default 4) accept on one socket, and each request spins for WORK_US of CPU
 * (argv[3], default 5000; "?us=N" in the request line overrides it), so its throughput follows the CPU the
 * cgroup lets it have. GET /alloc?mb=N instead touches N MiB more and keeps them (a memory-hungry app).
 * Listens on 127.0.0.1:PORT (argv[1]), or on fd 3 when LISTEN_FDS=1 (socket activation). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long work_us = 5000;
static size_t held_mb;

static long long cpu_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1000000ll + ts.tv_nsec / 1000;
}

/* Spins until this process has used us of CPU (wall time stretches when the cgroup is throttled). */
static unsigned long spin(long us)
{
    volatile unsigned long x = 0;
    long long end = cpu_now_us() + us;
    while (cpu_now_us() < end)
        for (int i = 0; i < 2000; i++)
            x += (unsigned long)i * 2654435761u;
    return x;
}

static int answer(int c, const char *req)
{
    char body[128], resp[512];
    const char *p = strstr(req, "mb=");
    if (!strncmp(req, "GET /alloc", 10) && p) {
        size_t mb = strtoul(p + 3, NULL, 10);
        for (size_t i = 0; i < mb; i++) { /* kept: the process grows */
            char *m = malloc(1 << 20);
            if (!m)
                break;
            memset(m, 1, 1 << 20);
        }
        held_mb += mb;
        snprintf(body, sizeof body, "held %zu MiB\n", held_mb);
    } else {
        long us = (p = strstr(req, "us=")) ? strtol(p + 3, NULL, 10) : work_us;
        snprintf(body, sizeof body, "spun %ld us (%lu)\n", us, spin(us) & 7);
    }
    int n = snprintf(resp, sizeof resp,
                     "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n\r\n%s",
                     strlen(body), body);
    return write(c, resp, (size_t)n) == n ? 0 : -1;
}

static void serve_conn(int c)
{
    char buf[8192];
    size_t len = 0;
    for (;;) {
        ssize_t n = read(c, buf + len, sizeof buf - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = '\0';
        char *end;
        while ((end = strstr(buf, "\r\n\r\n"))) { /* requests without bodies */
            *end = '\0';
            if (answer(c, buf) < 0)
                goto out;
            size_t used = (size_t)(end + 4 - buf);
            memmove(buf, end + 4, len - used + 1);
            len -= used;
        }
        if (len == sizeof buf - 1)
            break;
    }
out:
    close(c);
}

int main(int argc, char **argv)
{
    int ls, workers = argc > 2 ? atoi(argv[2]) : 4;
    if (argc > 3)
        work_us = atol(argv[3]);
    const char *lf = getenv("LISTEN_FDS");
    if (lf && atoi(lf) == 1) {
        ls = 3;
    } else {
        ls = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        struct sockaddr_in sa = {.sin_family = AF_INET,
                                 .sin_port = htons(argc > 1 ? atoi(argv[1]) : 8080),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        if (bind(ls, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(ls, 4096) < 0) {
            perror("listen");
            return 1;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    for (int w = 1; w < workers; w++) /* the parent is a worker too */
        if (fork() == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL); /* the app's stop ends its workers too */
            break;
        }
    for (;;) { /* one connection at a time per worker: WORKERS connections in parallel */
        int c = accept(ls, NULL, NULL);
        if (c < 0)
            continue;
        int one = 1;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        serve_conn(c);
    }
}
