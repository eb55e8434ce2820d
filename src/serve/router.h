/* kago serve — Host → app, case-insensitive, port stripped. A router is immutable once built;
 * a reload builds a new one and swaps it in. */
#ifndef KAGO_SERVE_ROUTER_H
#define KAGO_SERVE_ROUTER_H

#include <stddef.h>

struct router;

struct router *kago__router_new(size_t hint);
void kago__router_free(struct router *r);
/* Maps host (any case, optional :port) to value. Returns 0, or -1 when the host is invalid or
 * already mapped (*other is then the value it maps to). */
int kago__router_add(struct router *r, const char *host, void *value, void **other);
/* The value for a Host header value, or NULL. */
void *kago__router_find(const struct router *r, const char *host, size_t len);

#endif
