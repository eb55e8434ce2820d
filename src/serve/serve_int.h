/* kago serve — the objects of the running server, shared by its files:
 * server (loop, listeners, apps), app_rt (one app and its pool), instance (one container),
 * upconn (one connection into an instance's netns), client (one downstream connection). */
#ifndef KAGO_SERVE_INT_H
#define KAGO_SERVE_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/queue.h>

#include <pthread.h>
#include <netinet/in.h>
#include <uv.h>

#include <kago/kago.h>

#include "dash.h"
#include "h2.h"
#include "http.h"
#include "logfmt.h"
#include "outq.h"
#include "pool.h"
#include "router.h"
#include "smap.h"
#include "scaleup.h"
#include "serve.h"
#include "acme.h"
#include "tls.h"

#define container_of(p, type, member) ((type *)((char *)(p)-offsetof(type, member)))

struct server;

/* Per-app counters for /metrics. Status codes are bucketed by exact code for the common ones. */
#define STATUS_SLOTS 16
struct app_metrics {
    uint64_t by_status[STATUS_SLOTS];
    uint64_t upstream_errors;
    uint64_t inflight;
};

/* The CRIU tier of one app (a.checkpoint :after_ready). */
enum ckpt_state {
    CK_OFF,    /* not asked for, or CRIU is unusable here: cold starts */
    CK_WANT,   /* the next ready cold instance is imaged */
    CK_BUSY,   /* being imaged (in the thread pool) */
    CK_READY,  /* the current generation's image dir holds the image: starts restore it */
    CK_FAILED, /* the checkpoint failed: cold starts */
};

struct instance;
STAILQ_HEAD(inst_queue, instance); /* the server's queues of instances (instance.c) */

struct app_rt {
    struct app_rt *next;
    struct server *srv;
    struct shard *shard; /* the loop that serves its requests (shard.c) */
    struct kago_app app; /* owned */
    struct pool pool;
    struct app_metrics m;
    uint64_t seq;  /* instance name counter */
    bool removed;  /* dropped by a reload: draining until its last instance is gone */
    unsigned refs; /* clients holding it */
    enum ckpt_state ckpt;
    char *image_root;       /* <root>/images/<app> */
    unsigned images_pruned; /* generations below this have no image left */
    unsigned restore_fail_streak;
    char *start_error;          /* why the last start failed (NULL: none did), for 503s and /ps */
    struct app_log *log;        /* its instances' output (logs.c); NULL until one of them starts */
    struct instance *ckpt_inst; /* chosen for the checkpoint (its upstream sockets closing), or in it */
    uint64_t def_hash;          /* kago__app_def_hash of app, for the instance records */
    struct app_rt *tick_next;   /* in srv->ticking */
    size_t tick_idx;            /* its entry in srv->tick_due */
    bool ticking;
    bool ranged; /* uid, gid: its user namespace range, taken at load (instance.c) */
    struct kago_idmap uid, gid;
    int64_t etcd_rev;      /* --cluster: the mod_revision of /kago/apps/NAME it came from */
    struct dash_app *dash; /* its recent samples (dash.c); NULL while it is idle */
    /* a.scale_up (scaler.c): its instances are sampled next then; steps taken and raises the budget refused
     */
    uint64_t su_next;
    uint64_t su_raises, su_lowers, su_denied;
};

struct upconn;

struct instance {
    struct pool_inst *pi; /* NULL once removed from the pool */
    struct app_rt *app;
    struct kago_container *c;
    char name[128];
    uv_poll_t pidpoll;
    uv_timer_t probe;
    uint64_t probe_t0_us; /* when readiness checks began (the first ones are less than a millisecond apart) */
    /* socket activation: ready, its CPU weight waits for its first answer (the held requests and the first
     * response go first; kago__instance_answered), holding a ref meanwhile */
    bool ready_tail;
    bool tail_sent;       /* (atomic: set by the loop that saw the answer) */
    unsigned probe_fails; /* readiness checks that failed, the last with probe_err (a UV_E* code) */
    int probe_err;
    char *start_error;    /* why it could not be made (owned), for the start failure's report */
    struct upconn *idle;  /* keep-alive connections ready for a request */
    struct upconn *conns; /* every connection (for closing at exit) */
    unsigned nconns;
    unsigned handles;             /* open uv handles (exit poll, probe timer, create poll) */
    bool watching;                /* the exit poll and probe timer are initialised */
    struct kago_create *creating; /* the container's child is setting itself up: c is not set yet */
    uv_poll_t createpoll;         /* on creating's fd */
    uv_poll_t clonepoll;          /* before: on the spawner's answer to its clone (kago_create_cloning) */
    bool cloning;                 /* clonepoll is the active one */
    bool working;                 /* kago_create_work runs on creating in the thread pool: hands off */
    unsigned refs;                /* clients naming it; freed when removed and all three are 0 */
    uint64_t created_ms;
    bool ready, removed;
    bool restoring;    /* kago_container_restore runs for it in a worker thread: c is not set yet */
    bool kill_pending; /* signalled while restoring or creating: removed once that is done */
    bool queued;       /* waiting in the server's start queue: nothing of its container made yet */
    bool start_slot;   /* counted in srv->starting until ready or removed */
    /* its places in the server's queues: start (queued), work (working, waiting for the pool), delete
     * (removed, its container still to delete), signal (to be sent sig_pending; sig_all: to all) */
    STAILQ_ENTRY(instance) startq_link, work_link, del_link, sig_link;
    int sig_pending;
    bool sig_queued, sig_all;
    bool ckpt_busy;          /* kago_container_checkpoint runs on it in a worker thread: c stays until done */
    uint64_t ckpt_at;        /* the checkpoint may begin then (its closed upstream sockets have settled) */
    struct kago_stats stats; /* refreshed for /metrics and /ps */
    uint64_t dash_cpu_us, dash_cpu_ms; /* the dashboard: its CPU time when it last looked, and when */
    double dash_cpu_pct;
    struct log_stream *out[2];   /* its stdout and stderr read by serve (logs.c); NULL: not captured */
    struct logfmt_tail out_tail; /* what it printed last, for a start failure's report (logs.c) */
    /* its record under <root>/.serve (adopt.c): what was written last */
    uint64_t def_hash;
    bool recorded;
    enum pool_state rec_state;
    uint64_t rec_last_active;
    struct remote *remote;  /* --cluster: another node's instance, requests forwarded there (placement.c) */
    struct scaleup_inst su; /* a.scale_up's state (scaler.c) */
};

struct client;

struct upconn {
    uv_tcp_t tcp;
    uv_connect_t creq;
    struct instance *inst;
    struct upconn *next_idle;
    struct upconn *prev, *next; /* inst->conns */
    uint64_t idle_since;        /* ms, when it went back to inst->idle */
    uint64_t read_ms;           /* ms, its last read of a response, or when its reads resumed */
    struct client *client;
    struct http_msg resp;
    struct outq out;
    char *rbuf;
    bool connected, probe, reused, closing, got_bytes, reading;
    bool idled;            /* reused after UPCONN_APP_IDLE_MS or more idle (see resend_safe) */
    bool resp_chunked_out; /* re-chunking the body to the client */
    bool resp_done;
};

enum client_state {
    C_HEAD,    /* reading a request head */
    C_ROUTE,   /* head complete, choosing an instance */
    C_HELD,    /* waiting for an instance to become ready */
    C_CONNECT, /* connecting upstream */
    C_PROXY,   /* request and response being relayed */
    C_TUNNEL,  /* after 101 Switching Protocols: raw bytes both ways */
    C_H2,      /* an HTTP/2 connection: its streams are clients of their own (h2.c) */
    C_CLOSING,
};

struct client {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uint64_t stall_written; /* out.written and kago__outq_unsent when the client last stopped taking a */
    size_t stall_unsent;    /* started response: the same at the send timeout, it took nothing since */
    bool stall_armed;       /* the timer runs for --send-timeout */
    struct server *srv;
    struct shard *shard;        /* the loop it is on (shard.c) */
    struct shard *move_to;      /* client_move waits for its writes to end */
    int moved_fd;               /* moved (no handles yet): its socket */
    bool h2_placed;             /* h2c: on the loop of its first stream's app; TLS: of its name's */
    struct sbuf pre;            /* a handshake loop's: ciphertext it had not written yet (until it arrives) */
    bool handed;                /* a handshake loop's, not arrived yet (kago__client_handed) */
    bool h2_wait;               /* ALPN h2, not placed by its name: its first stream's head places it */
    struct client *prev, *next; /* srv->clients */
    enum client_state state;
    char *rbuf;
    size_t rlen, rpos;
    struct outq out;
    struct http_req_info info;
    struct app_rt *app;
    struct pool_waiter waiter;
    struct pool_inst *pi;
    struct instance *inst;
    struct upconn *up;
    uint64_t t_begin, t_held; /* us */
    int64_t cold_us;          /* -1 when the request did not wait */
    const char *cold_kind;    /* with cold_us: NULL (a start), "restore" or "thaw" */
    uint64_t body_in, out_mark;
    int status, retries;
    unsigned interim; /* 1xx responses of the app to this request */
    bool reading, req_begun, req_done, resp_started, close_after, eof, counted, parsing, need_exec, closed;
    bool given;   /* handed to a new serve (upgrade) */
    bool to_give; /* a request loop's, idle during a hand-over: not read, given at the first loop's tick */
    bool active;  /* read something since the last kago__client_trim_idle */
    bool trimmed; /* its buffers given back since it last read */
    /* TLS (NULL: plain HTTP): what arrives is decrypted into rbuf, out encrypts what is queued */
    struct tls_conn *tls;
    bool tls_pumping, tls_got_bytes, tls_failed;
    /* HTTP/2 (h2.c): h2 on the connection, h2s and conn (the connection's client) on each stream's */
    struct h2_conn *h2;
    struct h2_stream *h2s;
    struct client *conn;
    unsigned handles;
    char ip[48];
    struct http_msg *req; /* the request being parsed (conn.c: req()), NULL between requests */
};

struct listener {
    uv_tcp_t tcp;
    struct server *srv;
    bool admin, tls;
    const char *addr; /* as configured */
    int keep_fd;      /* a hand-over: a dup to listen again on if the new serve goes away (-1) */
};

#define TLS_RBUF (64 * 1024)

#define CLIENT_RBUF 8192 /* a connection's read buffer */

/* One event loop serving requests (shard.c). The first (id 0) is srv->loop. */
struct shard {
    struct server *srv;
    unsigned id;
    uv_loop_t *loop;
    char h2_rbuf[CLIENT_RBUF]; /* every HTTP/2 connection's: its frames are consumed as they arrive */
    /* HTTP/2 connections with frames to write at the end of this turn (h2.c, "corked"), and the idle
     * handle that writes them, started while there are any */
    TAILQ_HEAD(h2_corked, h2_conn) h2_corked;
    uv_idle_t h2_cork;
    struct client *clients;             /* its connections */
    uv_async_t wake;                    /* its inbox, its end */
    struct client *inbox, **inbox_tail; /* moved here (under srv->shard_mu) */
    /* id > 0 */
    uv_loop_t own;
    int efd; /* its copies of the plain listening sockets, each with EPOLLEXCLUSIVE (accept polls it) */
    uv_poll_t accept;
    uv_timer_t pause; /* accepting again after EMFILE and the like */
    int lfd[KAGO_SERVE_MAX_LISTEN];
    unsigned nlfd;
    uint64_t sleep_until; /* its loop's clock (ms) when it wakes unless woken (UINT64_MAX: never) */
    uv_thread_t tid;
    uv_mutex_t mu; /* held while its loop runs; the first loop takes every one to run */
    bool stop, ended;
};

struct server {
    uv_loop_t *loop;
    struct kago_serve_opts opts;
    struct listener ls[KAGO_SERVE_MAX_LISTEN], admin; /* the client listeners, in command line order */
    unsigned nls;
    unsigned https_port; /* the first TLS listener's port (https_redirect), 0: none */
    /* TLS (tls.c): the front context, the certificates of the running config, a scratch read buffer */
    struct tls_front *tls;
    struct tls_store *tls_store;
    struct h2_stats h2;
    uint64_t send_timeouts;         /* responses cut: their client took nothing for --send-timeout */
    uint64_t read_timeouts;         /* responses cut: their app sent nothing for --response-timeout */
    uint64_t tls_checked_ms;        /* certificate files last looked at */
    uint64_t upconn_swept_ms;       /* idle upstream connections last swept */
    uint64_t frozen_checked_ms;     /* the frozen instances' memory budget last enforced */
    struct acme *acme;              /* certificates on demand (acme.c), NULL without --acme-directory */
    struct admin_conn *admin_conns; /* (admin.c) */
    unsigned nadmin_conns;
    struct admin_auth *admin_auth; /* admin.c: its token, rate limit, unix socket (NULL: no admin) */
    uv_timer_t tick;
    size_t tick_records; /* records a tick writes at most (server.c, TICK_RECORDS) */
    uv_signal_t sigterm, sigint, sighup, sigchld;
    uv_timer_t watchdog; /* WATCHDOG=1 to systemd at half its WATCHDOG_USEC (systemd.c) */
    char sd_status[96];  /* the last STATUS= sent */
    struct router *router;
    struct app_rt *apps;
    struct smap names; /* name -> app of the apps not removed (keys: their app.name) */
    /* a reload's parse in the thread pool (server.c), who waits for it, and who waits for the next one */
    struct reload *reload_job;
    struct reload_waiter *reload_waiters, *reload_next;
    bool reload_again;
    bool ending; /* the loop has ended: handles are being closed */
    /* The apps the tick visits (server.c: kago__app_wake): those with instances, held requests, standbys,
     * old images or removed by a reload. 10,000 idle sites cost the 40 ticks a second nothing. */
    struct app_rt *ticking;
    /* The same apps, each with when the tick next has to visit it (0: now), in an array: the tick passes
     * over the others without touching them (at thousands of running instances, a visit each 40 times a
     * second was most of an idle serve's CPU). */
    struct tick_due {
        uint64_t due;
        struct app_rt *a;
    } * tick_due;
    size_t ntick_due, cap_tick_due;
    unsigned nclients; /* on every loop (atomic: request loops count theirs) */
    FILE *access_log;
    int host_netns;
    bool stopping;
    uint64_t started_ms;
    uint64_t total_instances;
    /* the start queue (instance.c): at most opts.max_starting instances between their create and ready
     * (or failure); the rest wait here in order, started from startq_timer (outside the pool's calls) */
    unsigned starting, startq_len, startq_killed;
    struct inst_queue startq;
    uv_timer_t startq_timer;
    /* the CRIU tier: kago_checkpoint_supported asked once, when an app first wants it */
    bool criu_checked, criu_ok;
    /* checkpoints, restores, starts (their kernel half) in the thread pool: no reaping meanwhile */
    unsigned jobs;
    bool reap_pending;
    /* starts' kernel halves run one at a time (in parallel they contend for the kernel's cgroup and mount
     * locks: more CPU per start, fewer starts per second), through work_req; the rest wait here in order
     * (instance.c) */
    uv_work_t work_req;
    struct inst_queue workq;
    bool work_busy;
    uint64_t reaped;        /* adopted processes (not instances) reaped as a child subreaper */
    uint64_t adopted;       /* instances taken over from a previous serve at start */
    uv_timer_t drain_timer; /* shutdown's deadline (--drain-timeout) */
    /* removed instances whose containers wait to be deleted in the thread pool, one at a time (instance.c,
     * "removals off the loop"; del_sync: on the loop, once it has ended) */
    struct inst_queue delq;
    struct instance *del_inst;
    unsigned ndeleting;
    uv_work_t del_req;
    bool del_busy, del_ok, del_sync;
    struct kago_error *del_err;
    /* signals to instances past a few milliseconds' worth per turn, sent in the next turns (instance.c) */
    struct inst_queue sigq;
    uv_idle_t sig_idle;
    /* readiness probes less than a millisecond apart (instance.c, probe_later): the instance whose next one
     * a timerfd of the first loop times */
    struct instance *fine;
    int fine_fd;
    uv_poll_t fine_poll;
    uint64_t sig_turn, sig_spent_us, sig_inline_us;
    unsigned root_tag;     /* a hash of --root in instance names: two roots never share a cgroup name */
    int root_lock;         /* <root>/.serve/.lock, flocked while this serve runs (-1: none) */
    uint64_t lock_wait_ms; /* --upgrade: how long to wait for the old serve to let the lock go */
    /* upgrade.c: the socket a new serve asks for the listeners on, and the hand-over to it */
    uv_pipe_t up_listen, up_peer;
    bool up_listening, up_peer_open;
    char up_rbuf[64];
    size_t up_rlen;
    bool handover;             /* the listeners were given to a new serve: draining, not accepting */
    bool handed_over;          /* drained: at exit its ready and frozen instances are left for it */
    pid_t handover_pid;        /* the new serve */
    uv_timer_t handover_timer; /* the drain's deadline */
    uv_process_t up_child;     /* SIGUSR2: the new serve this one started */
    bool up_child_running;
    uv_signal_t sigusr2;
    pid_t upgraded_from;         /* --upgrade: the serve whose listeners and instances this one took */
    int up_conn;                 /* --upgrade: the connection to it, open until the root lock is ours */
    unsigned given, give_failed; /* connections handed to the new serve, and those that could not go */
    struct kago_error *fatal;
    struct cluster *cluster; /* --cluster (cluster.c), NULL without */
    struct dash *dash;       /* the dashboard's sampler, sessions and event streams (dash.c) */
    struct warm *warm;       /* --warm (warm.c), NULL without */
    struct hsloops *hs;      /* --threads: the handshake loops (hsloop.c), NULL with one loop */
    /* --threads: the request loops (shard.c); shards[0] is this loop, the others own the apps */
    struct shard *shards;
    unsigned nshards, nstarted, shard_rr;
    /* --loop-priority: serve's own nice value and its event loops' in a storm of starts; the loops' thread
     * ids, to raise and lower them together (kago__loop_priority, kago__loops_storm) */
    int base_nice, loop_nice;
    bool nice_warned, loops_raised;
    uint64_t storm_ms, loop_calm_ms; /* the last time starts waited in the start queue; how long after */
    pthread_mutex_t loops_mu;
    pid_t *loops;
    size_t nloops;
    uv_mutex_t shard_mu; /* the inboxes and the deferred calls */
    struct deferred *deferred, **deferred_tail;
    uv_mutex_t world_mu;
    uv_cond_t world_cv;
    int world_want;    /* the first loop wants to run: request loops wait for it */
    bool loop_stopped; /* kago__server_stop_loop */
    /* scaler.c: the limits of all scale-up instances, summed at su_sum_at (a tick) for --budget-cpu/-memory
     */
    uint64_t su_sum_at, su_victimless_at;
    int64_t su_cpu_sum, su_mem_sum;
};

/* warm sandboxes (warm.c): init after the spawner starts (nothing without --warm or a spawner); take gives
 * a start of spec a sandbox's id for opts.warm (0: none ready, or spec cannot use one); settle says which
 * pid the create made (-1: it failed), so that a sandbox it did not use is ended; stop kills and reaps
 * every sandbox. */
void kago__warm_init(struct server *srv);
/* A warm sandbox for a start of spec (its id, 0: none), and the cgroup it was cloned into (the start's
 * cgroup_path, set in *cgroup_path; valid until kago__warm_settle). */
unsigned kago__warm_take(struct server *srv, const struct kago_spec *spec, const char **cgroup_path);
/* After the start that took sandbox id: started (its create began) with pid (-1: not known yet, the
 * spawner cloned it after all). */
void kago__warm_settle(struct server *srv, unsigned id, bool started, pid_t pid);
void kago__warm_stats(struct server *srv, uint64_t *hits, uint64_t *misses, unsigned *ready);
/* After the apps are loaded: one sandbox made ahead for each namespace set an app's cold start uses, so that
 * the first start (after serve's start, an upgrade, a reload) takes one too. */
void kago__warm_expect(struct server *srv);
/* The clone flags of a start of spec (its warm key); false when it takes no sandbox (it joins a namespace or
 * names a cgroup of its own). */
bool kago__warm_key(const struct kago_spec *spec, uint64_t *flags);
/* The warm key of app a's cold start; false when its starts take no sandbox (instance.c). */
bool kago__app_warm_flags(const struct app_rt *a, uint64_t *flags);
void kago__warm_stop(struct server *srv);

/* shard.c: --threads N, the request loops */
extern _Thread_local struct shard *kago__shard_self; /* NULL on the first loop and other threads */
unsigned kago__shards_wanted(struct server *srv);    /* 1: the first loop only */
void kago__shards_init(struct server *srv, unsigned n);
int kago__shards_start(struct server *srv, struct kago_error **err);
/* The request loops accept on the plain listeners open now (none once stopping or handing over). */
void kago__shards_listen(struct server *srv);
/* Runs the first loop until it ends; with request loops, each pass holds the world lock. */
void kago__shards_run(struct server *srv);
void kago__shards_join(struct server *srv); /* the request loops end (their connections are closed) */
void kago__shards_free(struct server *srv);
/* The loop that owns the app of that name, and the next request loop in turn for a new connection. */
struct shard *kago__shard_of(struct server *srv, const char *app);
struct shard *kago__shard_next(struct server *srv);
/* From a request loop: fn(a, b) runs on the first loop (at once when called there). */
void kago__shard_defer(struct server *srv, void (*fn)(void *a, void *b), void *a, void *b);
/* c (its state, no handles: kago__client_move) goes to loop to, which takes it with kago__client_arrive. */
void kago__shard_give(struct shard *to, struct client *c);

/* hsloop.c: --threads N, the N - 1 loops that take TLS handshakes and hand connections to this one */
unsigned kago__hs_default_threads(void); /* the CPUs serve may run on */
/* After the listeners are up: starts the loops (none with one thread or no TLS listener). */
int kago__hs_start(struct server *srv, struct kago_error **err);
/* The loops accept on the TLS listeners open now (none once stopping or handing over); when it returns,
 * no loop accepts on one closed since. */
int kago__hs_listen(struct server *srv, struct kago_error **err);
/* Shutdown: the loops stop accepting and end the handshakes they have. join waits for their threads
 * (before the first loop's last run: the connections they handed over meanwhile are closed), free frees the
 * rest after it. */
void kago__hs_stop(struct server *srv);
void kago__hs_join(struct server *srv);
void kago__hs_free(struct server *srv);
void kago__hs_stats(const struct server *srv, unsigned *loops, uint64_t *handed);

/* time */
uint64_t kago__serve_now_us(void);
static inline uint64_t kago__serve_now_ms(void)
{
    return kago__serve_now_us() / 1000;
}

/* conn.c */
void kago__client_accept(struct server *srv, uv_stream_t *listener, bool tls);
/* A TLS connection a handshake loop hands over (hsloop.c): its socket, its TLS state (the handshake done,
 * or held for a certificate on demand) and the ciphertext it had not written yet (out, copied). */
void kago__client_take_tls(struct server *srv, int fd, struct tls_conn *tls, const struct sbuf *out);
void kago__client_attach(struct client *c, struct pool_inst *pi); /* the pool chose pi */
void kago__client_reject(struct client *c, int status);
/* A held request whose app left in a reload (removed, or renamed: its host another app's now) is routed
 * again, to the app that has its host now, else 404 (it was a 503, for a host still served). */
void kago__client_reroute(struct client *c);
/* Upstream events for the client using up. */
void kago__client_upstream_ready(struct client *c);           /* connected: send the request */
void kago__client_upstream_failed(struct client *c, int err); /* before any response byte */
int kago__client_resp_head(struct client *c, struct http_msg *resp);
int kago__client_resp_body(struct client *c, const char *at, size_t n);
void kago__client_resp_done(struct client *c);
void kago__client_resp_truncated(struct client *c);
void kago__client_tunnel_data(struct client *c, const char *at, size_t n);
void kago__client_upstream_drained(struct client *c);
void kago__client_close_all(struct server *srv, bool idle_only);
void kago__client_close_shard(struct shard *s); /* a request loop ends: every connection it has */
/* A client moved to loop s (kago__shard_give): its socket and state are taken over there. */
void kago__client_arrive(struct shard *s, struct client *c);
void kago__client_discard(struct client *c);     /* one that never arrived (serve ended) */
void kago__client_take(struct shard *s, int fd); /* a connection a request loop accepted */
/* A handshake loop's connection, its handshake done, for a request loop (kago__shard_give): pre is what it
 * had not written yet (taken). */
struct client *kago__client_handed(struct server *srv, int fd, struct tls_conn *tls, struct sbuf *pre);
/* On an event loop's thread, as it begins: its priority (--loop-priority). */
void kago__loop_priority(struct server *srv);
void kago__loop_priority_end(struct server *srv);
void kago__loops_storm(struct server *srv, bool storm);
/* In work given to libuv's pool (a pool thread): serve's own priority, not the loop's (--loop-priority). */
void kago__pool_priority(struct server *srv);
/* Once a second: a connection that read nothing since the last call and waits between requests gives its
 * buffers back (the pages of its 8 KiB read buffer and of nghttp2's frame buffer, OpenSSL's buffers). */
void kago__client_trim_idle(struct server *srv);
/* HTTP/2 (h2.c): a stream's client on the connection conn (st its h2 state, freed with it); its request
 * head (HTTP/1.1, len bytes) to parse and route; a failure answered with status (the exchange ended). */
struct client *kago__client_stream_new(struct client *conn, struct h2_stream *st);
void kago__client_stream_input(struct client *c, const char *head, size_t len);
void kago__client_stream_fail(struct client *c, int status);
void kago__client_close(struct client *c);
/* A started response waits for its client to take more (its queue is full): armed, --send-timeout without
 * progress cuts the connection (an HTTP/2 stream: resets it). */
void kago__client_stalled(struct client *c);
void kago__client_finish(struct client *c); /* closes the connection once what is queued is written */
/* An upgrade: connections move to the new serve between two requests (kago__upgrade_give); one that
 * cannot closes after its next response, or after HANDOVER_IDLE_MS idle. */
#define HANDOVER_IDLE_MS 250
/* idle_only: only the connections between two requests go (again, from the tick: those of request loops) */
void kago__client_handover(struct server *srv, bool idle_only);
void kago__client_handover_undone(struct server *srv);
/* The new serve: a connection given by the old one (fd), between two requests. */
void kago__client_adopt(struct server *srv, int fd);

/* upstream.c */
struct upconn *kago__upconn_get(struct instance *inst); /* an idle keep-alive connection or NULL */
/* A keep-alive connection idle this long is closed (as HAProxy purges idle server connections): at
 * thousands of mostly quiet instances, an fd in serve and a socket in the app each. */
#define UPCONN_IDLE_MS 10000
/* the shortest idle timeout an app would close a kept connection after (gunicorn's 2 s, Node's 5 s) */
#define UPCONN_APP_IDLE_MS 1000
/* Closes inst's keep-alive connections idle for UPCONN_IDLE_MS by now. */
void kago__upconn_sweep(struct instance *inst, uint64_t now);
/* Opens a new connection inside inst's netns to 127.0.0.1:port, c->up when for a client; the result
 * comes through kago__client_upstream_ready/failed (or the probe logic when client is NULL), the
 * failure at once when there is no socket (NULL is returned then). */
struct upconn *kago__upconn_open(struct instance *inst, struct client *c);
void kago__upconn_release(struct upconn *u, bool reusable);
void kago__upconn_close(struct upconn *u);
void kago__upconn_resume(struct upconn *u); /* read again after the client drained */
void kago__upconn_pause(struct upconn *u);

/* instance.c */
extern const struct pool_ops kago__serve_pool_ops;
struct pool_cfg kago__serve_pool_cfg(const struct kago_app *a);
void kago__instance_probe_result(struct instance *inst, int status);
void kago__instance_unref(struct instance *inst);
void kago__instance_queues_init(struct server *srv);
void kago__instance_queues_end(struct server *srv);
bool kago__instance_check_exit(struct instance *inst);
/* One of inst's upstream connections read (its first response) or closed: from any loop. */
void kago__instance_answered(struct instance *inst);
/* The CRIU tier, from the tick: picks the instance to image, then images it off the loop. */
void kago__instance_checkpoint_tick(struct app_rt *a, uint64_t now);
/* <image_root>/<generation>: where the image of the app's container of that generation goes (caller
 * frees). */
char *kago__app_image_dir(const struct app_rt *a, unsigned generation);
/* The app uses the CRIU tier (checkpoint :after_ready or :at_listen). */
static inline bool kago__app_criu(const struct kago_app *a)
{
    return a->checkpoint_after_ready || a->checkpoint_at_listen;
}
/* 1 when NET_DIR/tcp or NET_DIR/tcp6 (a /proc/PID/net) lists a socket listening on port, 0 when not,
 * -errno when neither file can be read. */
int kago__serve_listening(const char *net_dir, unsigned port);

/* Watches inst, whose container runs (inst->c): polls its pidfd for its exit (the probe timer is
 * initialised, not started). */
void kago__instance_watch(struct instance *inst);

/* adopt.c: instance records and adoption at start */
uint64_t kago__app_def_hash(const struct kago_app *a);
int kago__record_write(struct instance *inst, struct kago_error **err);
void kago__record_remove(struct instance *inst);
/* From the tick, for an app it visits: a state change is recorded then, the idle clock within
 * RECORD_ACTIVE_MS; at most *budget records, less what it wrote. False: some were left for the next tick. */
bool kago__records_app(struct app_rt *a, size_t *budget);
/* Adopts the instances a previous serve with this root left running, removes the others. */
int kago__serve_adopt(struct server *srv, struct kago_error **err);

/* upgrade.c: zero-downtime restart and upgrade */
/* Listens on <root>/.serve/.upgrade.sock (after the root lock is taken); SIGUSR2 starts a new serve. */
int kago__upgrade_listen(struct server *srv, struct kago_error **err);
/* --upgrade: asks the serve running with this root for its listeners: fds[i] gets the one for srv->ls[i]
 * (same kind and address, else the next of its kind in order; -1: none), *admin_fd the admin one (-1: none);
 * what is left over is closed. It stops accepting and drains. */
int kago__upgrade_request(struct server *srv, int *fds, int *admin_fd, struct kago_error **err);
/* Sends n client connections (fds, between two requests) to the new serve; 0, or -1 when they cannot go
 * (the caller keeps them). At most UPGRADE_MAX_FDS at a time. */
#define UPGRADE_MAX_FDS 64
int kago__upgrade_give(struct server *srv, const int *fds, int n);
/* --upgrade, once the old serve is gone: adopts the connections it gave (read from up_conn). */
void kago__upgrade_take_clients(struct server *srv);
/* From the tick: ends the hand-over once the last connection and start are done. */
void kago__upgrade_tick(struct server *srv);
/* At exit after a hand-over: its instances stay for the new serve (1), or not (0). */
bool kago__upgrade_leaves(struct instance *inst);
void kago__upgrade_close(struct server *srv);
/* SIGTERM while handing over: cut what is left and exit, leaving the instances to the new serve. */
void kago__upgrade_cut(struct server *srv);
/* Listeners: (re)creates l on fd (an inherited or handed-over socket) or addr. */
int kago__server_listen(struct server *srv, struct listener *l, const char *addr, int fd, bool admin,
                        struct kago_error **err);

/* server.c */
/* Parses "IP:PORT" ("[IPv6]:PORT"). 0, or < 0 with *err. */
int kago__server_parse_addr(const char *s, struct sockaddr_storage *ss, struct kago_error **err);
void kago__app_unref(struct app_rt *a);
/* Puts a on the tick's list (srv->ticking) if it is not there. */
void kago__app_wake(struct app_rt *a);
/* Its pool changed: the tick visits it next time. */
void kago__app_touched(struct app_rt *a);
/* Takes the user namespace ranges of the apps that have none yet, in one pass over the pool's record. */
void kago__apps_take_ranges(struct server *srv);
void kago__server_maybe_exit(struct server *srv);
void kago__server_stop_loop(struct server *srv); /* uv_stop, seen by kago__shards_run */
/* Reaps zombie children that are not instances (adopted after restores); deferred while a
 * checkpoint runs, since its criu child is waited for by the worker thread. */
void kago__server_reap(struct server *srv);

/* systemd.c: sd_notify and sd_listen_fds without libsystemd */
/* Reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID once and removes them from the environment. */
void kago__systemd_init(void);
bool kago__systemd_notifying(void);
/* "NOTIFY_SOCKET=..." as serve was given it, or NULL (a new serve started by SIGUSR2 gets it too). */
const char *kago__systemd_env(void);
/* fd is a listening TCP socket (IPv4 or IPv6); else < 0 with *err. */
int kago__check_listen_fd(int fd, struct kago_error **err);
/* systemd's watchdog interval for this process (WATCHDOG_PID absent or ours), 0 when none. */
uint64_t kago__systemd_watchdog_usec(void);
/* Sends one notify datagram (printf-style "KEY=VALUE\n..."): 1 sent, 0 no notify socket, -errno. */
int kago__systemd_notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
uint64_t kago__systemd_monotonic_usec(void); /* CLOCK_MONOTONIC, for MONOTONIC_USEC= */
/* Socket activation: the listening TCP sockets passed by systemd (LISTEN_PID ours), the one named
 * "admin" in LISTEN_FDNAMES to *admin_fd, the other to *main_fd (-1: none passed). The LISTEN_
 * variables are removed from the environment. Returns 0, or < 0 with *err for fds serve cannot use. */
int kago__systemd_listen_fds(int *main_fd, int *admin_fd, struct kago_error **err);
/* serve's notifications; each is a no-op without NOTIFY_SOCKET. ready: READY=1 and STATUS=, and the
 * watchdog timer; tick: STATUS= when it changed (about once a second); reloading/reloaded: RELOADING=1
 * with MONOTONIC_USEC, then READY=1 (err: the reload failed, said in STATUS=); stopping: STOPPING=1. */
void kago__systemd_ready(struct server *srv);
void kago__systemd_tick(struct server *srv);
void kago__systemd_reloading(void);
void kago__systemd_reloaded(struct server *srv, const struct kago_error *err);
void kago__systemd_stopping(struct server *srv);

/* logs.c: per-app logs, <root>/logs/<app>/current.log (docs/serve.md) */
/* Makes inst's stdout and stderr: two FIFOs under the app's log dir, read on the loop. fds[1] and fds[2]
 * get the instance's ends (the caller closes them once the container is made); on failure they are -1
 * and the instance's output is not captured. */
void kago__logs_open(struct instance *inst, int fds[3]);
/* An adopted instance: reads the FIFOs the previous serve made for it, if they are there. */
void kago__logs_adopt(struct instance *inst);
/* The instance is gone (its processes dead or being killed): reads what its streams still hold, records
 * their last unfinished lines, closes them and removes its FIFOs. */
void kago__logs_close(struct instance *inst, bool keep_fifos);
/* Streams that spent their app's credit (a flood) are read again once it is back: each tick. */
void kago__logs_tick(uint64_t now);
/* Removes the FIFOs of an instance of app that is not adopted. */
void kago__logs_forget(struct server *srv, const char *app, const char *name);
/* The app is freed: its log file is closed once no stream writes to it. */
void kago__logs_app_free(struct app_rt *a);

/* appsrc.c: what an app must have before serve takes it (where: "FILE" for messages); 0 or < 0 with *err. */
int kago__app_check(const struct kago_app *a, const char *where, struct kago_error **err);
/* Evaluates Kagofile source (named where in messages: "FILE:LINE: ...") that must define exactly one app
 * (named want_name, unless NULL) passing kago__app_check; fills *out (kago_app_free). 0 or < 0 with *err. */
int kago__app_from_source(const char *where, const char *src, size_t len, const char *want_name,
                          struct kago_app *out, struct kago_error **err);

/* server.c: one app at a time (--cluster). set: adds app, or replaces the app of that name as a reload
 * does (container changed: new instances), taking *app on success; refused (nothing changes) when one of
 * its hosts is invalid or another app's. drop: the app drains away; false when there is none. */
int kago__server_app_set(struct server *srv, struct kago_app *app, int64_t etcd_rev, struct kago_error **err);
bool kago__server_app_drop(struct server *srv, const char *name);
/* The app of that name that a reload has not removed, or NULL. */
struct app_rt *kago__server_app(struct server *srv, const char *name);
/* A caller of kago__server_reload waiting for its result: done(w, err) is called once (err NULL: the reload
 * is applied; else why it failed and the running config stays). */
struct reload_waiter {
    void (*done)(struct reload_waiter *w, const struct kago_error *err);
    struct reload_waiter *next;
    bool queued;
};
/* SIGHUP, POST /reload: reads the Kagofiles again (off the loop) and applies them; w (may be NULL) is told
 * when done, possibly before this returns (--cluster, stopping). */
void kago__server_reload(struct server *srv, struct reload_waiter *w);
/* w no longer waits (its connection closed); nothing if it was told already. */
void kago__server_reload_forget(struct server *srv, struct reload_waiter *w);

/* cluster.c: --cluster, --node, --advertise (docs/cluster.md) */
int kago__cluster_start(struct server *srv, struct kago_error **err);
void kago__cluster_stop(struct server *srv);   /* SIGTERM: revoke the node's lease, stop watching */
bool kago__cluster_busy(struct server *srv);   /* the revoke is still in flight */
void kago__cluster_free(struct server *srv);   /* before the loop's last run */
void kago__cluster_relist(struct server *srv); /* SIGHUP, POST /reload: every app from etcd again */
struct cluster_stats {
    uint64_t nodes;
    bool etcd_up;
    int64_t revision;
    uint64_t rtt_us;    /* the last keepalive's round trip to etcd */
    int64_t lag;        /* revisions etcd has that the watch has not applied yet */
    uint64_t forwarded; /* requests sent to another node */
    uint64_t writes;    /* puts, deletes and txns sent to etcd */
};
/* placement.c: --cluster's remote instances (another node's, reached at its --advertise address) */
struct remote;
/* A socket for a connection to remote instance inst (host network namespace) and its address in *sa;
 * < 0: -errno. */
int kago__cluster_socket(struct instance *inst, struct sockaddr_in *sa);
/* A connect to inst's node failed: it is not chosen again. */
void kago__cluster_peer_failed(struct instance *inst, int status);
/* ip (a client's) is another node of the cluster: its X-Forwarded-Proto and -Host are kept. */
bool kago__cluster_trusts(const struct server *srv, const char *ip);
/* The pool's ops of a cluster app: local instances as kago__serve_pool_ops, and other nodes' instances. */
extern const struct pool_ops kago__cluster_pool_ops;
/* Kago-Hops at or past it: 508 rather than forwarding again. */
#define KAGO_HOPS_MAX 3
void kago__cluster_stats(struct server *srv, struct cluster_stats *st);

/* slog.c: the server log on stderr (--log-format). level: SLOG_ERR, SLOG_WARN or SLOG_INFO. */
/* A line about the app (text: "kago serve: app APP: MSG"), about instance inst of it ("kago serve: INST:
 * MSG" when app is NULL), or about serve ("kago serve: MSG"). srv may be NULL before the server exists.
 * JSON lines carry app and instance as fields, and MSG without the prefix. */
void kago__slog(const struct server *srv, int level, const char *app, const char *inst, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* A line about inst: text "kago serve: INST: MSG"; JSON with its app and instance. */
void kago__ilog(const struct instance *inst, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The resolved --log-format (AUTO becomes TEXT or JOURNAL), for the access log. */
enum kago_log_format kago__slog_format(const struct server *srv);
/* What inst printed last (its streams read first, without waiting; an unfinished last line included),
 * NUL-terminated, empty when nothing or not captured. Valid until the next call. */
const char *kago__logs_tail(struct instance *inst);

/* scaler.c: a.scale_up (scaleup.h is the policy) */
/* From the tick, for a ticking app with a.scale_up: samples its ready instances when due, applies steps. */
void kago__scaler_app(struct app_rt *a, uint64_t now);
/* pool_ops.may_scale_out: with scale_out_at_top, only when every instance is at the top of its range. */
bool kago__scaler_may_scale_out(struct pool *p);
/* inst's CPU quota (us per 100 ms) and memory limit (bytes) now, -1 when none. */
void kago__scaler_limits(const struct instance *inst, int64_t *cpu, int64_t *mem);
/* /ps: ,"cpu_limit":CORES,"memory_limit":BYTES,"scale_steps":N of an instance; ,"scale_up":{...} of an app.
 */
struct sbuf;
void kago__scaler_ps_json(struct sbuf *b, const struct instance *inst);
void kago__scaler_app_json(struct sbuf *b, const struct app_rt *a);
/* The limits given to the instances of every scale-up app now (CPU quota us per 100 ms, bytes). */
void kago__scaler_totals(const struct server *srv, int64_t *cpu, int64_t *mem);
/* /ps: ,"scale_up":{"cpu_given":CORES,"memory_given":BYTES,"budget_cpu":CORES,"budget_memory":BYTES} (0:
 * none), when there is a budget or an app with a.scale_up */
void kago__scaler_server_json(struct sbuf *b, const struct server *srv);

/* admin.c */
void kago__admin_accept(struct server *srv, uv_stream_t *listener);
/* Closes admin connections whose request did not come whole within 10 s (called about every second). */
void kago__admin_sweep(struct server *srv, uint64_t now);
/* At exit: every admin connection closes (and is freed), before the loop's other handles. */
void kago__admin_close_all(struct server *srv);
/* Before the admin listener: --admin unix:PATH listens there (mode 0600, no token asked); else reads or
 * makes the bearer token (--admin-token, default <root>/.serve/.admin-token) and the caller
 * listens on TCP. Returns 0, or < 0 with *err set. */
int kago__admin_setup(struct server *srv, bool tcp_passed, struct kago_error **err);
/* The unix socket's path, or NULL when the admin listener is TCP. */
const char *kago__admin_unix_path(const struct server *srv);
/* Writes where the admin API listens (tcp_addr "IP:PORT", else the unix socket; "off" with --admin off) and
 * serve's pid to <root>/KAGO_SERVE_ADMIN_ADDR, for kago ps and kago reload (removed at exit). */
void kago__admin_publish(struct server *srv, const char *tcp_addr);
/* After the loop closed every handle: removes the unix socket (when it is still ours), frees the rest. */
void kago__admin_cleanup(struct server *srv);

/* metrics helpers */
void kago__metrics_count(struct app_rt *a, int status);

#endif
