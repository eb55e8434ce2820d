/* libFuzzer driver for the admin API's Authorization header (kago serve's admin listener reads it from
 * any client that can connect): the token found must lie inside the head, hold no blank, and compare
 * equal to itself only. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *head = malloc(size + 1);
    memcpy(head, data, size);
    head[size] = 0;
    const char *tok;
    size_t len;
    if (kago__auth_bearer(head, size, &tok, &len)) {
        if (len == 0 || tok < head || tok + len > head + size)
            abort();
        for (size_t i = 0; i < len; i++)
            if (tok[i] == ' ' || tok[i] == '\t' || tok[i] == '\r' || tok[i] == '\n')
                abort();
        char *copy = strndup(tok, len);
        if (!kago__auth_token_eq(copy, tok, len) || (len > 1 && kago__auth_token_eq(copy, tok, len - 1)))
            abort();
        free(copy);
    }
    free(head);
    return 0;
}
