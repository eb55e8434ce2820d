/* The string map (smap.h). */
#include "smap.h"

#include <stdint.h>
#include <string.h>

#include "ident.h"
#include "util.h"

static uint64_t hash(const char *s, size_t n)
{
    return kago__fnv(KAGO__FNV_INIT, s, n);
}

void kago__smap_init(struct smap *m, size_t hint)
{
    m->cap = 16;
    while (m->cap < hint * 2)
        m->cap *= 2;
    m->n = 0;
    m->slots = xcalloc(m->cap, sizeof(*m->slots));
}

void kago__smap_fini(struct smap *m)
{
    free(m->slots);
    m->slots = NULL;
    m->cap = m->n = 0;
}

/* key's slot, or the empty slot where it would go */
static struct smap_slot *probe(const struct smap *m, const char *key, size_t len)
{
    size_t i = hash(key, len) & (m->cap - 1);
    for (;;) {
        struct smap_slot *s = &m->slots[i];
        if (!s->key || (s->len == len && memcmp(s->key, key, len) == 0))
            return s;
        i = (i + 1) & (m->cap - 1);
    }
}

struct smap_slot *kago__smap_find(const struct smap *m, const char *key, size_t len)
{
    if (!m->cap)
        return NULL;
    struct smap_slot *s = probe(m, key, len);
    return s->key ? s : NULL;
}

void *kago__smap_get(const struct smap *m, const char *key)
{
    struct smap_slot *s = kago__smap_find(m, key, strlen(key));
    return s ? s->value : NULL;
}

static void grow(struct smap *m)
{
    struct smap old = *m;
    kago__smap_init(m, old.cap);
    for (size_t i = 0; i < old.cap; i++)
        if (old.slots[i].key)
            *probe(m, old.slots[i].key, old.slots[i].len) = old.slots[i];
    m->n = old.n;
    free(old.slots);
}

struct smap_slot *kago__smap_add(struct smap *m, const char *key, size_t len, void *value)
{
    if (!m->cap)
        kago__smap_init(m, 0);
    if ((m->n + 1) * 2 > m->cap)
        grow(m);
    struct smap_slot *s = probe(m, key, len);
    if (s->key)
        return s;
    *s = (struct smap_slot){.key = key, .len = len, .value = value};
    m->n++;
    return NULL;
}

bool kago__smap_del(struct smap *m, const char *key, size_t len)
{
    struct smap_slot *s = kago__smap_find(m, key, len);
    if (!s)
        return false;
    /* backward shift: move up each following entry of the run that the hole would hide from its home */
    size_t mask = m->cap - 1, hole = (size_t)(s - m->slots);
    for (size_t i = (hole + 1) & mask; m->slots[i].key; i = (i + 1) & mask) {
        size_t home = hash(m->slots[i].key, m->slots[i].len) & mask;
        if (((i - home) & mask) >= ((i - hole) & mask)) { /* its home is at or before the hole */
            m->slots[hole] = m->slots[i];
            hole = i;
        }
    }
    m->slots[hole] = (struct smap_slot){0};
    m->n--;
    return true;
}
