/* kago serve — the admin API's authentication (auth.h): the token file, the bearer check, the limit on
 * failed attempts. Pure but for the token file; unit-tested in tests/unit/test_auth.c. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth.h"
#include "util.h"

static bool blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* A token in path: its first line, trimmed. */
static int token_read(int fd, const char *path, char **token, struct kago_error **err)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return kago_error_set(err, errno, "admin token %s", path);
    if (!S_ISREG(st.st_mode))
        return kago_error_set(err, EINVAL, "admin token %s: not a regular file", path);
    if (st.st_mode & 007)
        return kago_error_set(err, EPERM, "admin token %s: others may access it (mode %04o): chmod 600 it",
                              path, (unsigned)(st.st_mode & 07777));
    char buf[1024];
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    if (n < 0)
        return kago_error_set(err, errno, "admin token %s", path);
    buf[n] = 0;
    char *s = buf, *e = strchr(buf, '\n');
    if (!e)
        e = buf + n;
    while (s < e && blank(*s))
        s++;
    while (e > s && blank(e[-1]))
        e--;
    for (char *p = s; p < e; p++)
        if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f)
            return kago_error_set(err, EINVAL, "admin token %s: blanks or control characters inside", path);
    if (e - s < AUTH_TOKEN_MIN)
        return kago_error_set(err, EINVAL, "admin token %s: too short (%zu characters, want at least %d)",
                              path, (size_t)(e - s), AUTH_TOKEN_MIN);
    *e = 0;
    *token = xstrdup(s);
    explicit_bzero(buf, sizeof(buf));
    return 0;
}

/* Makes a token at path: written whole under path.tmp, then linked into place (a serve that was first
 * keeps its own). Returns 1 made, 0 someone else made it meanwhile, < 0 with *err. */
static int token_make(const char *path, struct kago_error **err)
{
    unsigned char rnd[AUTH_TOKEN_BYTES];
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        return kago_error_set(err, errno, "admin token %s: getrandom", path);
    char hex[2 * AUTH_TOKEN_BYTES + 2];
    for (size_t i = 0; i < sizeof(rnd); i++)
        snprintf(hex + 2 * i, 3, "%02x", rnd[i]);
    explicit_bzero(rnd, sizeof(rnd));
    strcat(hex, "\n");
    cleanup_free char *tmp = xasprintf("%s.tmp", path);
    unlink(tmp); /* left by a serve killed while writing it */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return kago_error_set(err, errno, "admin token %s", tmp);
    size_t len = strlen(hex);
    bool ok = fchmod(fd, 0600) == 0 && write(fd, hex, len) == (ssize_t)len && fsync(fd) == 0;
    int e = errno;
    close(fd);
    explicit_bzero(hex, sizeof(hex));
    int r = 1;
    if (!ok)
        r = kago_error_set(err, e, "admin token %s: write", tmp);
    else if (link(tmp, path) < 0)
        r = errno == EEXIST ? 0 : kago_error_set(err, errno, "admin token %s", path);
    unlink(tmp);
    return r;
}

int kago__auth_token_load(const char *path, char **token, bool *made, struct kago_error **err)
{
    *made = false;
    for (int tries = 0; tries < 2; tries++) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            int r = token_read(fd, path, token, err);
            close(fd);
            return r;
        }
        if (errno != ENOENT)
            return kago_error_set(err, errno, "admin token %s", path);
        int r = token_make(path, err);
        if (r < 0)
            return -1;
        *made = r == 1;
    }
    return kago_error_set(err, ENOENT, "admin token %s", path);
}

bool kago__auth_bearer(const char *head, size_t n, const char **tok, size_t *len)
{
    static const char name[] = "authorization:";
    const char *end = head + n;
    const char *line = memchr(head, '\n', n); /* past the request line */
    while (line && ++line < end) {
        if (*line == '\r' || *line == '\n')
            return false; /* the head's end */
        const char *eol = memchr(line, '\n', end - line);
        if (!eol)
            eol = end;
        if ((size_t)(eol - line) > sizeof(name) - 1 && !strncasecmp(line, name, sizeof(name) - 1)) {
            const char *p = line + sizeof(name) - 1;
            while (p < eol && (*p == ' ' || *p == '\t'))
                p++;
            if (eol - p < 7 || strncasecmp(p, "bearer", 6) || (p[6] != ' ' && p[6] != '\t'))
                return false;
            p += 7;
            while (p < eol && (*p == ' ' || *p == '\t'))
                p++;
            const char *q = p; /* the token: printable ASCII (a control byte or NUL ends it) */
            while (q < eol && (unsigned char)*q > ' ' && (unsigned char)*q < 0x7f)
                q++;
            *tok = p;
            *len = q - p;
            return q > p;
        }
        line = eol < end ? eol : NULL;
    }
    return false;
}

bool kago__auth_token_eq(const char *want, const char *got, size_t len)
{
    size_t n = strlen(want);
    volatile unsigned char d = len != n;
    for (size_t i = 0; i < n; i++)
        d |= (unsigned char)want[i] ^ (unsigned char)(i < len ? got[i] : 0);
    return d == 0;
}

static struct auth_slot *find(const struct auth_limit *l, const char *ip)
{
    for (size_t i = 0; i < AUTH_SLOTS; i++)
        if (l->slot[i].ip[0] && !strcmp(l->slot[i].ip, ip))
            return (struct auth_slot *)&l->slot[i];
    return NULL;
}

uint64_t kago__auth_blocked(const struct auth_limit *l, const char *ip, uint64_t now)
{
    struct auth_slot *s = find(l, ip);
    return s && s->blocked_until > now ? s->blocked_until - now : 0;
}

/* A free slot, else the one of the client that failed least recently and is not blocked, else the one
 * whose block ends first. */
static struct auth_slot *take(struct auth_limit *l, uint64_t now)
{
    struct auth_slot *best = NULL;
    for (size_t i = 0; i < AUTH_SLOTS; i++) {
        struct auth_slot *s = &l->slot[i];
        if (!s->ip[0])
            return s;
        bool blocked = s->blocked_until > now, best_blocked = best && best->blocked_until > now;
        if (!best || (best_blocked && !blocked) ||
            (blocked == best_blocked &&
             (blocked ? s->blocked_until < best->blocked_until : s->last < best->last)))
            best = s;
    }
    return best;
}

bool kago__auth_failed(struct auth_limit *l, const char *ip, uint64_t now)
{
    struct auth_slot *s = find(l, ip);
    if (!s) {
        s = take(l, now);
        *s = (struct auth_slot){0};
        snprintf(s->ip, sizeof(s->ip), "%s", ip);
    }
    if (s->blocked_until > now)
        return false;
    if (s->fails == 0 || now - s->since >= AUTH_WINDOW_MS) {
        s->fails = 0;
        s->since = now;
    }
    s->last = now;
    if (++s->fails < AUTH_MAX_FAILS)
        return false;
    s->blocked_until = now + AUTH_BLOCK_MS;
    s->fails = 0;
    return true;
}

void kago__auth_ok(struct auth_limit *l, const char *ip)
{
    struct auth_slot *s = find(l, ip);
    if (s)
        s->fails = 0;
}
