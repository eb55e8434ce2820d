/* kago serve — HTTP/2 on the front door (nghttp2).
 *
 * A connection that chose h2 (ALPN on a TLS listener, or the connection preface on a plain one with
 * --h2c) stays a `struct client` in state C_H2 holding an h2_conn: what it reads goes to nghttp2, what
 * nghttp2 sends goes to its out queue (encrypted there for TLS). Each stream is a `struct client` of
 * its own (c->h2s set, c->conn the connection), made when its HEADERS arrive: its head is written as an
 * HTTP/1.1 request head into its read buffer and parsed by the same code as an HTTP/1.1 request, so it
 * is routed, held, started, proxied over the app's pooled HTTP/1.1 upstream connections, logged and
 * counted as one. Only the two ends differ:
 * - the request body arrives in DATA frames kept by the stream (at most its window) and is written to
 *   the upstream connection as the upstream takes it (chunked when no content-length was given); the
 *   window is given back (WINDOW_UPDATE) only then, so a slow app slows the client down;
 * - the response head becomes a HEADERS frame, its body is queued in the stream client's out queue
 *   (the upstream pauses above OUTQ_HIGH, as for HTTP/1.1) and read from there by nghttp2's data
 *   provider as the peer's window and the connection's out queue allow (NGHTTP2_ERR_DEFERRED while it
 *   is empty, resumed when the upstream adds to it).
 * Limits: docs/serve.md ("HTTP/2"). */
#ifndef KAGO_SERVE_H2_H
#define KAGO_SERVE_H2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "h2head.h"

struct client;
struct http_msg;
struct http_resp_opts;
struct h2_conn;
struct h2_stream;

#define H2_MAX_STREAMS   100       /* SETTINGS_MAX_CONCURRENT_STREAMS */
#define H2_STREAM_WINDOW 65535     /* request body bytes a stream may have in flight */
#define H2_CONN_WINDOW   (4 << 20) /* for all its streams */
/* Resets of streams by the client (CVE-2023-44487): a bucket of this many, refilled at this rate per
 * second; empty: GOAWAY. */
#define H2_RESET_BURST 200
#define H2_RESET_RATE  33
/* PING, SETTINGS, PRIORITY, WINDOW_UPDATE and empty DATA frames: the same, for floods of them. */
#define H2_CTRL_BURST 1000
#define H2_CTRL_RATE  100

/* Counters for /metrics. */
struct h2_stats {
    uint64_t conns, streams, goaways_calm; /* goaways_calm: connections ended for flooding */
    uint64_t refused;                      /* streams refused (over the limits) */
};

/* The connection turns to HTTP/2 (ALPN said h2, or the preface was seen): bytes read from now on go to
 * kago__h2_input. */
void kago__h2_start(struct client *c);
/* Plaintext the connection read. */
void kago__h2_input(struct client *c, const char *data, size_t n);
/* Its out queue has room again, or it was written. */
void kago__h2_output(struct client *c);
/* SIGTERM: GOAWAY, the connection closes once its streams are done (now if none). */
void kago__h2_shutdown(struct client *c);
/* The connection closes: each stream's client closes. */
void kago__h2_conn_close(struct client *c);
void kago__h2_conn_free(struct h2_conn *h);
/* Writes the frames of the loop's corked connections (its idle handle's callback: shard.c starts none). */
void kago__h2_uncork(uv_idle_t *idle);
bool kago__h2_busy(const struct client *c); /* it has open streams */

/* A stream client's response head (from the upstream) and its end. */
void kago__h2_stream_head(struct client *c, const struct http_msg *resp, const struct http_resp_opts *o,
                          bool has_body);
/* A response made by serve: status, body (len bytes, text/plain; NULL: "NNN Reason\n"), Retry-After
 * (0: none), Location (NULL: none). */
void kago__h2_stream_respond(struct client *c, int status, unsigned retry_after, const char *location,
                             size_t loc_len, const char *body, size_t len);
/* The request body kept by the stream goes upstream as far as the upstream takes it. */
void kago__h2_stream_pump(struct client *c);
/* The stream client closes: the stream is reset if still open, and forgotten by its connection. */
void kago__h2_stream_detach(struct client *c);
void kago__h2_stream_free(struct h2_stream *s);

/* The connection read nothing for a second: with no stream and nothing to send, the pages of nghttp2's frame
 * buffer, the empty write buffers and OpenSSL's record buffers go (taken again by the next frame). */
bool kago__h2_idle(struct client *c);

#endif
