/* kago serve — certificates on demand: who may get an order and when (the abuse guard, the backoff, the
 * overall rate, renewal times). Pure: no I/O, no clock of its own; acme.c feeds it. */
#include <ctype.h>
#include <string.h>

#include "acme_int.h"

bool kago__acme_name_ok(const char *name)
{
    size_t n = strlen(name), label = 0;
    if (n == 0 || n > 253 || !strchr(name, '.'))
        return false;
    const char *last = strrchr(name, '.') + 1;
    bool numeric = *last != 0;
    for (const char *p = last; *p; p++)
        numeric &= isdigit((unsigned char)*p) != 0;
    if (numeric) /* an IPv4 address, or a name no public suffix has */
        return false;
    for (size_t i = 0; i <= n; i++) {
        char c = name[i];
        if (c == '.' || c == 0) {
            if (label == 0 || label > 63 || name[i - 1] == '-' || name[i - label] == '-')
                return false;
            label = 0;
        } else if (isalnum((unsigned char)c) || c == '-') {
            label++;
        } else {
            return false;
        }
    }
    return true;
}

void kago__acme_bucket_init(struct acme_bucket *b, unsigned per_minute, uint64_t now_ms)
{
    *b = (struct acme_bucket){.tokens = per_minute, .at_ms = now_ms, .per_minute = per_minute};
}

bool kago__acme_bucket_take(struct acme_bucket *b, uint64_t now_ms)
{
    if (now_ms > b->at_ms)
        b->tokens += (double)(now_ms - b->at_ms) * b->per_minute / 60000.0;
    if (b->tokens > b->per_minute)
        b->tokens = b->per_minute;
    b->at_ms = now_ms > b->at_ms ? now_ms : b->at_ms;
    if (b->tokens < 1)
        return false;
    b->tokens -= 1;
    return true;
}

uint64_t kago__acme_backoff_ms(uint64_t first_ms, unsigned failures)
{
    uint64_t ms = first_ms;
    for (unsigned i = 1; i < failures && ms < ACME_BACKOFF_MAX_MS; i++)
        ms *= 2;
    return ms < ACME_BACKOFF_MAX_MS ? ms : ACME_BACKOFF_MAX_MS;
}

enum acme_verdict kago__acme_decide(const char *name, const struct acme_host_state *h, bool routed,
                                    bool have_ask, struct acme_bucket *b, uint64_t now_ms)
{
    if (h && h->pending)
        return ACME_PENDING;
    if (h && h->has_cert)
        return ACME_HAS_CERT;
    if (h && now_ms < h->refused_til_ms)
        return ACME_ASK_REFUSED;
    if (h && now_ms < h->next_try_ms)
        return ACME_BACKOFF;
    if (!routed && !have_ask)
        return ACME_NOT_ROUTED;
    if (!h && !kago__acme_name_ok(name))
        return ACME_BAD_NAME;
    if (!kago__acme_bucket_take(b, now_ms)) /* (an --acme-ask question counts as an order) */
        return ACME_RATE_LIMITED;
    return routed ? ACME_ORDER : ACME_ASK_ORDER;
}

enum acme_verdict kago__acme_due(const struct acme_host_state *h, bool routed, bool have_ask,
                                 struct acme_bucket *b, struct acme_bucket *renewals, uint64_t now_ms,
                                 time_t wall)
{
    if (h->pending || now_ms < h->next_try_ms)
        return ACME_PENDING;
    bool renew = h->has_cert && wall >= h->renew_at;
    bool retry = !h->has_cert && h->failures && h->failures < ACME_AUTO_RETRIES;
    if (!renew && !retry)
        return ACME_HAS_CERT;
    if (!routed && !have_ask)
        return ACME_NOT_ROUTED;
    if (!kago__acme_bucket_take(renew ? renewals : b, now_ms))
        return ACME_RATE_LIMITED;
    return routed ? ACME_ORDER : ACME_ASK_ORDER;
}

time_t kago__acme_renew_at(time_t not_before, time_t not_after, time_t written, long renew_after_s)
{
    time_t at = not_before + (not_after - not_before) * 2 / 3;
    if (renew_after_s > 0 && written + renew_after_s < at)
        at = written + renew_after_s;
    return at;
}
