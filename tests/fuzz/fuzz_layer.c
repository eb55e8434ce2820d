/* libFuzzer driver for the layer unpacker: the input is a layer blob (tar, gzip or zstd), verified, then
 * unpacked into a fresh directory under /tmp that is removed after each run. The layer directory sits alone
 * in a scratch directory; anything an entry wrote beside it (an escape) makes the scratch directory
 * non-empty, and the driver aborts. Small limits keep one run short. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "layer.h"
#include "util.h"

struct input {
    const uint8_t *p;
    size_t len, pos;
};

/* Odd-sized reads, so that headers and blocks straddle the reads. */
static ssize_t input_read(void *ctx, void *buf, size_t len, struct kago_error **err)
{
    struct input *in = ctx;
    size_t n = in->len - in->pos;
    if (n > len)
        n = len;
    if (n > 4093)
        n = 4093;
    memcpy(buf, in->p + in->pos, n);
    in->pos += n;
    return (ssize_t)n;
}

static char scratch[64];

static void remove_scratch(void)
{
    rmdir(scratch);
}

static int unpack(const uint8_t *data, size_t size, int dirfd)
{
    struct input in = {data, size, 0};
    struct kago__layer_limits lim = {.max_bytes = 1 << 20, .max_entries = 1000};
    struct kago__layer_result res;
    struct kago_error *err = NULL;
    int r = kago__layer_unpack(input_read, &in, dirfd, &lim, &res, &err);
    if ((r < 0) != (err != NULL) || (r == 0 && (res.blob_size != size || res.tar_size > lim.max_bytes)))
        abort(); /* an error without a message, or a success that did not read (or overran) the layer */
    kago_error_free(err);
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!*scratch) {
        snprintf(scratch, sizeof(scratch), "/tmp/kago-fuzz-layer.XXXXXX");
        if (!mkdtemp(scratch))
            abort();
        atexit(remove_scratch);
    }
    char layer[96];
    snprintf(layer, sizeof(layer), "%s/l", scratch);
    int verified = unpack(data, size, -1);
    if (mkdir(layer, 0755) < 0)
        abort();
    int fd = open(layer, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        abort();
    int unpacked = unpack(data, size, fd);
    close(fd);
    kago__rm_rf(layer);
    if (rmdir(scratch) < 0 || mkdir(scratch, 0700) < 0) {
        fprintf(stderr, "fuzz_layer: something was written beside the layer directory in %s: %s\n", scratch,
                strerror(errno));
        abort();
    }
    /* Verifying makes the same checks minus those that need the file system (a hard link's target), so a
     * layer that unpacks must verify. */
    if (unpacked == 0 && verified < 0)
        abort();
    return 0;
}
