/* kago serve — with --threads, an h2c connection goes to the request loop of its first stream's app
 * (shard.c): the frames that follow the client preface are read up to the first HEADERS, whose header block
 * is decoded with a fresh HPACK decoder (a connection's first block needs no earlier state) for its
 * :authority or Host. A block larger than what has arrived is decoded as far as it goes (the pseudo-header
 * fields come first). Pure: no I/O; unit-tested (tests/unit/test_h2peek.c), fuzzed (fuzz_h2peek.c). */
#ifndef KAGO_SERVE_H2PEEK_H
#define KAGO_SERVE_H2PEEK_H

#include <stddef.h>

/* buf, len: what followed the client preface so far. Returns 1 with the host, NUL-terminated, in out (a
 * value of outsz bytes or more is not taken), 0 when more bytes may tell, -1 when they cannot (the first
 * header block is malformed, or whole without a host). */
int kago__h2_first_authority(const char *buf, size_t len, char *out, size_t outsz);

#endif
