/* kago serve --cluster: the node's state, shared by cluster.c (registration, list, watch) and
 * placement.c (where an app's instances run, forwarding to other nodes). docs/cluster.md. */
#ifndef KAGO_SERVE_CLUSTER_INT_H
#define KAGO_SERVE_CLUSTER_INT_H

#include <netinet/in.h>

#include "etcd.h"
#include "serve_int.h"

#define PREFIX      "/kago/"
#define APPS        "/kago/apps/"
#define NODES       "/kago/nodes/"
#define INSTANCES   "/kago/instances/" /* APP/NODE/INSTANCE = {"addr","node"}, on the node's lease */
#define STARTING    "/kago/starting/"  /* APP = NODE: who started the app's first instance (the claim) */
#define PAGE        1000
#define CALL_MS     2000
#define BACKOFF_MIN 100
#define BACKOFF_MAX 5000
#define REVOKE_MS   1000

/* A node under /kago/nodes/: where it is reached and its published load (its instances). */
struct cnode {
    char *name, *addr;
    int64_t load;
};

/* An instance another node published under /kago/instances/. */
struct rkey {
    char *key, *app, *node;
    struct sockaddr_in sa;
    bool bad; /* a connect to it failed: not bound again (its node is gone; the key goes with its lease) */
};

struct remote;
struct pub;
struct claim;

struct cluster {
    struct server *srv;
    struct etcd_client *etcd;
    char *node, *node_key, *node_val, *addr;
    int64_t ttl_s, lease, load_published;
    uv_timer_t ka_timer;    /* every TTL/3: the keepalive, or the registration again */
    uv_timer_t retry_timer; /* the list or the watch again, after a backoff */
    uv_timer_t reap_timer;  /* remote instances the pool stopped leave it (outside the pool's calls) */
    unsigned timers;        /* open */
    struct etcd_call *ka_call, *reg_call, *list_call, *watch_call, *revoke_call, *load_call;
    int64_t rev;      /* every event up to it is applied */
    int64_t list_rev; /* the list being paged is pinned to it */
    int64_t etcd_rev; /* the newest revision a unary call's header told */
    uint64_t rtt_us;  /* the last keepalive's round trip */
    struct etcd_kv *listed;
    size_t nlisted;
    struct cnode *nodes; /* sorted by name */
    size_t nnodes;
    struct rkey *rkeys;
    size_t nrkeys;
    struct remote *remotes; /* the pools' remote instances */
    struct pub *pubs;       /* this node's published instances */
    struct claim *claims;   /* the apps whose /kago/starting/ key this node holds */
    unsigned backoff_ms;
    bool watching, unary_ok, registered, stopping, relist_wanted, down_logged;
    bool dup_logged;       /* another serve put this node's key on its own lease: said once */
    int64_t refused_lease; /* the lease of another serve's key of this node's name: said once */
    char *last_error;      /* the last outage's message, logged once */
    uint64_t forwarded, claims_won, claims_lost, writes; /* counters (claims: for a debugger) */
};

/* placement.c */
/* The watch (or a list) says: an instance key put or deleted, a starting key deleted. */
void kago__place_instance_key(struct cluster *cl, const struct etcd_kv *kv, bool deleted);
void kago__place_starting_gone(struct cluster *cl, const char *app);
/* The list is applied: bound remote instances whose key is gone leave. */
void kago__place_relisted(struct cluster *cl);
/* The node (re)registered on a new lease: its ready instances are published again. */
void kago__place_registered(struct cluster *cl);
/* Each keepalive tick: the instances whose key a failed put (etcd away for a moment) or someone else's
 * delete left unwritten are put again; else the other nodes never saw them, and waited on their claim. */
void kago__place_retry(struct cluster *cl);
/* This node's instances (ready or starting) of every app: its published load. */
int64_t kago__place_local_load(struct cluster *cl);
void kago__place_free(struct cluster *cl);
void kago__rkeys_clear(struct cluster *cl);
/* Sends a write (kv/put, kv/deleterange, kv/txn) and counts it (kago_cluster_etcd_writes_total). */
struct etcd_call *kago__cluster_write(struct cluster *cl, const char *op, struct json_object *body,
                                      etcd_done_cb cb, void *arg);

#endif
