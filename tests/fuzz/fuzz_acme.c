/* libFuzzer driver for what the ACME client reads from a server (src/serve/acme_http.c,
 * acme_order.c): a whole HTTP response (status line, headers, a chunked body) and an error's problem
 * document. Nothing may crash or leak; the body is NUL-terminated at its length. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "acme_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 1);
    memcpy(buf, data, size);
    buf[size] = 0;
    struct ahttp_resp r;
    struct kago_error *err = NULL;
    if (kago__ahttp_parse(buf, size, &r, "https://fuzz.test/", &err) == 0) {
        if (!r.body || r.body[r.len] != 0)
            abort();
        char why[512];
        kago__acme_problem(r.status, r.body, why, sizeof(why));
        kago__ahttp_resp_free(&r);
    }
    kago_error_free(err);
    free(buf);
    return 0;
}
