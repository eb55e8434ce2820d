/* kago serve: the string map (smap.c) against a plain array, through adds, finds and deletes that collide
 * and wrap around the table. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smap.h"
#include "tap.h"

#define N 3000

static char keys[N][16];
static int in[N]; /* the reference: is keys[i] in the map */

static int check_all(const struct smap *m)
{
    size_t n = 0;
    for (int i = 0; i < N; i++) {
        struct smap_slot *s = kago__smap_find(m, keys[i], strlen(keys[i]));
        if (!!s != in[i] || (s && s->value != &keys[i]))
            return 0;
        n += in[i];
    }
    return n == m->n;
}

int main(void)
{
    struct smap m;
    kago__smap_init(&m, 4);
    ok(kago__smap_find(&m, "a", 1) == NULL && kago__smap_get(&m, "a") == NULL, "an empty map finds nothing");
    for (int i = 0; i < N; i++)
        snprintf(keys[i], sizeof(keys[i]), "app%d", i);
    int added = 1;
    for (int i = 0; i < N; i++) {
        added &= kago__smap_add(&m, keys[i], strlen(keys[i]), &keys[i]) == NULL;
        in[i] = 1;
    }
    ok(added && m.n == N && m.cap >= 2 * N, "%d keys added, the table grew to %zu", N, m.cap);
    ok(check_all(&m), "each key finds its value");
    struct smap_slot *dup = kago__smap_add(&m, "app7", 4, NULL);
    ok(dup && dup->value == &keys[7] && m.n == N, "adding a key again gives its entry and adds nothing");
    ok(kago__smap_get(&m, "app12") == &keys[12], "smap_get of a NUL-terminated key");
    ok(kago__smap_find(&m, "app1", 3) == NULL, "a prefix of a key is another key");

    srand(7);
    int good = 1;
    for (int round = 0; round < 20000; round++) {
        int i = rand() % N;
        if (in[i]) {
            good &= kago__smap_del(&m, keys[i], strlen(keys[i]));
            in[i] = 0;
        } else {
            good &= kago__smap_add(&m, keys[i], strlen(keys[i]), &keys[i]) == NULL;
            in[i] = 1;
        }
        if (round % 1000 == 0)
            good &= check_all(&m);
    }
    ok(good && check_all(&m), "20,000 random adds and deletes: every key still found, and only those");
    ok(!kago__smap_del(&m, "nope", 4), "deleting a missing key says so");
    for (int i = 0; i < N; i++)
        if (in[i])
            kago__smap_del(&m, keys[i], strlen(keys[i]));
    int empty = m.n == 0;
    for (size_t i = 0; i < m.cap; i++)
        empty &= m.slots[i].key == NULL;
    ok(empty, "deleting every key leaves every slot empty");
    kago__smap_fini(&m);

    /* the backward shift: keys whose home slot is the same, deleted from the middle of their run */
    kago__smap_init(&m, 8);
    char many[64][8];
    for (int i = 0; i < 64; i++) {
        snprintf(many[i], sizeof(many[i]), "k%d", i);
        kago__smap_add(&m, many[i], strlen(many[i]), many[i]);
    }
    good = 1;
    for (int i = 0; i < 64; i += 3)
        good &= kago__smap_del(&m, many[i], strlen(many[i]));
    for (int i = 0; i < 64; i++) {
        void *v = kago__smap_get(&m, many[i]);
        good &= i % 3 == 0 ? v == NULL : v == many[i];
    }
    ok(good && m.n == 64 - 22, "deleting every third key keeps the others reachable");
    kago__smap_fini(&m);
    return tap_done();
}
