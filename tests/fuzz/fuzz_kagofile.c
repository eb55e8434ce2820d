/* libFuzzer driver for the Kagofile loader: any bytes, evaluated as a Kagofile with a --set value,
 * must load or fail with one error line; never crash, leak or corrupt memory. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../src/config/kagofile.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char scratch[] = "/tmp/kago-fuzz-XXXXXX";

static void remove_scratch(void)
{
    rmdir(scratch); /* only if the inputs wrote nothing there */
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    /* A Kagofile may write files (it is operator code): keep whatever it writes in a scratch dir. */
    if (mkdtemp(scratch) && chdir(scratch) == 0)
        atexit(remove_scratch);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 8192) /* bigger inputs only make the loops longer, not the parser wiser */
        return 0;
    char *const sets[] = {"count=3", "phase=1", NULL};
    struct kago_kagofile *kf = NULL;
    struct kago_error *err = NULL;
    /* A Kagofile is trusted code that may run commands; random bytes must not (`rm -rf` is two bytes
     * away from a backtick): the fuzzed text runs with the process-spawning methods removed. */
    static const char guard[] =
        "module Kernel; [:`, :system, :exec, :spawn].each { |m| undef_method(m) rescue nil }; end; "
        "class << IO; [:popen].each { |m| undef_method(m) rescue nil }; end\n";
    size_t glen = sizeof guard - 1;
    char *text = malloc(glen + size + 1);
    if (!text)
        abort();
    memcpy(text, guard, glen);
    memcpy(text + glen, data, size);
    text[glen + size] = '\0';
    int rc = kago_kagofile_load_string("Kagofile", text, glen + size, sets, &kf, &err);
    free(text);
    if (rc < 0) {
        if (!err || !err->msg || !*err->msg || strchr(err->msg, '\n') != NULL)
            abort(); /* every failure has exactly one line of message */
        kago_error_free(err);
        return 0;
    }
    for (size_t i = 0; i < kago_kagofile_ncontainers(kf); i++) {
        const struct kago_spec *s = kago_kagofile_container(kf, i);
        if (!s->name || !s->argv || !s->argv[0] || kago_spec_validate(s, NULL) < 0)
            abort(); /* a loaded container is always a valid spec */
    }
    for (size_t i = 0; i < kago_kagofile_napps(kf); i++)
        if (!kago_kagofile_app(kf, i)->hosts[0])
            abort();
    kago_kagofile_free(kf);
    return 0;
}
