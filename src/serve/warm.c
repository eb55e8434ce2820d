/* kago serve — warm sandboxes (docs/serve.md, "Warm sandboxes"): a few processes the spawner cloned ahead
 * of need, in the namespaces an app's instance gets (the clone flags are the key), with the app-independent
 * part of a start done (the clone itself: network, pid, mount, uts, ipc and user namespaces; the session,
 * / private, loopback up). A cold start of a spec with the same key takes one (start_cold: opts.warm) and
 * the spawner hands the start to it; the rest of the start is as usual.
 *
 * Per key, the number kept grows by one with each start that found none ready (up to --warm), shrinks by
 * one each WARM_SHRINK_MS in which fewer starts came than were kept, and is 1 once no start came for
 * WARM_IDLE_MS: a start after a quiet spell (a small site's usual start) still finds one. Refills are asked
 * for from the timer, not from a start. A sandbox is dropped after WARM_MAX_AGE_MS: its mount namespace is a
 * copy of the host's made when it was, and later host mounts are not in it. Every sandbox is serve's child:
 * each one's exit is watched through its pidfd, and it is reaped here; at exit all are killed and reaped.
 * Each has a cgroup of its own, kago/warm@<root tag>-<serve pid>-<id> (an '@' no instance name has: an app
 * may be named "warm"), made by the spawner which clones it
 * there; a start keeps that cgroup (its spec's cgroup_path), so that neither a mkdir nor a move into a cgroup
 * (an RCU grace period, ~1.5 ms here) is left on its path. The cgroup of a sandbox that got no start is
 * removed once it is reaped here (by the spawner when serve is gone). Nothing else of a sandbox is outside
 * its own namespaces. */
#include <errno.h>
#include <glob.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "container_int.h"
#include "serve_int.h"
#include "spawner.h"
#include "util.h"

#define WARM_KEYS       16
#define WARM_TICK_MS    2
#define WARM_SHRINK_MS  10000
#define WARM_MAX_AGE_MS 60000
#define WARM_PENDING_MS 5000 /* an answer lost with a restarted spawner */
#define WARM_WAIT_MS    50   /* the longest a refill waits for starts in flight */
#define WARM_QUIET_MS   1    /* and for the app a start took a sandbox for to answer (its first ms) */

struct warm_sb {
    struct warm_sb *next;
    struct warm *w;
    uint32_t id;
    uint64_t flags;
    pid_t pid;
    pid_t maker; /* the spawner that made it: its sysfs is a clone of that one's shared sysfs */
    int pidfd;
    uv_poll_t poll; /* its exit, while ready or dropping */
    bool ready;     /* made (else asked for) */
    bool taken;     /* handed to a start: no longer ours until settled */
    bool dropping;  /* ended: reaped when its pidfd turns readable */
    bool polling;
    bool cg_given;    /* its cgroup is an instance's (a start that did not reach it went there) */
    uint64_t born_ms; /* asked for */
    char cg[64];      /* its cgroup */
};

struct warm_key {
    uint64_t flags;
    unsigned target;
    unsigned starts;  /* since the last shrink check */
    uint64_t last_ms; /* the last start */
    uint64_t fail_until_ms;
};

struct warm {
    struct server *srv;
    unsigned max;
    uint64_t idle_ms;
    struct warm_sb *sbs;
    struct warm_key keys[WARM_KEYS];
    size_t nkeys;
    uv_timer_t timer;
    uint64_t shrink_ms, busy_ms;        /* busy: since when starts in flight hold the refills back */
    uint64_t taken_ms, taken_before_ms; /* the last sandbox taken, and the one before */
    uint32_t next_id;
    bool stopping;
    uint64_t hits, misses, made;
};

static void sb_unlink(struct warm *w, struct warm_sb *sb)
{
    for (struct warm_sb **p = &w->sbs; *p; p = &(*p)->next)
        if (*p == sb) {
            *p = sb->next;
            return;
        }
}

/* Removes the cgroup of sandbox sb, reaped (or never made), unless an instance has it. */
static void sb_uncgroup(struct warm_sb *sb)
{
    if (sb->cg_given)
        return;
    kago__cgroup_remove(sb->cg);
    sb->cg_given = true; /* (once) */
}

static void on_sb_closed(uv_handle_t *h)
{
    struct warm_sb *sb = h->data;
    if (sb->pidfd >= 0)
        close(sb->pidfd);
    free(sb);
}

/* Forgets sb (unlinked already): its handle closed, then its pidfd and itself freed. */
static void sb_free(struct warm_sb *sb)
{
    if (sb->polling) {
        uv_close((uv_handle_t *)&sb->poll, on_sb_closed);
        return;
    }
    if (sb->pidfd >= 0)
        close(sb->pidfd);
    free(sb);
}

static void reap(struct warm_sb *sb, int flags)
{
    siginfo_t si;
    while (waitid((idtype_t)3 /* P_PIDFD */, (id_t)sb->pidfd, &si, WEXITED | __WALL | flags) < 0 &&
           errno == EINTR)
        ;
}

static void on_sb_exit(uv_poll_t *h, int status, int events)
{
    struct warm_sb *sb = h->data;
    (void)status;
    (void)events;
    reap(sb, WNOHANG);
    sb_uncgroup(sb);
    sb_unlink(sb->w, sb);
    sb_free(sb);
}

static void sb_watch(struct warm *w, struct warm_sb *sb)
{
    if (!sb->polling) {
        uv_poll_init(w->srv->loop, &sb->poll, sb->pidfd);
        sb->poll.data = sb;
        sb->polling = true;
    }
    uv_poll_start(&sb->poll, UV_READABLE, on_sb_exit);
}

/* Ends a sandbox not (or no longer) meant for a start: killed, and reaped once gone. */
static void sb_drop(struct warm *w, struct warm_sb *sb)
{
    sb->ready = false;
    sb->dropping = true;
    kago__spawner_warm_drop(sb->id);
    if (sb->pidfd < 0) {
        sb_uncgroup(sb);
        sb_unlink(w, sb);
        sb_free(sb);
        return;
    }
    syscall(SYS_pidfd_send_signal, sb->pidfd, SIGKILL, NULL, 0);
    sb_watch(w, sb);
}

static struct warm_key *key_get(struct warm *w, uint64_t flags, bool make)
{
    for (size_t i = 0; i < w->nkeys; i++)
        if (w->keys[i].flags == flags)
            return &w->keys[i];
    if (!make || w->nkeys == WARM_KEYS)
        return NULL;
    w->keys[w->nkeys] = (struct warm_key){.flags = flags};
    return &w->keys[w->nkeys++];
}

static unsigned key_have(const struct warm *w, uint64_t flags)
{
    unsigned n = 0;
    for (const struct warm_sb *sb = w->sbs; sb; sb = sb->next)
        n += sb->flags == flags && !sb->taken && !sb->dropping;
    return n;
}

static unsigned pending(const struct warm *w)
{
    unsigned n = 0;
    for (const struct warm_sb *sb = w->sbs; sb; sb = sb->next)
        n += !sb->ready && !sb->taken && !sb->dropping;
    return n;
}

static void on_timer(uv_timer_t *t);
static void cg_name(const struct warm *w, struct warm_sb *sb);

static void kick(struct warm *w)
{
    if (!w->stopping)
        uv_timer_start(&w->timer, on_timer, 0, 0);
}

static void on_made(void *arg, uint32_t id, pid_t pid, int pidfd, int code, const char *msg)
{
    struct warm *w = arg;
    struct warm_sb *sb = w->sbs;
    while (sb && sb->id != id)
        sb = sb->next;
    if (!sb) { /* forgotten meanwhile (a lost answer's deadline): end it */
        if (pidfd >= 0) {
            syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
            siginfo_t si;
            waitid((idtype_t)3, (id_t)pidfd, &si, WEXITED | __WALL);
            close(pidfd);
        }
        struct warm_sb gone = {.id = id};
        cg_name(w, &gone);
        sb_uncgroup(&gone);
        kago__spawner_warm_drop(id);
        return;
    }
    if (pid < 0) {
        struct warm_key *k = key_get(w, sb->flags, false);
        if (k && k->fail_until_ms < kago__serve_now_ms())
            kago__slog(w->srv, SLOG_WARN, NULL, NULL, "warm sandbox: %s (%s): none for 10 s", msg,
                       strerror(code > 0 ? code : EIO));
        if (k)
            k->fail_until_ms = kago__serve_now_ms() + 10000;
        sb_unlink(w, sb);
        sb_free(sb);
        return;
    }
    sb->pid = pid;
    sb->pidfd = pidfd;
    sb->ready = true;
    w->made++;
    kago__trace("warm: made");
    sb_watch(w, sb);
}

static void cg_name(const struct warm *w, struct warm_sb *sb)
{
    snprintf(sb->cg, sizeof sb->cg, "kago/warm@%04x-%x-%u", w->srv->root_tag, (unsigned)getpid(), sb->id);
}

/* Asks for the sandboxes a key lacks; returns false when the spawner could not be asked. */
static bool refill(struct warm *w, struct warm_key *k, uint64_t now)
{
    if (k->fail_until_ms > now)
        return true;
    for (unsigned have = key_have(w, k->flags); have < k->target; have++) {
        struct warm_sb *sb = xcalloc(1, sizeof *sb);
        *sb = (struct warm_sb){.w = w,
                               .id = ++w->next_id,
                               .flags = k->flags,
                               .pid = -1,
                               .maker = kago__spawner_pid(),
                               .pidfd = -1,
                               .born_ms = now};
        if (!sb->id)
            sb->id = ++w->next_id;
        cg_name(w, sb);
        kago__trace("warm: asked");
        if (kago__spawner_warm(k->flags, sb->id, sb->cg) < 0) {
            free(sb);
            k->fail_until_ms = now + 10000;
            return false;
        }
        sb->next = w->sbs;
        w->sbs = sb;
    }
    return true;
}

/* Every WARM_TICK_MS while something is to do: answers read, keys adapted, refills asked for. */
static void on_timer(uv_timer_t *t)
{
    struct warm *w = t->data;
    uint64_t now = kago__serve_now_ms();
    pid_t spawner = kago__spawner_check();
    kago__spawner_collect();
    bool shrink = now - w->shrink_ms >= WARM_SHRINK_MS;
    if (shrink)
        w->shrink_ms = now;
    for (size_t i = 0; i < w->nkeys; i++) {
        struct warm_key *k = &w->keys[i];
        if (now - k->last_ms >= w->idle_ms) /* one stays (the next start after a quiet spell takes it), */
            k->target = k->target && k->fail_until_ms <= now; /* unless it cannot be made (said once) */
        else if (shrink && k->starts < k->target && k->target > 1)
            k->target--;
        if (shrink)
            k->starts = 0;
    }
    for (struct warm_sb *sb = w->sbs, *next; sb; sb = next) {
        next = sb->next;
        struct warm_key *k = key_get(w, sb->flags, false);
        /* (one a spawner that is gone made: the network namespace of its /sys went with that spawner) */
        if (sb->ready && (!k || key_have(w, sb->flags) > k->target || now - sb->born_ms >= WARM_MAX_AGE_MS ||
                          sb->maker != spawner))
            sb_drop(w, sb);
        else if (!sb->ready && !sb->taken && !sb->dropping && now - sb->born_ms >= WARM_PENDING_MS) {
            sb_uncgroup(sb); /* (its sandbox, if one was made, ended with the spawner) */
            sb_unlink(w, sb);
            sb_free(sb);
        }
    }
    /* refills wait for the starts in flight (their children have the CPUs meanwhile) and for the app a
     * sandbox was just taken for to answer its first request, a while */
    if (!w->srv->starting && now - w->taken_ms >= WARM_QUIET_MS)
        w->busy_ms = 0;
    else if (!w->busy_ms)
        w->busy_ms = now;
    /* and for the start queue to empty: while starts wait in it, the machine's starts are at their limit
     * (--max-starting), and a sandbox made then competes with them; each would take it, but at more CPU
     * than its own clone (a storm of 1,000: 47-49 -> 57-60 starts per CPU-second) */
    bool busy = (w->busy_ms && now - w->busy_ms < WARM_WAIT_MS) || w->srv->startq_len;
    /* but a key left empty refills in a run of starts one after the other (two takes within WARM_WAIT_MS,
     * none queued): there each start in flight would hold its refill back until the pool ran dry, and a start
     * that finds none is a clone (on cgroup v1 with a move into its cgroup: an RCU grace period, 8-20 ms) */
    bool run = !w->srv->startq_len && w->taken_before_ms && now - w->taken_ms < WARM_WAIT_MS &&
               w->taken_ms - w->taken_before_ms < WARM_WAIT_MS;
    for (size_t i = 0; i < w->nkeys; i++)
        if (!busy || (run && !key_have(w, w->keys[i].flags)))
            refill(w, &w->keys[i], now);
    bool wanted = false;
    for (size_t i = 0; i < w->nkeys; i++)
        wanted |= w->keys[i].target > 0 || key_have(w, w->keys[i].flags) > 0;
    if (pending(w) || busy || wanted)
        uv_timer_start(&w->timer, on_timer, pending(w) || busy ? WARM_TICK_MS : 1000, 0);
}

static void on_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

/* Whether the cgroup directory dir holds a process (one that cannot be read counts as holding one). */
static bool cg_populated(const char *dir)
{
    cleanup_free char *procs = xasprintf("%s/cgroup.procs", dir);
    size_t len = 0;
    cleanup_free char *pids = kago__read_file(procs, &len, NULL);
    return !pids || len > 0;
}

/* The empty cgroups of sandboxes an earlier serve of this root left (it and its spawner were killed):
 * removed. One that holds a process is the cgroup of an instance that took a sandbox, adopted by this
 * serve (or left to adoption's removal): it is not touched, and not waited on (a start-up must not wait
 * for the instances it adopts to exit). */
static void sweep(const struct server *srv)
{
    char pat[128];
    glob_t g;
    snprintf(pat, sizeof pat, "/sys/fs/cgroup/{*/,}kago/warm@%04x-*", srv->root_tag);
    if (glob(pat, GLOB_BRACE | GLOB_ONLYDIR | GLOB_NOSORT, NULL, &g) != 0)
        return;
    char own[32];
    snprintf(own, sizeof own, "@%04x-%x-", srv->root_tag, (unsigned)getpid());
    struct smap skip; /* basenames in use in some hierarchy, or removed already (keys: in g) */
    kago__smap_init(&skip, 8);
    for (size_t i = 0; i < g.gl_pathc; i++) {
        const char *base = strrchr(g.gl_pathv[i], '/') + 1;
        if (cg_populated(g.gl_pathv[i]))
            kago__smap_add(&skip, base, strlen(base), g.gl_pathv[i]);
    }
    for (size_t i = 0; i < g.gl_pathc; i++) {
        const char *base = strrchr(g.gl_pathv[i], '/') + 1;
        if (strstr(base, own) || kago__smap_add(&skip, base, strlen(base), g.gl_pathv[i]))
            continue;
        cleanup_free char *path = xasprintf("kago/%s", base);
        kago__cgroup_remove(path); /* (in every hierarchy: the next ones' entries of base are skipped) */
    }
    kago__smap_fini(&skip);
    globfree(&g);
}

void kago__warm_init(struct server *srv)
{
    sweep(srv);
    const char *env = getenv("KAGO_SERVE_WARM");
    unsigned max = srv->opts.warm;
    if (env && *env)
        max = (unsigned)strtoul(env, NULL, 10);
    if (!max || !kago__spawner_pid())
        return;
    struct warm *w = xcalloc(1, sizeof *w);
    w->srv = srv;
    w->max = max > 32 ? 32 : max;
    const char *idle = getenv("KAGO_SERVE_WARM_IDLE_MS");
    w->idle_ms = idle && *idle ? strtoull(idle, NULL, 10) : 30000;
    w->shrink_ms = kago__serve_now_ms();
    uv_timer_init(srv->loop, &w->timer);
    w->timer.data = w;
    kago__spawner_on_warm(on_made, w);
    srv->warm = w;
}

bool kago__warm_key(const struct kago_spec *spec, uint64_t *flags)
{
    if (spec->cgroup_path) /* (a cgroup of the app's own: a clone makes it) */
        return false;
    for (int i = 0; i < KAGO_NS_COUNT; i++)
        if (spec->join_ns[i])
            return false;
    *flags = kago__clone_flags(spec);
    return true;
}

unsigned kago__warm_take(struct server *srv, const struct kago_spec *spec, const char **cgroup_path)
{
    struct warm *w = srv->warm;
    uint64_t flags;
    struct warm_key *k = w && !w->stopping && kago__warm_key(spec, &flags) ? key_get(w, flags, true) : NULL;
    if (!k)
        return 0;
    uint64_t now = kago__serve_now_ms();
    k->last_ms = now;
    k->starts++;
    pid_t spawner = kago__spawner_check();
    kago__spawner_collect(); /* a sandbox made meanwhile */
    for (struct warm_sb *sb = w->sbs; sb; sb = sb->next)
        if (sb->ready && sb->flags == flags && sb->maker == spawner) {
            sb->ready = false;
            sb->taken = true;
            uv_poll_stop(&sb->poll); /* its exit is the instance's from here */
            w->hits++;
            w->taken_before_ms = w->taken_ms;
            w->taken_ms = now;
            kago__trace("warm: taken");
            kick(w);
            *cgroup_path = sb->cg;
            return sb->id;
        }
    w->misses++;
    kago__trace("warm: none ready");
    if (k->target < w->max)
        k->target++;
    kick(w);
    return 0;
}

void kago__warm_expect(struct server *srv)
{
    struct warm *w = srv->warm;
    if (!w || w->stopping)
        return;
    for (const struct app_rt *a = srv->apps; a; a = a->next) {
        uint64_t flags;
        struct warm_key *k = kago__app_warm_flags(a, &flags) ? key_get(w, flags, true) : NULL;
        if (k && !k->target)
            k->target = 1;
    }
    kick(w);
}

void kago__warm_settle(struct server *srv, unsigned id, bool started, pid_t pid)
{
    struct warm *w = srv->warm;
    struct warm_sb *sb = w ? w->sbs : NULL;
    while (sb && sb->id != id)
        sb = sb->next;
    if (!sb)
        return;
    if (pid > 0 && pid == sb->pid) { /* it is the instance's init now */
        sb_unlink(w, sb);
        sb_free(sb);
        return;
    }
    sb->taken = false;
    sb->cg_given = started; /* cloned after all: into a cgroup of the same path, the instance's now */
    sb_drop(w, sb);         /* the start did not reach it (failed before, or cloned after all) */
}

void kago__warm_stats(struct server *srv, uint64_t *hits, uint64_t *misses, unsigned *ready)
{
    struct warm *w = srv->warm;
    *hits = w ? w->hits : 0;
    *misses = w ? w->misses : 0;
    *ready = 0;
    for (struct warm_sb *sb = w ? w->sbs : NULL; sb; sb = sb->next)
        *ready += sb->ready;
}

void kago__warm_stop(struct server *srv)
{
    struct warm *w = srv->warm;
    if (!w)
        return;
    w->stopping = true;
    for (int i = 0; i < 100 && pending(w); i++) { /* answers on their way: up to a second */
        kago__spawner_collect();
        if (pending(w))
            usleep(10000);
    }
    for (struct warm_sb *sb = w->sbs, *next; sb; sb = next) {
        next = sb->next;
        if (sb->pidfd >= 0 && !sb->taken) {
            syscall(SYS_pidfd_send_signal, sb->pidfd, SIGKILL, NULL, 0);
            reap(sb, 0);
        }
        if (!sb->taken)
            sb_uncgroup(sb); /* (a pending one's, once its answer was lost, too) */
        if (!sb->taken)
            kago__spawner_warm_drop(sb->id);
        sb_unlink(w, sb);
        sb_free(sb);
    }
    kago__spawner_on_warm(NULL, NULL);
    srv->warm = NULL;
    uv_close((uv_handle_t *)&w->timer, on_timer_closed);
}
