/* kago serve — an open-addressing hash of host keys; lookups do not allocate. Wildcards
 * ("*.sites.example") live in the same hash under their own key: a lookup tries the host, then strips
 * one label at a time from the left and tries "*.rest", so the longest wildcard wins, in O(labels). */
#include "router.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <kago/app.h>

#include "http.h"
#include "util.h"

struct slot {
    char *key;
    size_t len;
    void *value;
};

struct router {
    struct slot *slots;
    size_t cap, n;
    void *fallback; /* the default app's value, or NULL */
};

static uint64_t hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

struct router *kago__router_new(size_t hint)
{
    struct router *r = xcalloc(1, sizeof(*r));
    r->cap = 16;
    while (r->cap < hint * 2)
        r->cap *= 2;
    r->slots = xcalloc(r->cap, sizeof(*r->slots));
    return r;
}

void kago__router_free(struct router *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->cap; i++)
        free(r->slots[i].key);
    free(r->slots);
    free(r);
}

static struct slot *lookup(const struct router *r, const char *key, size_t len)
{
    size_t i = hash(key, len) & (r->cap - 1);
    for (;;) {
        struct slot *s = &r->slots[i];
        if (!s->key || (s->len == len && memcmp(s->key, key, len) == 0))
            return s;
        i = (i + 1) & (r->cap - 1);
    }
}

static void grow(struct router *r)
{
    struct slot *old = r->slots;
    size_t oldcap = r->cap;
    r->cap *= 2;
    r->slots = xcalloc(r->cap, sizeof(*r->slots));
    for (size_t i = 0; i < oldcap; i++)
        if (old[i].key)
            *lookup(r, old[i].key, old[i].len) = old[i];
    free(old);
}

int kago__router_add(struct router *r, const char *host, void *value, void **other)
{
    char key[256];
    if (other)
        *other = NULL;
    if (kago_app_host_invalid(host))
        return -1;
    size_t len = kago__http_host_key(host, strlen(host), key, sizeof(key));
    if (!len)
        return -1;
    if ((r->n + 1) * 2 > r->cap)
        grow(r);
    struct slot *s = lookup(r, key, len);
    if (s->key) {
        if (other)
            *other = s->value;
        return -1;
    }
    *s = (struct slot){.key = xstrdup(key), .len = len, .value = value};
    r->n++;
    return 0;
}

int kago__router_set_default(struct router *r, void *value, void **other)
{
    if (r->fallback) {
        if (other)
            *other = r->fallback;
        return -1;
    }
    r->fallback = value;
    return 0;
}

void *kago__router_find(const struct router *r, const char *host, size_t len)
{
    void *v = kago__router_find_host(r, host, len);
    return v ? v : r->fallback;
}

void *kago__router_find_host(const struct router *r, const char *host, size_t len)
{
    char key[256];
    size_t n = host ? kago__http_host_key(host, len, key, sizeof(key)) : 0;
    if (!n)
        return NULL;
    struct slot *s = lookup(r, key, n);
    if (s->key)
        return s->value;
    /* "a.b.sites.example": try "*.b.sites.example", then "*.sites.example", ... The label left of each
     * dot is no longer needed once passed: its last byte becomes the "*" (an empty label's dot too:
     * "a..sites.example" is under sites.example). */
    for (size_t i = 1; i + 1 < n; i++) {
        if (key[i] != '.')
            continue;
        key[i - 1] = '*';
        s = lookup(r, key + i - 1, n - i + 1);
        if (s->key)
            return s->value;
    }
    return NULL;
}
