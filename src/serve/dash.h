/* kago serve — the dashboard on the admin listener (docs/serve.md, "The dashboard").
 *
 * The pure part (dash_core.c, unit-tested): the latency histogram and its quantiles, the ring of recent
 * samples an active app keeps, the sessions a browser logs in with (an HttpOnly cookie and a CSRF token),
 * and the request's cookie and query parameters. The loop part (dash.c): the one-second sampler, the
 * Server-Sent Events of the page, its actions, and its static files (compiled in: dash_assets.c). */
#ifndef KAGO_SERVE_DASH_H
#define KAGO_SERVE_DASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "buf.h"

/* --- samples ------------------------------------------------------------------------------------ */

/* Request latency buckets: the upper bound of bucket i is DASH_LAT_MIN_MS * 2^(i/2) (the last: +Inf),
 * so a quantile is known within a factor of 1.41, from 50 us to 50 s. */
#define DASH_LAT_BUCKETS 42
#define DASH_LAT_MIN_MS  0.05

/* The ring: the last DASH_SLOTS steps of DASH_STEP_S seconds (15 minutes). */
#define DASH_STEP_S 5
#define DASH_SLOTS  180

/* One step of an app (or one second, live). */
struct dash_sample {
    uint32_t t;                /* serve's uptime in seconds at its end */
    uint32_t requests, errors; /* answered; errors: status 5xx (rejected, upstream failures) */
    float p50_ms, p99_ms;      /* request latency quantiles (0: no request) */
    uint16_t starts, restores; /* instances started by tier: booted, restored from the CRIU image */
    uint16_t thaws, instances; /* frozen instances thawed; instances at its end (but stopping ones) */
    uint32_t memory_kib;       /* of its instances at the end of a step (0 in a live second) */
    float cpu_pct;             /* of its instances over the step (100: one CPU; 0 in a live second) */
};

/* One step of the server. */
struct dash_srv_sample {
    uint32_t t;
    uint32_t requests, errors;
    uint32_t connections, held; /* client connections open; requests held for an instance (all apps) */
    uint32_t active_apps, instances;
    uint32_t rss_kib; /* serve's own resident memory */
};

struct dash_lat {
    uint32_t n[DASH_LAT_BUCKETS];
};

/* The bucket of a latency. */
unsigned kago__dash_lat_bucket(double ms);
/* The upper bound (ms) of bucket b (the last: DASH_LAT_MIN_MS * 2^(DASH_LAT_BUCKETS/2), shown as "more"). */
double kago__dash_lat_bound(unsigned b);
/* The q-quantile (0 < q < 1) of h in ms: the upper bound of the bucket that holds it; 0 when h is empty. */
double kago__dash_lat_quantile(const struct dash_lat *h, double q);

/* A ring of samples, oldest first from (head - n). Its slots grow with the samples (8, 16, ... up to
 * DASH_SLOTS): an app active for a minute holds 12 of them, not 15 minutes' worth. */
struct dash_ring {
    struct dash_sample *s; /* cap slots */
    unsigned cap, head, n;
};
void kago__dash_ring_push(struct dash_ring *r, const struct dash_sample *s);
void kago__dash_ring_free(struct dash_ring *r);
/* The k-th sample from the oldest (k < r->n). */
const struct dash_sample *kago__dash_ring_at(const struct dash_ring *r, unsigned k);

struct dash_srv_ring {
    struct dash_srv_sample s[DASH_SLOTS];
    unsigned head, n;
};
void kago__dash_srv_ring_push(struct dash_srv_ring *r, const struct dash_srv_sample *s);
const struct dash_srv_sample *kago__dash_srv_ring_at(const struct dash_srv_ring *r, unsigned k);

/* --- sessions ----------------------------------------------------------------------------------- */

#define DASH_SESSIONS    32                    /* browsers logged in at once; the least recent goes beyond */
#define DASH_SESSION_MS  (12ull * 3600 * 1000) /* a session ends 12 h after its last use */
#define DASH_ID_HEX      64                    /* hex characters of a session id and of a CSRF token */
#define DASH_COOKIE      "kago_session"
#define DASH_CSRF_HEADER "X-Kago-CSRF"

struct dash_session {
    char id[DASH_ID_HEX + 1]; /* "" : free */
    char csrf[DASH_ID_HEX + 1];
    uint64_t last_ms;
};

struct dash_sessions {
    struct dash_session s[DASH_SESSIONS];
};

/* A new session (ids from getrandom), evicting the least recently used when full. Returns it, or NULL
 * when no random bytes could be had. */
struct dash_session *kago__dash_session_new(struct dash_sessions *t, uint64_t now);
/* The session whose id is id[0..n) and not expired (its last use becomes now), or NULL. Compared in
 * constant time per slot. */
struct dash_session *kago__dash_session_find(struct dash_sessions *t, const char *id, size_t n, uint64_t now);
void kago__dash_session_end(struct dash_session *s);

/* --- request parsing ----------------------------------------------------------------------------- */

/* The value of header name (case-insensitive) in the request head (n bytes, up to the empty line):
 * true with *v, *len pointing into head. */
bool kago__dash_header(const char *head, size_t n, const char *name, const char **v, size_t *len);
/* The value of cookie name in the head's Cookie headers: true with *v, *len pointing into head. */
bool kago__dash_cookie(const char *head, size_t n, const char *name, const char **v, size_t *len);
/* The query parameter name of path ("/x?a=1&b=2"), percent- and '+'-decoded into out (at most cap - 1
 * bytes, NUL-terminated): true when present (and it fits, and holds no %00), false when not. With out
 * NULL: whether it is present at all. */
bool kago__dash_param(const char *path, const char *name, char *out, size_t cap);

/* --- the loop (dash.c) --------------------------------------------------------------------------- */

struct server;
struct app_rt;
struct instance;

/* How a request to the admin listener was let in. */
enum dash_auth {
    DASH_AUTH_PUBLIC, /* a page or static file: no data, no action */
    DASH_AUTH_LOCAL,  /* a unix socket (its mode is the check), or no token asked */
    DASH_AUTH_BEARER, /* Authorization: Bearer TOKEN */
    DASH_AUTH_COOKIE, /* the dashboard's session cookie */
    DASH_AUTH_QUERY,  /* GET /?token=TOKEN: exchanged for a session cookie at once */
};

/* What the dashboard answers: status 0 when the request is not the dashboard's. */
struct dash_reply {
    int status;
    const char *ctype;
    char extra[512]; /* more header lines, each ending in \r\n */
    struct sbuf body;
    bool sse; /* status 200: the connection stays open for the events (kago__dash_sse_add) */
};

/* A page open on the events (one per SSE connection, embedded in the admin listener's connection). */
struct dash_sub {
    struct dash_sub *prev, *next;
    /* admin.c: writes n bytes unless a write is still pending (then false: this second is skipped) */
    bool (*send)(struct dash_sub *s, const char *data, size_t n);
    void (*close)(struct dash_sub *s); /* admin.c: closes the connection (shutdown) */
    char app[256];                     /* "": the overview */
    char q[128];                       /* the overview: the filter on names */
    unsigned offset, limit;            /* the overview: the page */
    bool active_only;                  /* the overview: only apps with recent activity, busiest first */
    bool started;                      /* the history was sent */
    int64_t log_size;                  /* the app's current.log as last sent (-1: none) */
};

/* Requests are public (true) when they are the dashboard's pages and static files, which hold no data. */
bool kago__dash_public(const char *method, const char *path);
/* Over TCP with the token asked: 1 when the head carries a live session cookie and (for a POST) its CSRF
 * header, 0 when no session cookie, -1 when a POST lacks the session's CSRF header, -2 when the cookie names
 * no live session (it ended, or serve restarted: not counted as a failed attempt). */
int kago__dash_cookie_auth(struct server *srv, const char *head, size_t n, const char *method);
/* Answers the dashboard's requests and actions (r->status 0: not one of them). ip: the client's, for the
 * log. head, n: the request head (for the CSRF header of bearer-less actions). */
void kago__dash_handle(struct server *srv, const char *method, const char *path, const char *head, size_t n,
                       enum dash_auth how, const char *ip, struct dash_reply *r);
/* After an r->sse reply's head is written: s (its fields app .. active_only set by kago__dash_handle
 * through kago__dash_sub_init) gets an event every second until kago__dash_sse_remove. */
void kago__dash_sub_init(struct dash_sub *s, const char *path);
void kago__dash_sse_add(struct server *srv, struct dash_sub *s);
void kago__dash_sse_remove(struct server *srv, struct dash_sub *s);

/* An app with activity in the last 15 minutes: its ring and the second being counted. */
struct dash_app {
    struct dash_app *prev, *next; /* dash.active */
    struct app_rt *app;
    struct dash_ring ring;
    struct dash_sample sec, step; /* the last second (live), the step being summed */
    struct dash_lat lat_now, lat_step;
    uint32_t req_now, err_now;                       /* since the last second */
    uint64_t starts_seen, restores_seen, thaws_seen; /* the pool's counters at the last second */
    uint64_t cpu_prev_us;                            /* its instances' CPU time at the last step */
    uint32_t quiet_s;                                /* seconds without requests nor instances */
    struct dash_sample pend; /* the step that ended, until its instances' usage is read (due) */
    bool due;
};

struct dash {
    uv_timer_t timer;
    /* reads the usage of the due apps' instances a few at a time, one batch per loop turn (at thousands of
     * instances, reading them all at a step's end held the loop for a quarter of a second) */
    uv_idle_t slicer;
    bool timer_on; /* the timer and the slicer are initialised, not closed */
    unsigned ndue;
    struct dash_app *active;
    unsigned nactive;
    size_t ring_bytes; /* the active apps' rings' slots */
    struct dash_srv_ring ring;
    struct dash_srv_sample sec, step;
    uint32_t req_now, err_now;
    unsigned secs; /* seconds sampled */
    struct dash_sub *subs;
    struct app_rt **by_name; /* every app sorted by name, for the overview's pages (rebuilt when stale) */
    size_t nby_name;
    bool by_name_stale;
    struct dash_sessions sessions;
    char *reload_error; /* the last reload's failure (NULL: it worked, or none yet) */
    uint64_t reload_ms; /* when (0: none since start) */
    unsigned reloads;
};

/* serve's hooks */
int kago__dash_init(struct server *srv);      /* the sampler's timer, started */
void kago__dash_shutdown(struct server *srv); /* closes the event streams and the timer */
void kago__dash_free(struct server *srv);     /* after the loop's last run */
void kago__dash_request(struct app_rt *a, int status, uint64_t us); /* a request of a ended */
void kago__dash_app_free(struct app_rt *a);                         /* a is being freed */
void kago__dash_reloaded(struct server *srv, const char *error);    /* a reload: NULL, or why it failed */

/* The embedded static files (dash_assets.c, made by embed_assets.py at build time). */
struct dash_asset {
    const char *path; /* "/dash/static/dash.js" */
    const char *ctype;
    const unsigned char *data;
    size_t len;
};
extern const struct dash_asset kago__dash_assets[];
extern const size_t kago__dash_nassets;

#endif
