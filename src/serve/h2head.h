/* kago serve — an HTTP/2 request's header fields as the HTTP/1.1 request head serve parses and routes
 * (h2.c). Pure: no nghttp2, no I/O; unit-tested (tests/unit/test_h2head.c) and fuzzed
 * (tests/fuzz/fuzz_h2head.c). The fields come decoded by nghttp2 (HPACK, pseudo-header order and names
 * checked there); this is where what reaches llhttp is made safe: no CR, LF or NUL in any field, no space
 * or control in :path, one Host (from :authority), one Cookie line (RFC 9113 8.2.3), no TE. */
#ifndef KAGO_SERVE_H2HEAD_H
#define KAGO_SERVE_H2HEAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define H2_MAX_HEADER_LIST (16 * 1024) /* SETTINGS_MAX_HEADER_LIST_SIZE; more gets 431 */
/* One header block decoding past either of these is an HPACK bomb: the connection ends. */
#define H2_BOMB_BYTES (4 * H2_MAX_HEADER_LIST)
#define H2_BOMB_COUNT 1000

struct h2_head {
    struct sbuf method, path, authority, hdrs, cookie;
    size_t bytes;   /* the header list size so far (RFC 9113: name + value + 32 each) */
    unsigned count; /* fields so far */
    bool has_cl, too_big, bad;
};

/* One decoded field. Returns 0, or -1 when the block is a bomb (the caller ends the connection). */
int kago__h2_head_field(struct h2_head *h, const uint8_t *name, size_t nlen, const uint8_t *value,
                        size_t vlen);
/* The request head as HTTP/1.1 into out ("METHOD PATH HTTP/1.1", Host, the fields, Cookie, then the blank
 * line). body: H2_BODY_NONE, H2_BODY_UNKNOWN (a body of unknown length follows: "transfer-encoding:
 * chunked" unless the client gave a content-length), or the whole body's length (the client ended the
 * stream: "content-length: N" unless it gave one).
 * Returns 0, or the status to answer instead (400 malformed, 405 CONNECT, 431 too large). The fields'
 * buffers are freed either way. */
#define H2_BODY_NONE    0
#define H2_BODY_UNKNOWN (-1)
int kago__h2_head_build(struct h2_head *h, int64_t body, struct sbuf *out);
void kago__h2_head_free(struct h2_head *h);
/* The request is a CONNECT (answered 405: kago tunnels no TCP). */
bool kago__h2_head_connect(const struct h2_head *h);

#endif
