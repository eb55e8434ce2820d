/* libFuzzer driver for the h2c placement peek (h2peek.c): any bytes as what followed the client preface.
 * The answer is 1, 0 or -1; a host found is NUL-terminated within the room given and holds no NUL. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "h2peek.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char host[64];
    memset(host, 'x', sizeof(host));
    int r = kago__h2_first_authority((const char *)data, size, host, sizeof(host));
    if (r < -1 || r > 1)
        abort();
    if (r == 1 && !memchr(host, 0, sizeof(host)))
        abort();
    return 0;
}
