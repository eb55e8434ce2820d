/* kago serve — HTTP heads on llhttp. llhttp already refuses Content-Length with
 * Transfer-Encoding, duplicate or malformed Content-Length, non-final chunked and bad chunk
 * sizes; this file adds what llhttp 8 lets through (obs-fold, whitespace before the colon,
 * duplicate Host) and the size limits. */
#include "http.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

static struct http_msg *msg_of(llhttp_t *p)
{
    return p->data;
}

static int fail(struct http_msg *m, int status, const char *reason)
{
    m->error = status;
    m->error_reason = reason;
    llhttp_set_error_reason(&m->parser, reason);
    return HPE_USER;
}

static int append(struct http_msg *m, const char *at, size_t n)
{
    if (m->raw.len + n > HTTP_MAX_HEAD)
        return fail(m, 431, "header section too large");
    sbuf_add(&m->raw, at, n);
    return 0;
}

static int on_begin(llhttp_t *p)
{
    kago__http_msg_clear(msg_of(p));
    msg_of(p)->begun = true;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
    struct http_msg *m = msg_of(p);
    if (m->url_len == 0)
        m->url = m->raw.len;
    m->url_len += n;
    return append(m, at, n);
}

/* Trailer fields (after a chunked body) are not kept: raw, into which the head's offsets and the request's
 * Host point, must not grow once the head is complete. They count against the head's limit. */
static int trailer(struct http_msg *m, size_t n)
{
    m->trailer_len += n;
    return m->trailer_len > HTTP_MAX_HEAD ? fail(m, 431, "trailer section too large") : 0;
}

static int on_field(llhttp_t *p, const char *at, size_t n)
{
    struct http_msg *m = msg_of(p);
    if (m->head_done)
        return trailer(m, n);
    if (m->last != 1) {
        if (m->nhdr == HTTP_MAX_HEADERS)
            return fail(m, 431, "too many header fields");
        if (m->nhdr == m->hdr_cap) { /* 16, 32, 64, 100: a typical head fits the first */
            m->hdr_cap = m->hdr_cap ? m->hdr_cap * 2 : 16;
            if (m->hdr_cap > HTTP_MAX_HEADERS)
                m->hdr_cap = HTTP_MAX_HEADERS;
            m->hdr = realloc(m->hdr, m->hdr_cap * sizeof(*m->hdr));
            if (!m->hdr)
                abort(); /* out of memory (this file stands alone in the fuzzers: no xrealloc) */
        }
        m->hdr[m->nhdr++] = (struct http_hdr){.name = m->raw.len};
        m->last = 1;
    }
    m->hdr[m->nhdr - 1].name_len += n;
    return append(m, at, n);
}

/* RFC 9110 tchar: anything else in a field name (notably "Host : x") is an attempt to make two
 * parsers disagree. */
static bool is_token(const char *s, size_t n)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c && strchr(extra, c))))
            return false;
    }
    return true;
}

static int on_field_done(llhttp_t *p)
{
    struct http_msg *m = msg_of(p);
    if (m->head_done)
        return 0;
    struct http_hdr *h = &m->hdr[m->nhdr - 1];
    if (!is_token(m->raw.data + h->name, h->name_len))
        return fail(m, 400, "invalid header field name");
    h->value = m->raw.len;
    m->last = 2;
    m->value_at_end = false;
    return 0;
}

/* The last byte before at that is not a space or a tab (across reads: kago__http_execute keeps the last
 * one of the previous buffer). */
static char byte_before(const struct http_msg *m, const char *at)
{
    while (at > m->exec_begin && (at[-1] == ' ' || at[-1] == '\t'))
        at--;
    return at > m->exec_begin ? at[-1] : m->prev_byte;
}

static int on_value(llhttp_t *p, const char *at, size_t n)
{
    struct http_msg *m = msg_of(p);
    if (m->head_done)
        return trailer(m, n);
    struct http_hdr *h = &m->hdr[m->nhdr - 1];
    /* llhttp 8 accepts obs-fold and delivers the continuation line as a second span of the same
     * value. A value legitimately comes in two spans only when it straddles two reads: the first
     * ends at the end of one buffer and the second starts at the beginning of the next. A value
     * whose first line is empty ("Host:\r\n a") comes in one span, after a line break. */
    if (m->last != 2 || (h->value_len && !(m->value_at_end && at == m->exec_begin)) ||
        (!h->value_len && n && byte_before(m, at) == '\n')) /* (an empty value: an empty span there) */
        return fail(m, 400, "obsolete line folding");
    m->value_at_end = at + n == m->exec_end;
    h->value_len += n;
    return append(m, at, n);
}

static int on_value_done(llhttp_t *p)
{
    struct http_msg *m = msg_of(p);
    if (m->head_done)
        return 0;
    struct http_hdr *h = &m->hdr[m->nhdr - 1];
    /* llhttp hands over the value with trailing whitespace; trim it so comparisons are exact. */
    while (h->value_len && (m->raw.data[h->value + h->value_len - 1] == ' ' ||
                            m->raw.data[h->value + h->value_len - 1] == '\t'))
        h->value_len--;
    m->last = 3;
    return 0;
}

static int on_head(llhttp_t *p)
{
    struct http_msg *m = msg_of(p);
    m->head_done = true;
    return m->cbs->head ? m->cbs->head(m) : 0;
}

/* Whether the CRLF that must end a chunk's data is there (from *q on, due bytes of it). llhttp 8 (Debian
 * 12's) skips the two bytes after the data whatever they are, unless built in its strict mode, which also
 * refuses raw UTF-8 in a target; nginx refuses them ("invalid chunked body"): a proxy in front that reads
 * them otherwise would see other requests than the ones kago passes on. */
static int check_crlf(struct http_msg *m, const char *q)
{
    for (; m->crlf_due && q < m->exec_end; q++, m->crlf_due--)
        if (*q != (m->crlf_due == 2 ? '\r' : '\n'))
            return fail(m, 400, "chunk data not followed by CRLF");
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    struct http_msg *m = msg_of(p);
    m->body_bytes += n;
    if ((p->flags & F_CHUNKED) && p->content_length == 0) { /* (the chunk's data is whole) */
        m->crlf_due = 2;
        if (check_crlf(m, at + n))
            return HPE_USER;
    }
    return m->cbs->body ? m->cbs->body(m, at, n) : 0;
}

static int on_done(llhttp_t *p)
{
    struct http_msg *m = msg_of(p);
    return m->cbs->done ? m->cbs->done(m) : 0;
}

static llhttp_settings_t settings;
static pthread_once_t settings_once = PTHREAD_ONCE_INIT; /* (--threads: any request loop may be first) */

static void settings_init(void)
{
    llhttp_settings_init(&settings);
    settings.on_message_begin = on_begin;
    settings.on_url = on_url;
    settings.on_header_field = on_field;
    settings.on_header_field_complete = on_field_done;
    settings.on_header_value = on_value;
    settings.on_header_value_complete = on_value_done;
    settings.on_headers_complete = on_head;
    settings.on_body = on_body;
    settings.on_message_complete = on_done;
}

void kago__http_msg_init(struct http_msg *m, llhttp_type_t type, const struct http_msg_cbs *cbs, void *owner)
{
    pthread_once(&settings_once, settings_init);
    llhttp_init(&m->parser, type, &settings);
    m->parser.data = m;
    m->cbs = cbs;
    m->owner = owner;
    kago__http_msg_clear(m);
}

void kago__http_msg_clear(struct http_msg *m)
{
    m->raw.len = 0;
    m->url = m->url_len = 0;
    m->nhdr = 0;
    m->last = 0;
    m->error = 0;
    m->error_reason = NULL;
    m->begun = m->head_done = false;
    m->head_wire = m->trailer_len = 0;
    m->crlf_due = 0;
    m->body_wire = m->body_bytes = 0;
}

void kago__http_msg_free(struct http_msg *m)
{
    sbuf_free(&m->raw);
    free(m->hdr);
    m->hdr = NULL;
    m->hdr_cap = 0;
}

llhttp_errno_t kago__http_execute(struct http_msg *m, const char *data, size_t len, size_t *used)
{
    m->exec_begin = data;
    m->exec_end = data + len;
    if (m->crlf_due && check_crlf(m, data)) {
        *used = 0;
        return HPE_USER;
    }
    bool in_head = m->begun && !m->head_done, in_body = m->begun && m->head_done;
    llhttp_errno_t e = llhttp_execute(&m->parser, data, len);
    for (const char *q = data + len; !m->head_done && q > data; q--) /* (only a head's next read needs it) */
        if (q[-1] != ' ' && q[-1] != '\t') {
            m->prev_byte = q[-1];
            break;
        }
    /* The head's bytes on the wire, whitespace included (raw keeps only what it names), over the reads
     * that began inside it: a head padded with megabytes of spaces is refused as a long one is. */
    if (e == HPE_OK && in_head && !m->head_done && (m->head_wire += len) > 2 * HTTP_MAX_HEAD) {
        fail(m, 431, "header section too large");
        *used = len;
        return HPE_USER;
    }
    /* A chunked body's framing (sizes, their leading zeros, extensions, which are not kept) costs the
     * parser as the body does but reaches no one, so nothing slows it: an app sending endless
     * extensions held a loop's CPU. It may be 16 times the data and 128 KiB more (one-byte chunks are
     * 6 times), over the reads that began inside the body. */
    if (e == HPE_OK && in_body && m->head_done &&
        (m->body_wire += len) > 16 * m->body_bytes + HTTP_MAX_FRAMING) {
        fail(m, 400, "chunk framing too large for its data");
        *used = len;
        return HPE_USER;
    }
    if (e == HPE_OK) {
        *used = len;
        return e;
    }
    const char *pos = llhttp_get_error_pos(&m->parser);
    *used = pos && pos >= data && pos <= data + len ? (size_t)(pos - data) : len;
    if (e != HPE_PAUSED && e != HPE_PAUSED_UPGRADE && !m->error) {
        m->error = 400;
        m->error_reason = llhttp_get_error_reason(&m->parser);
    }
    return e;
}

static bool name_is(const struct http_msg *m, const struct http_hdr *h, const char *name, size_t n)
{
    return h->name_len == n && strncasecmp(m->raw.data + h->name, name, n) == 0;
}

unsigned kago__http_find(const struct http_msg *m, const char *name, const char **value, uint32_t *len)
{
    size_t n = strlen(name);
    unsigned count = 0;
    for (unsigned i = 0; i < m->nhdr; i++) {
        const struct http_hdr *h = &m->hdr[i];
        if (!name_is(m, h, name, n))
            continue;
        if (count++ == 0 && value) {
            *value = m->raw.data + h->value;
            *len = h->value_len;
        }
    }
    return count;
}

/* RFC 3986 reg-name: unreserved, sub-delims and pct-encoded; an IP literal: hex digits, ':' and '.'. */
static bool host_char(unsigned char c, bool literal)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '.')
        return true;
    return c && strchr(literal ? ":[]" : "-_~!$&'()*+,;=%", c);
}

size_t kago__http_host_key(const char *host, size_t len, char *out, size_t outsz)
{
    size_t end = len;
    bool literal = len && host[0] == '[';
    if (literal) {
        const char *rb = memchr(host, ']', len);
        if (!rb)
            return 0;
        end = rb - host + 1;
    } else {
        const char *colon = memchr(host, ':', len);
        if (colon)
            end = colon - host;
    }
    /* what follows the name: nothing, or ":" and a port of digits ("a.test:@evil/x" is no authority) */
    if (end < len && (host[end] != ':' || len - end - 1 > 5))
        return 0;
    for (size_t i = end + 1; i < len; i++)
        if (host[i] < '0' || host[i] > '9')
            return 0;
    if (end && host[end - 1] == '.')
        end--;
    if (end == 0 || end >= outsz)
        return 0;
    for (size_t i = 0; i < end; i++) {
        unsigned char c = host[i];
        if (!host_char(c, literal))
            return 0;
        out[i] = (c >= 'A' && c <= 'Z') ? c + 32 : c;
    }
    out[end] = 0;
    return end;
}

int kago__http_req_check(struct http_msg *m, uint64_t max_body, struct http_req_info *info)
{
    llhttp_t *p = &m->parser;
    memset(info, 0, sizeof(*info));
    info->http10 = p->http_major == 1 && p->http_minor == 0;
    unsigned nhost = kago__http_find(m, "host", &info->host, &info->host_len);
    if (nhost > 1 || (nhost == 0 && !info->http10) || (nhost == 1 && info->host_len == 0)) {
        m->error_reason = "exactly one Host header required";
        return 400;
    }
    if (p->method == HTTP_CONNECT) {
        m->error_reason = "CONNECT is not supported";
        return 405;
    }
    /* absolute-form ("GET http://b.test/x"): the target's authority is the host, whatever Host says
     * (RFC 9112 3.2.2); the app gets the origin-form and that Host */
    const char *u = m->url_len ? m->raw.data + m->url : "", *end = u + m->url_len;
    for (const char *q = u; q < end; q++)
        if ((unsigned char)*q < 0x21 || *q == 0x7f) { /* (llhttp 8 lets tabs and form feeds through) */
            m->error_reason = "control character in the request target";
            return 400;
        }
    size_t skip = m->url_len > 7 && !strncasecmp(u, "http://", 7)    ? 7
                  : m->url_len > 8 && !strncasecmp(u, "https://", 8) ? 8
                                                                     : 0;
    if (skip) {
        const char *a = u + skip, *q = a;
        while (q < end && *q != '/' && *q != '?' && *q != '#')
            q++;
        if (q == a || memchr(a, '@', (size_t)(q - a))) {
            m->error_reason = "invalid request target";
            return 400;
        }
        info->host = a;
        info->host_len = (uint32_t)(q - a);
        info->absolute = true;
        info->slash = q == end || *q != '/';
        info->target = (uint32_t)(q - m->raw.data);
        info->target_len = (uint32_t)(end - q);
        nhost = 1;
    } else {
        info->target = m->url;
        info->target_len = m->url_len;
    }
    char key[256];
    if (nhost) {
        info->host_name_len = kago__http_host_key(info->host, info->host_len, key, sizeof(key));
        if (!info->host_name_len) {
            m->error_reason = "invalid Host header";
            return 400;
        }
    }
    info->chunked = p->flags & F_CHUNKED;
    if (p->flags & F_CONTENT_LENGTH)
        info->content_length = p->content_length;
    info->upgrade = p->upgrade;
    info->keep_alive = llhttp_should_keep_alive(p);
    const char *hv = NULL;
    uint32_t hn = 0;
    if (kago__http_find(m, "kago-hops", &hv, &hn)) { /* digits; anything else counts as the limit */
        for (uint32_t i = 0; i < hn && info->hops < 1000; i++)
            info->hops = hv[i] >= '0' && hv[i] <= '9' ? info->hops * 10 + (unsigned)(hv[i] - '0') : 1000;
        if (!hn)
            info->hops = 1000;
    }
    if (max_body && info->content_length > max_body) {
        m->error_reason = "request body too large";
        return 413;
    }
    return 0;
}

/* Headers that describe one connection, not the message (RFC 9110 7.6.1), plus the ones kago
 * sets itself. */
static bool is_hop(const char *name, size_t n)
{
    static const char *const hop[] = {"connection",
                                      "keep-alive",
                                      "proxy-connection",
                                      "te",
                                      "trailer",
                                      "transfer-encoding",
                                      "upgrade",
                                      "proxy-authenticate",
                                      "proxy-authorization",
                                      "kago-hops",
                                      NULL};
    for (const char *const *h = hop; *h; h++)
        if (strlen(*h) == n && strncasecmp(*h, name, n) == 0)
            return true;
    return false;
}

/* Is name listed as a token of any Connection header? */
static bool in_connection(const struct http_msg *m, const char *name, size_t n)
{
    for (unsigned i = 0; i < m->nhdr; i++) {
        const struct http_hdr *h = &m->hdr[i];
        if (!name_is(m, h, "connection", 10))
            continue;
        const char *v = m->raw.data + h->value, *end = v + h->value_len;
        while (v < end) {
            while (v < end && (*v == ' ' || *v == '\t' || *v == ','))
                v++;
            const char *t = v;
            while (v < end && *v != ',' && *v != ' ' && *v != '\t')
                v++;
            if ((size_t)(v - t) == n && strncasecmp(t, name, n) == 0)
                return true;
        }
    }
    return false;
}

static void add_hdr(struct sbuf *out, const char *name, const char *v, size_t vn)
{
    sbuf_adds(out, name);
    sbuf_add(out, ": ", 2);
    sbuf_add(out, v, vn);
    sbuf_add(out, "\r\n", 2);
}

/* A header that Connection may not take away: the message's framing and Host stay, or the bytes that
 * follow the head would be read one way by kago and another by the peer. */
static bool is_framing(const char *name, size_t n)
{
    return (n == 14 && strncasecmp(name, "content-length", n) == 0) ||
           (n == 4 && strncasecmp(name, "host", n) == 0);
}

/* Is header i named in a Connection header, so hop-by-hop too? */
static bool connection_hop(const struct http_msg *m, bool has_conn, unsigned i)
{
    const struct http_hdr *h = &m->hdr[i];
    const char *name = m->raw.data + h->name;
    return has_conn && !is_framing(name, h->name_len) && in_connection(m, name, h->name_len);
}

bool kago__http_hop(const struct http_msg *m, unsigned i)
{
    const struct http_hdr *h = &m->hdr[i];
    return is_hop(m->raw.data + h->name, h->name_len) ||
           connection_hop(m, kago__http_find(m, "connection", NULL, NULL) > 0, i);
}

/* Request headers an app must not take for kago's: Forwarded and X-Real-IP name a client or a
 * scheme kago did not check (kago states its own in X-Forwarded-*), and a name with an underscore
 * would meet X-Forwarded-For in a CGI or WSGI environment (HTTP_X_FORWARDED_FOR), as nginx drops it. */
static bool is_client_claim(const char *name, size_t n)
{
    return memchr(name, '_', n) || (n == 9 && strncasecmp(name, "forwarded", n) == 0) ||
           (n == 9 && strncasecmp(name, "x-real-ip", n) == 0);
}

/* Copies every end-to-end header (skip_fwd: of a request, to an app: without the client's X-Forwarded-*
 * and claims); returns the index of X-Forwarded-For (or -1) for chaining. */
/* skip_length: a 1xx's Content-Length (it has no body) */
static void copy_headers(struct sbuf *out, const struct http_msg *m, bool skip_fwd, bool skip_host,
                         bool skip_length, int *xff)
{
    bool has_conn = kago__http_find(m, "connection", NULL, NULL) > 0;
    for (unsigned i = 0; i < m->nhdr; i++) {
        const struct http_hdr *h = &m->hdr[i];
        const char *name = m->raw.data + h->name;
        if (is_hop(name, h->name_len) || connection_hop(m, has_conn, i) ||
            (skip_fwd && is_client_claim(name, h->name_len)) || (skip_host && name_is(m, h, "host", 4)) ||
            (skip_length && name_is(m, h, "content-length", 14)))
            continue;
        if (skip_fwd && h->name_len > 12 && strncasecmp(name, "x-forwarded-", 12) == 0) {
            if (xff && *xff < 0 && name_is(m, h, "x-forwarded-for", 15))
                *xff = i;
            continue;
        }
        sbuf_add(out, name, h->name_len);
        sbuf_add(out, ": ", 2);
        sbuf_add(out, m->raw.data + h->value, h->value_len);
        sbuf_add(out, "\r\n", 2);
    }
}

void kago__http_upstream_head(struct sbuf *out, const struct http_msg *m, const struct http_req_info *info,
                              const char *client_ip)
{
    sbuf_adds(out, llhttp_method_name(m->parser.method));
    sbuf_add(out, info->slash ? " /" : " ", info->slash ? 2 : 1);
    sbuf_add(out, m->raw.data + info->target, info->target_len);
    sbuf_add(out, " HTTP/1.1\r\n", 11);
    int xff = -1;
    copy_headers(out, m, true, info->absolute, false, &xff);
    if (info->host_len == 0)
        add_hdr(out, "Host", "localhost", 9);
    else if (info->absolute)
        add_hdr(out, "Host", info->host, info->host_len);
    if (info->chunked)
        sbuf_adds(out, "Transfer-Encoding: chunked\r\n");
    if (info->upgrade) {
        const char *up = NULL;
        uint32_t upn = 0;
        if (kago__http_find(m, "upgrade", &up, &upn))
            add_hdr(out, "Upgrade", up, upn);
        sbuf_adds(out, "Connection: upgrade\r\n");
    }
    sbuf_adds(out, "X-Forwarded-For: ");
    if (xff >= 0) {
        sbuf_add(out, m->raw.data + m->hdr[xff].value, m->hdr[xff].value_len);
        sbuf_add(out, ", ", 2);
    }
    sbuf_adds(out, client_ip);
    sbuf_add(out, "\r\n", 2);
    /* from another node of the cluster: the first node's view of the client stays */
    const char *v = NULL;
    uint32_t vn = 0;
    if (info->trusted && kago__http_find(m, "x-forwarded-proto", &v, &vn) == 1)
        add_hdr(out, "X-Forwarded-Proto", v, vn);
    else
        sbuf_adds(out, info->https ? "X-Forwarded-Proto: https\r\n" : "X-Forwarded-Proto: http\r\n");
    if (info->trusted && kago__http_find(m, "x-forwarded-host", &v, &vn) == 1)
        add_hdr(out, "X-Forwarded-Host", v, vn);
    else if (info->host_len)
        add_hdr(out, "X-Forwarded-Host", info->host, info->host_len);
    if (info->forward) {
        char hops[16];
        int n = snprintf(hops, sizeof(hops), "%u", info->hops + 1);
        add_hdr(out, "Kago-Hops", hops, (size_t)n);
    }
    sbuf_add(out, "\r\n", 2);
}

bool kago__http_resp_forwardable(const struct http_msg *m)
{
    unsigned te = 0;
    for (unsigned i = 0; i < m->nhdr; i++) {
        const struct http_hdr *h = &m->hdr[i];
        const unsigned char *v = (const unsigned char *)m->raw.data + h->value;
        uint32_t n = h->value_len;
        for (uint32_t k = 0; k < n; k++)
            if ((v[k] < 0x20 && v[k] != '\t') || v[k] == 0x7f)
                return false;
        while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
            n--;
        if (name_is(m, h, "transfer-encoding", 17) &&
            (te++ || n != 7 || strncasecmp((const char *)v, "chunked", 7) != 0))
            return false;
    }
    return true;
}

void kago__http_client_head(struct sbuf *out, const struct http_msg *m, const struct http_resp_opts *o)
{
    int status = m->parser.status_code;
    sbuf_add(out, "HTTP/1.1 ", 9);
    sbuf_addu(out, status, 10);
    sbuf_add(out, " ", 1);
    sbuf_adds(out, kago__http_reason(status));
    sbuf_add(out, "\r\n", 2);
    copy_headers(out, m, false, false, status < 200 && status != 101, NULL);
    if (o->chunked)
        sbuf_adds(out, "Transfer-Encoding: chunked\r\n");
    if (o->upgrade) {
        const char *up = NULL;
        uint32_t upn = 0;
        if (kago__http_find(m, "upgrade", &up, &upn))
            add_hdr(out, "Upgrade", up, upn);
        sbuf_adds(out, "Connection: upgrade\r\n");
    } else if (o->close) {
        sbuf_adds(out, "Connection: close\r\n");
    }
    if (o->cold_start_us >= 0) {
        char v[32];
        int n = snprintf(v, sizeof(v), "%.1fms%s%s", o->cold_start_us / 1000.0, o->cold_kind ? " " : "",
                         o->cold_kind ? o->cold_kind : "");
        add_hdr(out, "X-Kago-Cold-Start", v, n);
    }
    if (o->hsts && !kago__http_find(m, "strict-transport-security", NULL, NULL))
        add_hdr(out, "Strict-Transport-Security", o->hsts, strlen(o->hsts));
    sbuf_add(out, "\r\n", 2);
}

const char *kago__http_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 508:
        return "Loop Detected";
    default:
        return status < 200   ? "Informational"
               : status < 300 ? "OK"
               : status < 400 ? "Redirect"
               : status < 500 ? "Client Error"
                              : "Server Error";
    }
}

void kago__http_redirect(struct sbuf *out, int status, const char *location, size_t len)
{
    sbuf_add(out, "HTTP/1.1 ", 9);
    sbuf_addu(out, status, 10);
    sbuf_add(out, " ", 1);
    sbuf_adds(out, kago__http_reason(status));
    sbuf_adds(out, "\r\nServer: kago\r\nLocation: ");
    sbuf_add(out, location, len);
    sbuf_adds(out, "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
}

void kago__http_error(struct sbuf *out, int status, bool close, unsigned retry_after)
{
    kago__http_error_body(out, status, close, retry_after, NULL, 0);
}

void kago__http_error_body(struct sbuf *out, int status, bool close, unsigned retry_after, const char *body,
                           size_t len)
{
    const char *reason = kago__http_reason(status);
    size_t blen = body ? len : 4 + strlen(reason) + 1; /* "NNN reason\n" */
    sbuf_add(out, "HTTP/1.1 ", 9);
    sbuf_addu(out, status, 10);
    sbuf_add(out, " ", 1);
    sbuf_adds(out, reason);
    sbuf_adds(out, "\r\nServer: kago\r\nContent-Type: text/plain\r\nContent-Length: ");
    sbuf_addu(out, blen, 10);
    if (retry_after) {
        sbuf_adds(out, "\r\nRetry-After: ");
        sbuf_addu(out, retry_after, 10);
    }
    if (close)
        sbuf_adds(out, "\r\nConnection: close");
    sbuf_add(out, "\r\n\r\n", 4);
    if (body) {
        sbuf_add(out, body, len);
        return;
    }
    sbuf_addu(out, status, 10);
    sbuf_add(out, " ", 1);
    sbuf_adds(out, reason);
    sbuf_add(out, "\n", 1);
}
