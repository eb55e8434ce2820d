/* Build time: compiles the default seccomp profile (seccomp_rules.c) with libseccomp and writes it as a C
 * array, so `kago run` loads the default filter without building it (0.2-0.3 ms of libseccomp per start).
 * Usage: seccomp_gen OUTPUT.h */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "seccomp_rules.h"

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: seccomp_gen OUTPUT.h\n");
        return 2;
    }
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx) {
        fprintf(stderr, "seccomp_gen: seccomp_init failed\n");
        return 1;
    }
    int rc = kago__seccomp_default_rules(ctx);
    kago__seccomp_attrs(ctx);
    FILE *tmp = tmpfile();
    if (rc < 0 || !tmp || (rc = seccomp_export_bpf(ctx, fileno(tmp))) < 0) {
        fprintf(stderr, "seccomp_gen: %s\n", strerror(rc < 0 ? -rc : 5));
        return 1;
    }
    seccomp_release(ctx);
    rewind(tmp);
    FILE *out = fopen(argv[1], "w");
    if (!out) {
        perror(argv[1]);
        return 1;
    }
    fprintf(out,
            "/* Generated at build time by seccomp_gen.c: the default profile's filter (classic BPF). */\n"
            "static const uint64_t default_filter[] = {\n");
    uint64_t insn;
    size_t n = 0;
    while (fread(&insn, sizeof insn, 1, tmp) == 1)
        fprintf(out, "%s0x%016llxULL,", n++ % 4 ? " " : "\n    ", (unsigned long long)insn);
    fprintf(out, "\n};\n");
    if (n == 0 || fclose(out) != 0) {
        fprintf(stderr, "seccomp_gen: %s: empty filter or write error\n", argv[1]);
        remove(argv[1]);
        return 1;
    }
    return 0;
}
