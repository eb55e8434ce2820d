/* libFuzzer driver for the OCI front end (src/config/oci.c): each input is a bundle's config.json. It is
 * untrusted text: no crash, no leak, no read past it, whatever it holds. It is also read as the hooks
 * object kept in a state dir's oci.json. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "oci.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1); /* the loader reads the file into a NUL-terminated buffer too */
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    struct kago_spec spec;
    struct kago_oci oci;
    kago_spec_init(&spec);
    kago_oci_load_string("/bundle", "config.json", text, size, &spec, &oci, NULL);
    kago_oci_free(&oci);
    /* the same text as the hooks a state dir's oci.json keeps: what loads is written and loads back */
    if (kago_oci_load_hooks("oci.json", text, size, &oci, NULL) == 0) {
        char *again = kago_oci_hooks_json(&oci);
        struct kago_oci back = {0};
        if (kago_oci_load_hooks("oci.json", again, strlen(again), &back, NULL) < 0)
            abort();
        kago_oci_free(&back);
        free(again);
    }
    kago_oci_free(&oci);
    kago_spec_free(&spec);
    free(text);
    return 0;
}
