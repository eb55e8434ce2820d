/* libFuzzer driver for the dashboard's request parsing on the admin listener (any client that can connect
 * sends it, before any authentication): the header and cookie values found must lie inside the head, the
 * query parameters decode within their buffer, and a session is found by no id but its own. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dash.h"

static void inside(const char *head, size_t size, const char *v, size_t len)
{
    if (v < head || v + len > head + size)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct dash_sessions sessions;
    static struct dash_session *s;
    if (!s)
        s = kago__dash_session_new(&sessions, 1);
    char *head = malloc(size + 1);
    memcpy(head, data, size);
    head[size] = 0;
    const char *v;
    size_t len;
    if (kago__dash_header(head, size, DASH_CSRF_HEADER, &v, &len))
        inside(head, size, v, len);
    if (kago__dash_cookie(head, size, DASH_COOKIE, &v, &len)) {
        inside(head, size, v, len);
        struct dash_session *f = kago__dash_session_find(&sessions, v, len, 2);
        if (f && (f != s || len != DASH_ID_HEX || memcmp(v, s->id, len)))
            abort();
    }
    static const char *const names[] = {"app", "instance", "q", "offset", "cpu", "memory", "token"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char out[64];
        memset(out, 0x55, sizeof(out));
        if (kago__dash_param(head, names[i], out, sizeof(out)) && strnlen(out, sizeof(out)) >= sizeof(out))
            abort();
    }
    free(head);
    return 0;
}
