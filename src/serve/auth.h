/* kago serve — the admin API's authentication, without libuv: the bearer token (read from
 * --admin-token FILE, made on first start), the Authorization header's check in constant time, and the
 * limit on failed attempts per client address. The admin listener (admin.c) feeds it. */
#ifndef KAGO_SERVE_AUTH_H
#define KAGO_SERVE_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <kago/error.h>

#define AUTH_TOKEN_BYTES 32 /* random bytes of a made token (64 hex characters) */
#define AUTH_TOKEN_MIN   16 /* characters a token read from a file must have at least */
#define AUTH_MAX_FAILS   10 /* failed attempts of one client within AUTH_WINDOW_MS ... */
#define AUTH_WINDOW_MS   60000
#define AUTH_BLOCK_MS    60000 /* ... get it 429 for this long */
#define AUTH_SLOTS       256   /* clients tracked; the least recent is forgotten beyond */

/* Reads the token in path (its first line, surrounding blanks trimmed), or makes one there when the file
 * is missing: AUTH_TOKEN_BYTES from getrandom in hex, mode 0600, written under path.tmp and linked into
 * place, so a reader never sees half a token. *made says which. Returns 0 with *token set (caller frees),
 * or < 0 with *err set: unreadable, world-accessible, too short, or blanks inside. */
int kago__auth_token_load(const char *path, char **token, bool *made, struct kago_error **err);

/* The token of the request head's "Authorization: Bearer TOKEN" header (name and scheme in any case):
 * returns true with *tok pointing into head and *len its length, false when there is none. Only the
 * head is looked at (up to the first empty line, at most n bytes). */
bool kago__auth_bearer(const char *head, size_t n, const char **tok, size_t *len);

/* want (NUL-terminated) equals got[0..len): the time taken depends on strlen(want) alone. */
bool kago__auth_token_eq(const char *want, const char *got, size_t len);

struct auth_slot {
    char ip[48];
    uint64_t since;         /* the first failure of the current window */
    uint64_t last;          /* the last failure (for eviction) */
    uint64_t blocked_until; /* 0: not blocked */
    unsigned fails;
};

struct auth_limit {
    struct auth_slot slot[AUTH_SLOTS];
};

/* The ms left before ip may try again (0: it may now). */
uint64_t kago__auth_blocked(const struct auth_limit *l, const char *ip, uint64_t now);
/* Counts a failed attempt of ip; returns true when it is the one that blocks ip. */
bool kago__auth_failed(struct auth_limit *l, const char *ip, uint64_t now);
/* ip gave the right token: its count of failures begins again. */
void kago__auth_ok(struct auth_limit *l, const char *ip);

#endif
