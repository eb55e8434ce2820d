/* kago — error objects: set once where a call fails, prefixed with context on the way up. */
#ifndef KAGO_ERROR_H
#define KAGO_ERROR_H

#include <stdarg.h>

#define KAGO_EXPORT __attribute__((visibility("default")))

struct kago_error {
    int code; /* errno value, 0 when the failure has no errno */
    char *msg;
};

/* Sets *err (when err is not NULL) to "MSG: strerror(code)" (or just MSG when code is 0).
 * Returns -abs(code) or -1, so a caller can write `return kago_error_set(err, errno, "...")`. */
KAGO_EXPORT int kago_error_set(struct kago_error **err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prepends "CONTEXT: " to an error already set. Does nothing if none is set. */
KAGO_EXPORT void kago_error_prefix(struct kago_error **err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
KAGO_EXPORT void kago_error_free(struct kago_error *err);
/* Clears *err and frees it. */
KAGO_EXPORT void kago_error_clear(struct kago_error **err);

#endif
