#define _GNU_SOURCE
/* A minimal fast HTTP/1.1 upstream for bench/serve-hot: epoll, keep-alive, a fixed 1 KiB body.
 * Listens on 127.0.0.1:PORT (argv[1]), or on fd 3 when LISTEN_FDS=1 (socket activation); with argv[2],
 * on that unix socket path too (bench/serve-loops: nginx reaches an instance's process there). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    static char resp[2048];
    char body[1024];
    memset(body, 'k', sizeof(body));
    int hl =
        snprintf(resp, sizeof(resp),
                 "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n\r\n", sizeof(body));
    memcpy(resp + hl, body, sizeof(body));
    int rlen = hl + (int)sizeof(body);
    int ls;
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
    int us = -1;
    if (argc > 2) {
        struct sockaddr_un su = {.sun_family = AF_UNIX};
        snprintf(su.sun_path, sizeof(su.sun_path), "%s", argv[2]);
        unlink(argv[2]);
        us = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (bind(us, (struct sockaddr *)&su, sizeof(su)) < 0 || listen(us, 4096) < 0) {
            perror("listen unix");
            return 1;
        }
        chmod(argv[2], 0666);
    }
    fcntl(ls, F_SETFL, fcntl(ls, F_GETFL) | O_NONBLOCK); /* the accept loop drains until EAGAIN */
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    if (us >= 0) {
        struct epoll_event uev = {.events = EPOLLIN, .data.fd = us};
        epoll_ctl(ep, EPOLL_CTL_ADD, us, &uev);
    }
    struct epoll_event evs[256];
    char buf[16384];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == ls || fd == us) {
                int c;
                while ((c = accept4(fd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    int one = 1;
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                    struct epoll_event ce = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce);
                }
                continue;
            }
            ssize_t r = read(fd, buf, sizeof(buf));
            if (r <= 0) {
                close(fd);
                continue;
            }
            /* one response per request head in the read (pipelining-safe for GETs) */
            int reqs = 0;
            for (ssize_t k = 3; k < r; k++)
                if (buf[k] == '\n' && buf[k - 1] == '\r' && buf[k - 2] == '\n' && buf[k - 3] == '\r')
                    reqs++;
            for (int k = 0; k < reqs; k++)
                if (write(fd, resp, rlen) < 0)
                    break;
        }
    }
}
