/* Error objects: one message, set where the failure happened, prefixed with context by callers. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kago/error.h>

#include "util.h"

int kago_error_set(struct kago_error **err, int code, const char *fmt, ...)
{
    int ret = code > 0 ? -code : (code < 0 ? code : -1);
    if (!err)
        return ret;
    va_list ap;
    va_start(ap, fmt);
    char *msg = xvasprintf(fmt, ap);
    va_end(ap);
    struct kago_error *e = xmalloc(sizeof *e);
    e->code = code < 0 ? -code : code;
    if (e->code) {
        e->msg = xasprintf("%s: %s", msg, strerror(e->code));
        free(msg);
    } else {
        e->msg = msg;
    }
    kago_error_free(*err); /* the newest failure wins; there should be none */
    *err = e;
    return ret;
}

void kago_error_prefix(struct kago_error **err, const char *fmt, ...)
{
    if (!err || !*err)
        return;
    va_list ap;
    va_start(ap, fmt);
    char *ctx = xvasprintf(fmt, ap);
    va_end(ap);
    char *msg = xasprintf("%s: %s", ctx, (*err)->msg);
    free(ctx);
    free((*err)->msg);
    (*err)->msg = msg;
}

void kago_error_free(struct kago_error *err)
{
    if (!err)
        return;
    free(err->msg);
    free(err);
}

void kago_error_clear(struct kago_error **err)
{
    if (err) {
        kago_error_free(*err);
        *err = NULL;
    }
}
