/* kago serve — HTTP/1.1 message heads on top of llhttp: collection, limits, smuggling checks,
 * and the rewriting of heads between client and upstream (hop-by-hop out, X-Forwarded-* in). */
#ifndef KAGO_SERVE_HTTP_H
#define KAGO_SERVE_HTTP_H

#include <stdbool.h>
#include <stdint.h>

#include <llhttp.h>

#include "buf.h"

#define HTTP_MAX_HEADERS 100
#define HTTP_MAX_HEAD    8192         /* request line + headers; beyond it the answer is 431 */
#define HTTP_MAX_FRAMING (128u << 10) /* a chunked body's framing past 16 times its data */

struct http_hdr {
    uint32_t name, name_len, value, value_len; /* offsets into http_msg.raw */
};

struct http_msg;
/* Callbacks from the parser; return 0, HPE_PAUSED to stop llhttp_execute after this event, or
 * (head only) 1 for "this response has no body" as llhttp defines. Set msg->error and return
 * HPE_USER to fail the message with that HTTP status. */
struct http_msg_cbs {
    int (*head)(struct http_msg *m);
    int (*body)(struct http_msg *m, const char *at, size_t len);
    int (*done)(struct http_msg *m);
};

struct http_msg {
    llhttp_t parser;
    struct sbuf raw; /* url (requests), header names and values */
    uint32_t url, url_len;
    unsigned nhdr;
    uint8_t last;          /* what the previous callback delivered: 0 none, 1 name, 2 value, 3 value done */
    bool value_at_end;     /* the last value span ended at the end of its llhttp_execute buffer */
    bool begun, head_done; /* a message began; its head is complete (what follows: body, trailers) */
    char prev_byte;        /* the last byte but spaces and tabs of the previous buffer (obs-fold) */
    uint8_t crlf_due;      /* bytes of the CRLF after a chunk's data still to come (next buffer) */
    uint32_t head_wire;    /* bytes of reads that began inside the head (limit: 2 * HTTP_MAX_HEAD) */
    uint32_t trailer_len;  /* trailer fields seen (not kept) */
    uint64_t body_wire;    /* bytes of reads that began inside the body (limit: see kago__http_execute) */
    uint64_t body_bytes;   /* of data in them */
    const char *exec_begin, *exec_end;
    uint16_t error; /* HTTP status for a failed message (400, 413, 431) */
    const char *error_reason;
    const struct http_msg_cbs *cbs;
    void *owner;
    struct http_hdr *hdr; /* nhdr of hdr_cap, grown as fields arrive (at most HTTP_MAX_HEADERS) */
    unsigned hdr_cap;
};

/* What proxying needs to know about a request head, filled by http_req_check. */
struct http_req_info {
    const char *host; /* the Host value as sent (for X-Forwarded-Host) */
    uint32_t host_len;
    uint32_t host_name_len; /* Host without ":port" (for routing) */
    bool chunked, upgrade, keep_alive, http10;
    bool absolute, slash;        /* absolute-form target: host is its authority; slash: its path was empty */
    uint32_t target, target_len; /* the target in origin-form (offset in raw; with slash, after a "/") */
    bool https;                  /* it came over TLS (X-Forwarded-Proto), set by the caller after the check */
    uint64_t content_length;     /* 0 when chunked or absent */
    /* --cluster: Kago-Hops as received (nodes it went through); forward: it goes to another node (Kago-Hops
     * + 1 is sent); trusted: it came from another node, whose X-Forwarded-Proto and -Host are kept */
    unsigned hops;
    bool forward, trusted;
};

/* Starts (or restarts) a message parser of type HTTP_REQUEST or HTTP_RESPONSE. */
void kago__http_msg_init(struct http_msg *m, llhttp_type_t type, const struct http_msg_cbs *cbs, void *owner);
/* Prepares for the next message on the same connection (keeps parser state). */
void kago__http_msg_clear(struct http_msg *m);
void kago__http_msg_free(struct http_msg *m);

/* Runs the parser over data. Returns the llhttp error (HPE_OK, HPE_PAUSED, HPE_PAUSED_UPGRADE or
 * a failure); *used is the number of bytes consumed. On failure m->error is the HTTP status to
 * answer (400 unless a callback set another). */
llhttp_errno_t kago__http_execute(struct http_msg *m, const char *data, size_t len, size_t *used);

/* Header i is hop-by-hop (RFC 9110 7.6.1, or named in Connection): not forwarded. */
bool kago__http_hop(const struct http_msg *m, unsigned i);

/* Finds header name (case-insensitive); returns how many there are and the first value. */
unsigned kago__http_find(const struct http_msg *m, const char *name, const char **value, uint32_t *len);

/* Validates a complete request head: exactly one Host (HTTP/1.1), Transfer-Encoding only
 * "chunked", limits. Returns 0 or the HTTP status to answer (400, 413 via max_body). */
int kago__http_req_check(struct http_msg *m, uint64_t max_body, struct http_req_info *info);

/* Writes the request head to send upstream: hop-by-hop headers removed (RFC 9110 7.6.1, plus
 * those named in Connection), X-Forwarded-For/-Proto/-Host added, body framing re-stated. */
void kago__http_upstream_head(struct sbuf *out, const struct http_msg *m, const struct http_req_info *info,
                              const char *client_ip);

struct http_resp_opts {
    bool chunked;          /* re-frame the body as chunked to the client */
    bool close;            /* tell the client the connection closes after this response */
    bool upgrade;          /* a 101 being passed through */
    int64_t cold_start_us; /* >= 0: add X-Kago-Cold-Start */
    const char *cold_kind; /* NULL for a start; "restore", "thaw" */
    const char *hsts;      /* Strict-Transport-Security to add unless the app sent one, or NULL */
};
/* Whether an app's response head can go to a client as it is: no control character in a value, and no
 * Transfer-Encoding but one "chunked". */
bool kago__http_resp_forwardable(const struct http_msg *m);
/* Writes the response head to send to the client. */
void kago__http_client_head(struct sbuf *out, const struct http_msg *m, const struct http_resp_opts *o);

/* Writes a complete small error response (status line, headers, short text body). */
void kago__http_error(struct sbuf *out, int status, bool close, unsigned retry_after);
/* The same with body (len bytes, text/plain) instead of "NNN Reason\n"; body NULL: that default. */
void kago__http_error_body(struct sbuf *out, int status, bool close, unsigned retry_after, const char *body,
                           size_t len);
const char *kago__http_reason(int status);
/* A redirect (301, 308, ...) to location (len bytes), the connection closing after it. */
void kago__http_redirect(struct sbuf *out, int status, const char *location, size_t len);

/* Host routing key: lower-cases and strips the port; returns the length written (0 = invalid). */
size_t kago__http_host_key(const char *host, size_t len, char *out, size_t outsz);

#endif
