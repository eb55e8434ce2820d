/* libFuzzer driver for the etcd client's parsers (src/serve/etcd_json.c): a watch stream line, a range
 * response and a txn response as a peer claiming to be etcd could send them, and base64. Nothing may crash
 * or leak; a decoded value is NUL-terminated at its length. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "etcd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct etcd_watch_msg m;
    struct kago_error *err = NULL;
    if (kago__etcd_parse_watch((const char *)data, size, &m, &err) == 0) {
        for (size_t i = 0; i < m.nev; i++)
            if (!m.ev[i].kv.key || !m.ev[i].kv.value || m.ev[i].kv.value[m.ev[i].kv.value_len] != 0)
                abort();
        kago__etcd_watch_msg_free(&m);
    }
    kago_error_free(err);
    err = NULL;
    struct json_tokener *tok = json_tokener_new();
    struct json_object *o = json_tokener_parse_ex(tok, (const char *)data, (int)size);
    json_tokener_free(tok);
    if (o) {
        struct etcd_range r;
        if (kago__etcd_parse_range(o, &r, &err) == 0)
            kago__etcd_range_free(&r);
        kago_error_free(err);
        err = NULL;
        bool won;
        struct etcd_kv holder;
        if (kago__etcd_txn_result(o, &won, &holder, &err) == 0)
            kago__etcd_kv_free(&holder);
        kago_error_free(err);
        (void)kago__etcd_error_text(o);
        json_object_put(o);
    }
    size_t n;
    char *d = kago__b64_decode((const char *)data, size, &n);
    if (d) {
        char *e = kago__b64_encode(d, n), *back = kago__b64_decode(e, strlen(e), &n);
        if (!back)
            abort();
        free(back);
        free(e);
        free(d);
    }
    return 0;
}
