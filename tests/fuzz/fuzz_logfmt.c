/* libFuzzer driver for kago serve's per-app logs: an instance's output cut into lines across two reads
 * (the first byte picks the split), each line recorded and parsed back, and the input itself parsed as a
 * record (what `kago logs` reads from a file anyone with the root could edit). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "logfmt.h"

static char rec[LOGFMT_RECORD_MAX];

static void emit(void *ctx, const char *line, size_t n)
{
    if (n > LOGFMT_LINE_MAX)
        abort();
    size_t rl = kago__logfmt_record(rec, 1796377291123456LL, "app-1a2b-3c-1", "stdout", line, n);
    struct logfmt_rec r;
    /* a line with a '\n' cannot come out of feed; any other line round-trips */
    if (rec[rl - 1] != '\n' || kago__logfmt_parse(rec, rl - 1, &r) < 0 || r.text_len != n ||
        memcmp(r.text, line, n) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t split = data[0] % size;
    const char *p = (const char *)data + 1;
    size_t n = size - 1;
    struct logfmt_line part = {0};
    kago__logfmt_feed(&part, p, split < n ? split : n, emit, NULL);
    kago__logfmt_feed(&part, p + (split < n ? split : n), n - (split < n ? split : n), emit, NULL);
    kago__logfmt_flush(&part, emit, NULL);
    struct logfmt_rec r;
    if (kago__logfmt_parse(p, n, &r) == 0 && (r.text < p || r.text + r.text_len > p + n))
        abort();
    return 0;
}
