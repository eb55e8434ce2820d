/* kago serve — an open-addressing hash of host keys; lookups do not allocate. */
#include "router.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

void *kago__router_find(const struct router *r, const char *host, size_t len)
{
    char key[256];
    size_t n = kago__http_host_key(host, len, key, sizeof(key));
    if (!n)
        return NULL;
    struct slot *s = lookup(r, key, n);
    return s->key ? s->value : NULL;
}
