/* kago serve — Host → app, case-insensitive, port stripped; "*.example.org" matches any host under
 * example.org (one or more labels), an exact host beats a wildcard and a longer wildcard a shorter one;
 * unmatched hosts go to the default, if any. A router is immutable once built; a reload builds a new
 * one and swaps it in. */
#ifndef KAGO_SERVE_ROUTER_H
#define KAGO_SERVE_ROUTER_H

#include <stddef.h>

struct router;

struct router *kago__router_new(size_t hint);
void kago__router_free(struct router *r);
/* Maps host (any case, optional :port; or a wildcard "*.domain") to value. Returns 0, or -1 when the
 * host is invalid or already mapped (*other is then the value it maps to, else NULL). */
int kago__router_add(struct router *r, const char *host, void *value, void **other);
/* Makes value the answer for hosts nothing else matches. Returns 0, or -1 when a default is already
 * set (*other is then that value). */
int kago__router_set_default(struct router *r, void *value, void **other);
/* The value for a Host header value (host may be NULL: no Host), else the default, else NULL. */
void *kago__router_find(const struct router *r, const char *host, size_t len);
/* The same without the default: NULL unless host is mapped exactly or by a wildcard. */
void *kago__router_find_host(const struct router *r, const char *host, size_t len);

#endif
