/* Minimal TAP producer for kago's C unit tests. */
#ifndef KAGO_TAP_H
#define KAGO_TAP_H
#include <stdio.h>
#include <string.h>

static int tap_n, tap_failed;
#define ok(cond, ...)                                                                                        \
    do {                                                                                                     \
        int ok_ = !!(cond);                                                                                  \
        tap_n++;                                                                                             \
        if (!ok_)                                                                                            \
            tap_failed++;                                                                                    \
        printf("%sok %d - ", ok_ ? "" : "not ", tap_n);                                                      \
        printf(__VA_ARGS__);                                                                                 \
        printf("\n");                                                                                        \
        if (!ok_)                                                                                            \
            printf("#   failed at %s:%d: %s\n", __FILE__, __LINE__, #cond);                                  \
    } while (0)
#define is_str(a, b, ...) ok((a) && (b) && strcmp((a), (b)) == 0, __VA_ARGS__)
static inline int tap_done(void)
{
    printf("1..%d\n", tap_n);
    return tap_failed ? 1 : 0;
}
#endif
