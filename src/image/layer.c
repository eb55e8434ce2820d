/* One image layer unpacked safely: see layer.h. */
#include <stdio.h>

#include "layer.h"

void kago__hex(const unsigned char d[32], char out[65])
{
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}
