/* Internal: an open-addressing hash map from byte strings to pointers (linear probing, deletion by backward
 * shift, so no tombstones): serve's hosts and apps by name, a Kagofile's apps by name. The map does not own
 * its keys: a key must live, unchanged, as long as its entry. */
#ifndef KAGO_SERVE_SMAP_H
#define KAGO_SERVE_SMAP_H

#include <stdbool.h>
#include <stddef.h>

struct smap_slot {
    const char *key; /* NULL: empty */
    size_t len;
    void *value;
};

struct smap {
    struct smap_slot *slots;
    size_t cap, n; /* cap: a power of two, at least twice n */
};

/* An empty map sized for hint entries. */
void kago__smap_init(struct smap *m, size_t hint);
/* Frees the table (not the keys nor the values). */
void kago__smap_fini(struct smap *m);
/* The entry of key, or NULL. */
struct smap_slot *kago__smap_find(const struct smap *m, const char *key, size_t len);
/* Adds key -> value. Returns NULL, or (nothing added) the entry key already has. */
struct smap_slot *kago__smap_add(struct smap *m, const char *key, size_t len, void *value);
/* Removes key's entry; false when there was none. */
bool kago__smap_del(struct smap *m, const char *key, size_t len);
/* Convenience for NUL-terminated keys: the value of key, or NULL. */
void *kago__smap_get(const struct smap *m, const char *key);

#endif
