/* libFuzzer driver for the JSON documents of an image (src/image/manifest.c): each input is read as an
 * OCI index (with and without a tag), an image manifest, docker-archive's manifest.json and an image
 * config. They are untrusted: none may crash, leak or read past the input. */
#include <stdint.h>
#include <stdlib.h>

#include "manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *json = (const char *)data;
    struct kago__desc d = {0};
    bool is_index;
    char *ref = NULL;
    for (int t = 0; t < 2; t++) {
        if (kago__index_pick(json, size, t ? "latest" : NULL, &d, &is_index, &ref, NULL) == 0)
            kago__desc_free(&d);
        free(ref);
        ref = NULL;
    }
    struct kago__manifest m;
    if (kago__manifest_parse(json, size, &m, NULL) == 0)
        kago__manifest_free(&m);
    struct kago__docker_manifest dm;
    if (kago__docker_manifest_parse(json, size, &dm, NULL) == 0)
        kago__docker_manifest_free(&dm);
    struct kago__image_config c;
    if (kago__config_parse(json, size, &c, NULL) == 0)
        kago__image_config_free(&c);
    return 0;
}
