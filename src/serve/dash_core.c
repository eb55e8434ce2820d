/* kago serve — the dashboard's pure part: latency quantiles, sample rings, sessions, request parsing. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "dash.h"
#include "../lib/util.h"

unsigned kago__dash_lat_bucket(double ms)
{
    if (!(ms > DASH_LAT_MIN_MS))
        return 0;
    double b = ceil(2 * log2(ms / DASH_LAT_MIN_MS) - 1e-9); /* (a bound itself is in its bucket) */
    return b >= DASH_LAT_BUCKETS - 1 ? DASH_LAT_BUCKETS - 1 : (unsigned)b;
}

double kago__dash_lat_bound(unsigned b)
{
    return DASH_LAT_MIN_MS * pow(2, b / 2.0);
}

double kago__dash_lat_quantile(const struct dash_lat *h, double q)
{
    uint64_t total = 0, cum = 0;
    for (unsigned i = 0; i < DASH_LAT_BUCKETS; i++)
        total += h->n[i];
    if (!total)
        return 0;
    uint64_t want = (uint64_t)ceil(q * total);
    if (!want)
        want = 1;
    for (unsigned i = 0; i < DASH_LAT_BUCKETS; i++) {
        cum += h->n[i];
        if (cum >= want)
            return kago__dash_lat_bound(i);
    }
    return kago__dash_lat_bound(DASH_LAT_BUCKETS - 1);
}

void kago__dash_ring_push(struct dash_ring *r, const struct dash_sample *s)
{
    if (r->n == r->cap && r->cap < DASH_SLOTS) { /* full, never overwritten: s[0] is the oldest */
        r->cap = r->cap ? (r->cap * 2 < DASH_SLOTS ? r->cap * 2 : DASH_SLOTS) : 8;
        r->s = xrealloc(r->s, r->cap * sizeof(*r->s));
        r->head = r->n;
    }
    r->s[r->head] = *s;
    r->head = (r->head + 1) % r->cap;
    if (r->n < r->cap)
        r->n++;
}

const struct dash_sample *kago__dash_ring_at(const struct dash_ring *r, unsigned k)
{
    return &r->s[(r->head + r->cap - r->n + k) % r->cap];
}

void kago__dash_ring_free(struct dash_ring *r)
{
    free(r->s);
    *r = (struct dash_ring){0};
}

void kago__dash_srv_ring_push(struct dash_srv_ring *r, const struct dash_srv_sample *s)
{
    r->s[r->head] = *s;
    r->head = (r->head + 1) % DASH_SLOTS;
    if (r->n < DASH_SLOTS)
        r->n++;
}

const struct dash_srv_sample *kago__dash_srv_ring_at(const struct dash_srv_ring *r, unsigned k)
{
    return &r->s[(r->head + DASH_SLOTS - r->n + k) % DASH_SLOTS];
}

static bool random_hex(char *out, size_t nhex)
{
    unsigned char raw[DASH_ID_HEX / 2];
    size_t n = nhex / 2;
    if (n > sizeof(raw) || getrandom(raw, n, 0) != (ssize_t)n)
        return false;
    for (size_t i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", raw[i]);
    out[nhex] = 0;
    return true;
}

struct dash_session *kago__dash_session_new(struct dash_sessions *t, uint64_t now)
{
    struct dash_session *s = &t->s[0];
    for (unsigned i = 0; i < DASH_SESSIONS; i++) {
        struct dash_session *x = &t->s[i];
        if (!x->id[0] || now - x->last_ms >= DASH_SESSION_MS) {
            s = x;
            break;
        }
        if (x->last_ms < s->last_ms)
            s = x;
    }
    if (!random_hex(s->id, DASH_ID_HEX) || !random_hex(s->csrf, DASH_ID_HEX)) {
        kago__dash_session_end(s);
        return NULL;
    }
    s->last_ms = now;
    return s;
}

static bool eq_const(const char *want, const char *got, size_t n)
{
    size_t wl = strlen(want);
    unsigned char d = wl != n;
    for (size_t i = 0; i < wl; i++)
        d |= (unsigned char)want[i] ^ (unsigned char)(i < n ? got[i] : 0);
    return d == 0;
}

struct dash_session *kago__dash_session_find(struct dash_sessions *t, const char *id, size_t n, uint64_t now)
{
    if (n != DASH_ID_HEX)
        return NULL;
    for (unsigned i = 0; i < DASH_SESSIONS; i++) {
        struct dash_session *s = &t->s[i];
        if (s->id[0] && eq_const(s->id, id, n)) {
            if (now - s->last_ms >= DASH_SESSION_MS) {
                kago__dash_session_end(s);
                return NULL;
            }
            s->last_ms = now;
            return s;
        }
    }
    return NULL;
}

void kago__dash_session_end(struct dash_session *s)
{
    memset(s, 0, sizeof(*s));
}

/* The next header line of the head: [*line, *eol); false at the empty line or the end. */
static bool next_line(const char **p, const char *end, const char **line, const char **eol)
{
    const char *nl = memchr(*p, '\n', end - *p);
    if (!nl)
        return false;
    *line = *p;
    *eol = nl > *p && nl[-1] == '\r' ? nl - 1 : nl;
    *p = nl + 1;
    return *eol > *line;
}

static const char *header_value(const char *line, const char *eol, const char *name)
{
    size_t k = strlen(name);
    if ((size_t)(eol - line) <= k || strncasecmp(line, name, k) || line[k] != ':')
        return NULL;
    const char *v = line + k + 1;
    while (v < eol && (*v == ' ' || *v == '\t'))
        v++;
    return v;
}

bool kago__dash_header(const char *head, size_t n, const char *name, const char **v, size_t *len)
{
    const char *p = head, *end = head + n, *line, *eol;
    const char *first = memchr(p, '\n', n); /* (the request line) */
    if (!first)
        return false;
    p = first + 1;
    while (next_line(&p, end, &line, &eol)) {
        const char *val = header_value(line, eol, name);
        if (val) {
            const char *e = eol;
            while (e > val && (e[-1] == ' ' || e[-1] == '\t'))
                e--;
            *v = val;
            *len = e - val;
            return true;
        }
    }
    return false;
}

bool kago__dash_cookie(const char *head, size_t n, const char *name, const char **v, size_t *len)
{
    const char *p = head, *end = head + n, *line, *eol;
    const char *first = memchr(p, '\n', n);
    if (!first)
        return false;
    p = first + 1;
    size_t k = strlen(name);
    while (next_line(&p, end, &line, &eol)) {
        const char *c = header_value(line, eol, "Cookie");
        while (c && c < eol) { /* name=value; name=value */
            while (c < eol && (*c == ' ' || *c == ';'))
                c++;
            const char *e = memchr(c, ';', eol - c);
            if (!e)
                e = eol;
            if ((size_t)(e - c) > k && !strncmp(c, name, k) && c[k] == '=') {
                *v = c + k + 1;
                *len = e - *v;
                return true;
            }
            c = e;
        }
    }
    return false;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

bool kago__dash_param(const char *path, const char *name, char *out, size_t cap)
{
    const char *q = strchr(path, '?');
    size_t k = strlen(name);
    while (q) {
        q++;
        const char *e = strchr(q, '&');
        if (!e)
            e = q + strlen(q);
        if ((size_t)(e - q) >= k && !strncmp(q, name, k) && (q[k] == '=' || q + k == e)) {
            if (!out)
                return true;
            size_t o = 0;
            for (const char *c = q[k] == '=' ? q + k + 1 : e; c < e; c++) {
                if (o + 1 >= cap)
                    return false;
                if (*c == '%' && e - c > 2 && hexval(c[1]) >= 0 && hexval(c[2]) >= 0) {
                    out[o] = (char)(hexval(c[1]) * 16 + hexval(c[2]));
                    if (!out[o++]) /* (%00: "web%00x" must not name web) */
                        return false;
                    c += 2;
                } else {
                    out[o++] = *c == '+' ? ' ' : *c;
                }
            }
            out[o] = 0;
            return true;
        }
        q = *e ? e : NULL;
    }
    return false;
}
