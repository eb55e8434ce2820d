/* The admin API of a running `kago serve`, for kago ps and kago reload: over TCP ("IP:PORT", with the
 * bearer token of --admin-token FILE, default ROOT/.serve/.admin-token) or over a unix socket
 * ("unix:PATH": no token, the socket's mode is the check). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli.h"
#include "serve.h"

void cli_admin_init(struct cli_admin *a, struct cli *g)
{
    *a = (struct cli_admin){.root = g->root};
}

/* No --admin: the address the serve of a->root wrote at its start (KAGO_SERVE_ADMIN_ADDR: the address, then
 * serve's pid), else the default. 0, or -1 with the error printed: the serve that wrote it is gone (then
 * nothing is sent there: whoever listens on that address now would be sent the token). */
static int admin_addr_find(struct cli_admin *a, const char *verb)
{
    if (a->addr)
        return 0;
    a->addr = "127.0.0.1:9090";
    char *path = NULL;
    if (asprintf(&path, "%s/%s", a->root, KAGO_SERVE_ADMIN_ADDR) < 0)
        abort();
    FILE *f = fopen(path, "re");
    int pid = 0, ret = 0;
    if (f && fgets(a->addr_buf, sizeof a->addr_buf, f) && strchr(a->addr_buf, '\n')) {
        a->addr_buf[strcspn(a->addr_buf, "\r\n")] = '\0';
        if (fscanf(f, "%d", &pid) != 1 || pid <= 0 || (kill(pid, 0) < 0 && errno == ESRCH))
            ret = cli_errorf("%s: no kago serve runs with root %s: the one that wrote %s (pid %d) is gone "
                             "(--root DIR of a running serve, or --admin IP:PORT|unix:PATH)",
                             verb, a->root, path, pid);
        else if (!strcmp(a->addr_buf, "off"))
            ret = cli_errorf("%s: the kago serve of root %s (pid %d) runs without an admin API (--admin off)",
                             verb, a->root, pid);
        else if (a->addr_buf[0]) {
            a->addr = a->addr_buf;
            a->addr_from = path;
            path = NULL;
        }
    }
    if (f)
        fclose(f);
    free(path);
    return ret ? -1 : 0;
}

int cli_admin_option(struct cli_admin *a, int argc, char **argv, int *i)
{
    static const struct {
        const char *name;
        size_t off;
    } opts[] = {
        {"--admin", offsetof(struct cli_admin, addr)},
        {"--admin-token", offsetof(struct cli_admin, token_file)},
        {"--root", offsetof(struct cli_admin, root)},
    };
    for (size_t k = 0; k < sizeof(opts) / sizeof(opts[0]); k++) {
        const char **dst = (const char **)((char *)a + opts[k].off);
        size_t n = strlen(opts[k].name);
        if (!strcmp(argv[*i], opts[k].name)) {
            if (*i + 1 >= argc)
                return -1;
            *dst = argv[++*i];
            return 1;
        }
        if (!strncmp(argv[*i], opts[k].name, n) && argv[*i][n] == '=') {
            *dst = argv[*i] + n + 1;
            return 1;
        }
    }
    return 0;
}

/* A connected socket to addr ("IP:PORT", "[IPv6]:PORT" or "unix:PATH"), or -1 with the error printed (from:
 * the file the address came from, or NULL). */
static int admin_connect(const char *verb, const char *addr, const char *from)
{
    struct sockaddr_storage ss = {0};
    socklen_t len;
    if (!strncmp(addr, "unix:", 5)) {
        struct sockaddr_un *su = (struct sockaddr_un *)&ss;
        su->sun_family = AF_UNIX;
        if (strlen(addr + 5) >= sizeof(su->sun_path) || !addr[5])
            return cli_errorf("%s: bad admin address \"%s\" (want unix:PATH)", verb, addr), -1;
        strcpy(su->sun_path, addr + 5);
        len = sizeof(*su);
    } else {
        char host[64];
        const char *colon = strrchr(addr, ':'), *h = addr;
        size_t hlen = colon ? (size_t)(colon - addr) : 0;
        if (hlen >= 2 && h[0] == '[' && h[hlen - 1] == ']') {
            h++;
            hlen -= 2;
        }
        if (!colon || hlen >= sizeof(host))
            return cli_errorf("%s: bad admin address \"%s\" (want IP:PORT or unix:PATH)", verb, addr), -1;
        memcpy(host, h, hlen);
        host[hlen] = 0;
        uint16_t port = htons((uint16_t)atoi(colon + 1));
        struct sockaddr_in *sa = (struct sockaddr_in *)&ss;
        struct sockaddr_in6 *sa6 = (struct sockaddr_in6 *)&ss;
        if (inet_pton(AF_INET, host, &sa->sin_addr) == 1) {
            sa->sin_family = AF_INET;
            sa->sin_port = port;
            len = sizeof(*sa);
        } else if (inet_pton(AF_INET6, host, &sa6->sin6_addr) == 1) {
            sa6->sin6_family = AF_INET6;
            sa6->sin6_port = port;
            len = sizeof(*sa6);
        } else {
            return cli_errorf("%s: bad admin address \"%s\"", verb, addr), -1;
        }
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&ss, len) < 0) {
        int e = errno;
        if (from)
            cli_errorf("%s: connect to kago serve's admin listener %s (from %s): %s: is that serve running? "
                       "(--root DIR: another serve's state; --admin IP:PORT|unix:PATH)",
                       verb, addr, from, strerror(e));
        else
            cli_errorf("%s: connect to kago serve's admin listener %s: %s", verb, addr, strerror(e));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* The token for a TCP admin listener, from its file (NULL when there is none: *why says why). */
static char *read_token(const struct cli_admin *a, char **path, const char **why)
{
    *path = a->token_file ? strdup(a->token_file) : NULL;
    if (!*path && asprintf(path, "%s/%s", a->root, KAGO_SERVE_ADMIN_TOKEN) < 0)
        abort();
    FILE *f = fopen(*path, "re");
    if (!f) {
        *why = strerror(errno);
        return NULL;
    }
    char buf[1024] = "";
    if (!fgets(buf, sizeof(buf), f))
        buf[0] = 0;
    fclose(f);
    char *s = buf, *e = buf + strcspn(buf, "\r\n");
    while (*s == ' ' || *s == '\t')
        s++;
    while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    *e = 0;
    if (!*s) {
        *why = "it is empty";
        return NULL;
    }
    return strdup(s);
}

/* Sends the request, reads the whole answer (the server closes); NULL with the error printed. */
static char *exchange(const char *verb, const char *addr, int fd, const char *req)
{
    size_t n = strlen(req);
    if (write(fd, req, n) != (ssize_t)n) {
        cli_errorf("%s: write to %s: %s", verb, addr, strerror(errno));
        return NULL;
    }
    size_t len = 0, cap = 65536;
    char *buf = malloc(cap);
    ssize_t r;
    while (buf && (r = read(fd, buf + len, cap - len - 1)) > 0) {
        len += r;
        if (len + 1 == cap)
            buf = realloc(buf, cap *= 2);
    }
    if (!buf)
        abort();
    buf[len] = 0;
    return buf;
}

char *cli_admin_call(struct cli_admin *a, const char *verb, const char *method, const char *path)
{
    if (admin_addr_find(a, verb) < 0)
        return NULL;
    bool tcp = strncmp(a->addr, "unix:", 5) != 0;
    char *tpath = NULL, *token = NULL, *req = NULL;
    const char *why = NULL;
    if (tcp)
        token = read_token(a, &tpath, &why);
    int fd = admin_connect(verb, a->addr, a->addr_from);
    char *buf = NULL, *body = NULL;
    if (fd < 0)
        goto out;
    if (asprintf(&req,
                 "%s %s HTTP/1.1\r\nHost: kago\r\nX-Kago-CSRF: 1\r\n%s%s%sContent-Length: 0\r\nConnection: "
                 "close\r\n\r\n",
                 method, path, token ? "Authorization: Bearer " : "", token ? token : "",
                 token ? "\r\n" : "") < 0)
        abort();
    buf = exchange(verb, a->addr, fd, req);
    close(fd);
    if (!buf)
        goto out;
    int status = 0;
    char *end = strstr(buf, "\r\n\r\n");
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1 || !end) {
        cli_errorf("%s: unexpected answer from %s", verb, a->addr);
    } else if (status == 401) {
        if (token)
            cli_errorf("%s: %s refused the token in %s (401): is it the file of the serve listening there? "
                       "(--admin-token FILE)",
                       verb, a->addr, tpath);
        else
            cli_errorf("%s: %s wants a bearer token (401) and the token file %s cannot be read: %s "
                       "(--admin-token FILE, or --root of the serve)",
                       verb, a->addr, tpath, why ? why : "?");
    } else if (status == 429) {
        cli_errorf("%s: %s: too many failed attempts from this address lately (429): try again in a minute",
                   verb, a->addr);
    } else if (status / 100 != 2) {
        end[strcspn(end + 4, "\n") + 4] = 0;
        cli_errorf("%s: %s answered %d: %s", verb, a->addr, status, end + 4);
    } else {
        body = strdup(end + 4);
    }
out:
    if (token)
        explicit_bzero(token, strlen(token));
    if (req)
        explicit_bzero(req, strlen(req));
    free(token);
    free(tpath);
    free(req);
    free(buf);
    free(a->addr_from);
    a->addr_from = NULL;
    return body;
}
