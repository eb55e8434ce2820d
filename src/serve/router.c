/* kago serve — an open-addressing hash of host keys; lookups do not allocate. Wildcards
 * ("*.sites.example") live in the same hash under their own key: a lookup tries the host, then strips
 * one label at a time from the left and tries "*.rest", so the longest wildcard wins, in O(labels). */
#include "router.h"

#include <stdlib.h>
#include <string.h>

#include <kago/app.h>

#include "http.h"
#include "smap.h"
#include "util.h"

struct router {
    struct smap hosts; /* owns its keys */
    void *fallback;    /* the default app's value, or NULL */
};

struct router *kago__router_new(size_t hint)
{
    struct router *r = xcalloc(1, sizeof(*r));
    kago__smap_init(&r->hosts, hint);
    return r;
}

void kago__router_free(struct router *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->hosts.cap; i++)
        free((char *)r->hosts.slots[i].key);
    kago__smap_fini(&r->hosts);
    free(r);
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
    struct smap_slot *s = kago__smap_find(&r->hosts, key, len);
    if (s) {
        if (other)
            *other = s->value;
        return -1;
    }
    kago__smap_add(&r->hosts, xstrdup(key), len, value);
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
    struct smap_slot *s = kago__smap_find(&r->hosts, key, n);
    if (s)
        return s->value;
    /* "a.b.sites.example": try "*.b.sites.example", then "*.sites.example", ... The label left of each
     * dot is no longer needed once passed: its last byte becomes the "*" (an empty label's dot too:
     * "a..sites.example" is under sites.example). */
    for (size_t i = 1; i + 1 < n; i++) {
        if (key[i] != '.')
            continue;
        key[i - 1] = '*';
        s = kago__smap_find(&r->hosts, key + i - 1, n - i + 1);
        if (s)
            return s->value;
    }
    return NULL;
}
