/* kago serve — an etcd v3 client over etcd's JSON gateway (POST /v3/...), for the cluster mode.
 *
 * Two halves. etcd_json.c is pure (no I/O; unit-tested and fuzzed): base64, request bodies, and the
 * parsing of responses and of the watch stream's messages. etcd.c is the I/O: HTTP/1.1 over libuv TCP,
 * responses parsed by llhttp (as the proxy does), run on serve's own event loop, never blocking it.
 *
 * Why not libcurl: kago is one fully static executable, and Debian 12's libcurl.a cannot be linked
 * statically (it needs static libnghttp2, librtmp, libssh2, libpsl, libgssapi_krb5 and libldap, which
 * Debian does not ship). The gateway needs plain HTTP/1.1 POSTs with JSON bodies and one streamed
 * (chunked) response: llhttp, already in serve, parses those, and libuv drives them like any other
 * socket of the proxy, so no thread and no second event loop is needed. See docs/cluster.md.
 *
 * etcd's JSON: keys and values are standard base64; int64 fields (revisions, lease IDs) come back as
 * strings (lease IDs exceed 2^53: never through a double) and are sent as strings; proto3 leaves out
 * default values (a failed txn has no "succeeded", a PUT event no "type", a zero count no "count"). */
#ifndef KAGO_SERVE_ETCD_H
#define KAGO_SERVE_ETCD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>
#include <uv.h>

#include <kago/error.h>

/* --- pure: etcd_json.c ------------------------------------------------------------------------ */

/* Standard base64 (with padding) of n bytes; caller frees. */
char *kago__b64_encode(const void *p, size_t n);
/* Decodes n chars of standard base64 (padding optional); returns a NUL-terminated copy (caller frees)
 * with its length in *len, or NULL when s is not base64. */
char *kago__b64_decode(const char *s, size_t n, size_t *len);
/* The range_end that selects every key starting with prefix (its last byte not 0xff incremented, the
 * rest dropped); "\0" (every key) when prefix has no such byte. Caller frees. */
char *kago__etcd_prefix_end(const char *prefix);
/* An int64 field of o, sent as a JSON string or number. Returns false (and *v = 0) when absent or not
 * an integer: proto3 leaves out zeros. */
bool kago__etcd_int(struct json_object *o, const char *key, int64_t *v);

/* etcd://HOST:PORT[,HOST:PORT...] (also http://, one endpoint per comma) into a NULL-terminated list
 * of "HOST:PORT" strings (kago__strv_free). Returns 0 or < 0 with *err. */
int kago__etcd_parse_url(const char *url, char ***endpoints, struct kago_error **err);
/* url speaks TLS: etcds://HOST:PORT[,...] (or https://). */
bool kago__etcd_url_tls(const char *url);

struct etcd_kv {
    char *key;   /* decoded, NUL-terminated */
    char *value; /* decoded, NUL-terminated (a DELETE event's kv has none: "") */
    size_t value_len;
    int64_t create_rev, mod_rev, version, lease;
};
void kago__etcd_kv_free(struct etcd_kv *kv);

/* A range response: its header revision, the kvs, "more" (a page cut by the limit). */
struct etcd_range {
    int64_t revision;
    bool more;
    struct etcd_kv *kvs;
    size_t n;
};
int kago__etcd_parse_range(struct json_object *resp, struct etcd_range *out, struct kago_error **err);
void kago__etcd_range_free(struct etcd_range *r);

enum etcd_ev_type { ETCD_EV_PUT, ETCD_EV_DELETE };
struct etcd_event {
    enum etcd_ev_type type;
    struct etcd_kv kv;
};
/* One message of the watch stream ({"result":{...}}, one per line). */
struct etcd_watch_msg {
    int64_t revision;         /* header revision: everything up to it has been sent */
    int64_t compact_revision; /* > 0 with canceled: the start revision was compacted: list again */
    bool created, canceled;
    char *cancel_reason; /* or the stream's {"error":...} message; NULL when none */
    struct etcd_event *ev;
    size_t nev;
};
/* Parses one line of the watch stream. Returns 0 or < 0 with *err (not JSON, wrong shape, bad base64). */
int kago__etcd_parse_watch(const char *line, size_t len, struct etcd_watch_msg *m, struct kago_error **err);
void kago__etcd_watch_msg_free(struct etcd_watch_msg *m);

/* The message of a gateway error body ({"error":"...","code":14,"message":"..."} or
 * {"error":{"grpc_code":..,"message":"..."}}), or NULL. Owned by o. */
const char *kago__etcd_error_text(struct json_object *o);

/* Request bodies (new objects, the caller's). key and range_end NUL-terminated; range_end NULL: the one
 * key; revision 0: the newest; limit 0: none; lease 0: none. */
struct json_object *kago__etcd_req_range(const char *key, const char *range_end, int64_t revision,
                                         int64_t limit);
struct json_object *kago__etcd_req_put(const char *key, const void *value, size_t len, int64_t lease);
struct json_object *kago__etcd_req_delete(const char *key, const char *range_end);
/* The try-once claim: a txn that puts key (with lease) only if it does not exist (its create_revision
 * is 0), else ranges it. Response: "succeeded" true for the winner; a loser's first response holds the
 * current kv (kago__etcd_txn_result). */
struct json_object *kago__etcd_req_claim(const char *key, const void *value, size_t len, int64_t lease);
/* succeeded of a txn response, and for a loser of a claim the kv that is there (holder->key NULL when
 * none). Returns 0 or < 0 with *err. */
int kago__etcd_txn_result(struct json_object *resp, bool *succeeded, struct etcd_kv *holder,
                          struct kago_error **err);
/* A txn deleting n keys at once (one revision, one write). */
struct json_object *kago__etcd_req_delete_keys(const char *const *keys, size_t n);
struct json_object *kago__etcd_req_lease_grant(int64_t ttl_s);
struct json_object *kago__etcd_req_lease_id(int64_t id); /* keepalive, revoke, timetolive */
struct json_object *kago__etcd_req_watch(const char *key, const char *range_end, int64_t start_revision);

/* --- I/O: etcd.c ------------------------------------------------------------------------------ */

struct etcd_client;
struct etcd_call;

/* The end of a call: resp (owned by the client; valid during the callback) is the response's JSON on
 * HTTP 200, else NULL and err says why: "etcd 127.0.0.1:2379 kv/put: connection refused",
 * "etcd 127.0.0.1:2379 kv/put: HTTP 503: etcdserver: request timed out". Never called after
 * kago__etcd_cancel or kago__etcd_free. */
typedef void (*etcd_done_cb)(void *arg, struct json_object *resp, const struct kago_error *err);
/* A streamed call's messages, one line of its body each (without the newline). */
typedef void (*etcd_line_cb)(void *arg, const char *line, size_t len);

/* TLS to etcd (etcds://): the CA that signed etcd's certificate (NULL: the system's roots) and this
 * client's certificate and key for etcd's --client-cert-auth (NULL: none). A NULL field is taken from
 * $KAGO_ETCD_CA, $KAGO_ETCD_CERT, $KAGO_ETCD_KEY (as etcdctl's ETCDCTL_CACERT and the like). */
struct etcd_tls {
    const char *ca, *cert, *key;
};
/* A client of the cluster at url (kago__etcd_parse_url) on loop; tls (may be NULL: the environment's) for
 * etcds://. Endpoint names are resolved here, once (getaddrinfo: it blocks; call it before serving), and the
 * TLS files read. Returns NULL with *err. */
struct etcd_client *kago__etcd_new(uv_loop_t *loop, const char *url, const struct etcd_tls *tls,
                                   struct kago_error **err);
/* Cancels every call (no callback runs) and frees the client once its handles are closed: the loop must
 * run again for that (uv_run after it, as serve's exit does). */
void kago__etcd_free(struct etcd_client *c);
/* The endpoint calls go to now ("HOST:PORT"); a call that cannot connect moves on to the next. */
const char *kago__etcd_endpoint(const struct etcd_client *c);

/* POST /v3/<op> with body (taken); cb once with the response or the error after timeout_ms at most.
 * Returns the call (for kago__etcd_cancel; it is gone after its callback). */
struct etcd_call *kago__etcd_call(struct etcd_client *c, const char *op, struct json_object *body,
                                  unsigned timeout_ms, etcd_done_cb cb, void *arg);
/* A streamed POST (watch): on_line for each line of the body as it arrives, on_end once when the stream
 * ends (resp NULL and err set: etcd went away, an HTTP error; never NULL err). connect_timeout_ms bounds
 * the time to the response head only. */
struct etcd_call *kago__etcd_stream(struct etcd_client *c, const char *op, struct json_object *body,
                                    unsigned connect_timeout_ms, etcd_line_cb on_line, etcd_done_cb on_end,
                                    void *arg);
void kago__etcd_cancel(struct etcd_call *call);

/* For the CLI: one call, running the client's loop until it ends. Returns 0 with *resp (the caller's:
 * json_object_put) or < 0 with *err. */
int kago__etcd_call_sync(struct etcd_client *c, const char *op, struct json_object *body, unsigned timeout_ms,
                         struct json_object **resp, struct kago_error **err);

#endif
