/* The JSON documents of an image, read with json-c into plain structs (see manifest.h). */
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "manifest.h"
#include "store.h"

static json_object *parse(const char *json, size_t len, const char *what, struct kago_error **err)
{
    json_tokener *tok = json_tokener_new();
    json_object *o = json_tokener_parse_ex(tok, json, (int)len);
    enum json_tokener_error e = json_tokener_get_error(tok);
    if (o && e == json_tokener_success && json_tokener_get_parse_end(tok) < len) {
        const char *rest = json + json_tokener_get_parse_end(tok);
        if (strspn(rest, " \t\r\n") != len - json_tokener_get_parse_end(tok))
            e = json_tokener_error_parse_unexpected;
    }
    json_tokener_free(tok);
    if (!o || e != json_tokener_success) {
        json_object_put(o);
        return kago_error_set(err, 0, "%s: not valid JSON (%s)", what, json_tokener_error_desc(e)), NULL;
    }
    return o;
}

static json_object *field(json_object *o, const char *k, json_type t)
{
    json_object *v;
    return o && json_object_object_get_ex(o, k, &v) && json_object_is_type(v, t) ? v : NULL;
}

static const char *str_field(json_object *o, const char *k)
{
    json_object *v = field(o, k, json_type_string);
    return v ? json_object_get_string(v) : NULL;
}

static int desc_parse(json_object *o, const char *what, struct kago__desc *d, struct kago_error **err)
{
    const char *hex, *digest = str_field(o, "digest");
    json_object *size = field(o, "size", json_type_int);
    if (!json_object_is_type(o, json_type_object) || !kago__digest_hex(digest, &hex))
        return kago_error_set(err, 0, "%s: no sha256 digest", what);
    if (!size || json_object_get_int64(size) < 0)
        return kago_error_set(err, 0, "%s %s: no size", what, digest);
    d->media_type = xstrdup(str_field(o, "mediaType"));
    memcpy(d->hex, hex, 65);
    d->size = json_object_get_int64(size);
    return 0;
}

void kago__desc_free(struct kago__desc *d)
{
    free(d->media_type);
    d->media_type = NULL;
}

static const char *annotation(json_object *o, const char *k)
{
    return str_field(field(o, "annotations", json_type_object), k);
}

static bool is_index_type(const char *mt)
{
    return mt && (!strcmp(mt, "application/vnd.oci.image.index.v1+json") ||
                  !strcmp(mt, "application/vnd.docker.distribution.manifest.list.v2+json"));
}

static bool amd64(json_object *m)
{
    json_object *p = field(m, "platform", json_type_object);
    const char *os = str_field(p, "os"), *arch = str_field(p, "architecture");
    return os && arch && !strcmp(os, "linux") && !strcmp(arch, "amd64");
}

int kago__index_pick(const char *json, size_t len, const char *tag, struct kago__desc *out, bool *is_index,
                     char **ref_name, struct kago_error **err)
{
    *ref_name = NULL;
    json_object *o = parse(json, len, "index", err);
    if (!o)
        return -1;
    json_object *ms = field(o, "manifests", json_type_array);
    size_t n = ms ? json_object_array_length(ms) : 0;
    json_object *pick = NULL;
    int matches = 0;
    for (size_t i = 0; i < n; i++) {
        json_object *m = json_object_array_get_idx(ms, i);
        const char *name = annotation(m, "org.opencontainers.image.ref.name");
        bool ok = tag ? name && !strcmp(name, tag) : (n == 1 || amd64(m));
        if (ok && matches++ == 0)
            pick = m;
    }
    int ret = -1;
    if (!n)
        kago_error_set(err, 0, "index: no manifests");
    else if (!pick && tag)
        kago_error_set(err, 0, "index: no image tagged %s", tag);
    else if (!pick)
        kago_error_set(err, 0, "index: %zu images and none for linux/amd64 (name one with :TAG)", n);
    else if (matches > 1 && tag)
        kago_error_set(err, 0, "index: %d images tagged %s", matches, tag);
    else if (matches > 1)
        kago_error_set(err, 0, "index: %d images for linux/amd64 (name one with :TAG)", matches);
    else if (desc_parse(pick, "index entry", out, err) == 0) {
        *is_index = is_index_type(out->media_type);
        *ref_name = xstrdup(annotation(pick, "org.opencontainers.image.ref.name"));
        ret = 0;
    }
    json_object_put(o);
    return ret;
}

int kago__manifest_parse(const char *json, size_t len, struct kago__manifest *m, struct kago_error **err)
{
    *m = (struct kago__manifest){0};
    json_object *o = parse(json, len, "manifest", err);
    if (!o)
        return -1;
    const char *mt = str_field(o, "mediaType");
    json_object *layers = field(o, "layers", json_type_array), *cfg = field(o, "config", json_type_object);
    int ret = -1;
    if (mt && strcmp(mt, "application/vnd.oci.image.manifest.v1+json") &&
        strcmp(mt, "application/vnd.docker.distribution.manifest.v2+json"))
        kago_error_set(err, 0, "manifest: unsupported media type %s", mt);
    else if (!cfg || !layers)
        kago_error_set(err, 0, "manifest: no config or no layers");
    else if (desc_parse(cfg, "manifest config", &m->config, err) == 0) {
        m->nlayers = json_object_array_length(layers);
        m->layers = xcalloc(m->nlayers, sizeof *m->layers);
        ret = 0;
        for (size_t i = 0; i < m->nlayers && ret == 0; i++)
            ret = desc_parse(json_object_array_get_idx(layers, i), "manifest layer", &m->layers[i], err);
    }
    json_object_put(o);
    if (ret < 0)
        kago__manifest_free(m);
    return ret;
}

void kago__manifest_free(struct kago__manifest *m)
{
    kago__desc_free(&m->config);
    for (size_t i = 0; i < m->nlayers; i++)
        kago__desc_free(&m->layers[i]);
    free(m->layers);
    *m = (struct kago__manifest){0};
}

/* A JSON array of strings as a NULL-terminated vector; NULL when a is not an array of strings. */
static char **strv(json_object *a, size_t *n)
{
    if (!a || !json_object_is_type(a, json_type_array))
        return NULL;
    size_t len = json_object_array_length(a);
    char **v = xcalloc(len + 1, sizeof *v);
    for (size_t i = 0; i < len; i++) {
        json_object *s = json_object_array_get_idx(a, i);
        if (!json_object_is_type(s, json_type_string)) {
            for (size_t j = 0; j < i; j++)
                free(v[j]);
            free(v);
            return NULL;
        }
        v[i] = xstrdup(json_object_get_string(s));
    }
    if (n)
        *n = len;
    return v;
}

int kago__docker_manifest_parse(const char *json, size_t len, struct kago__docker_manifest *m,
                                struct kago_error **err)
{
    *m = (struct kago__docker_manifest){0};
    json_object *o = parse(json, len, "manifest.json", err);
    if (!o)
        return -1;
    int ret = -1;
    json_object *first = json_object_is_type(o, json_type_array) && json_object_array_length(o) > 0
                             ? json_object_array_get_idx(o, 0)
                             : NULL;
    const char *cfg = str_field(first, "Config");
    m->layers = strv(field(first, "Layers", json_type_array), &m->nlayers);
    if (!first)
        kago_error_set(err, 0, "manifest.json: no image");
    else if (json_object_array_length(o) > 1)
        kago_error_set(err, 0, "manifest.json: %zu images in one archive (import them one by one)",
                       json_object_array_length(o));
    else if (!cfg || !m->layers)
        kago_error_set(err, 0, "manifest.json: no Config or no Layers");
    else {
        m->config = xstrdup(cfg);
        m->repo_tags = strv(field(first, "RepoTags", json_type_array), NULL);
        ret = 0;
    }
    json_object_put(o);
    if (ret < 0)
        kago__docker_manifest_free(m);
    return ret;
}

void kago__docker_manifest_free(struct kago__docker_manifest *m)
{
    free(m->config);
    kago__strv_free(m->layers);
    kago__strv_free(m->repo_tags);
    *m = (struct kago__docker_manifest){0};
}

static uint16_t first_tcp_port(json_object *ports)
{
    unsigned best = 0;
    json_object_object_foreach(ports, k, v)
    {
        (void)v;
        unsigned p = 0;
        char proto[8] = "tcp";
        if (sscanf(k, "%u/%7s", &p, proto) >= 1 && p > 0 && p < 65536 && !strcmp(proto, "tcp") &&
            (!best || p < best))
            best = p;
    }
    return (uint16_t)best;
}

/* "2024-01-02T03:04:05.123Z" → seconds since the epoch (UTC); 0 if it is not such a time. */
static long long parse_time(const char *s)
{
    struct tm tm = {0};
    if (!s || sscanf(s, "%d-%d-%dT%d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
                     &tm.tm_sec) != 6)
        return 0;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (long long)timegm(&tm);
}

int kago__config_parse(const char *json, size_t len, struct kago__image_config *c, struct kago_error **err)
{
    *c = (struct kago__image_config){0};
    json_object *o = parse(json, len, "config", err);
    if (!o)
        return -1;
    int ret = -1;
    json_object *rootfs = field(o, "rootfs", json_type_object), *cc = field(o, "config", json_type_object);
    c->diff_ids = strv(field(rootfs, "diff_ids", json_type_array), &c->ndiff_ids);
    for (size_t i = 0; c->diff_ids && i < c->ndiff_ids; i++) {
        const char *hex;
        if (!kago__digest_hex(c->diff_ids[i], &hex)) {
            kago_error_set(err, 0, "config: rootfs.diff_ids[%zu] is not a sha256 digest", i);
            goto out;
        }
        memmove(c->diff_ids[i], hex, 65);
    }
    if (!c->diff_ids) {
        kago_error_set(err, 0, "config: no rootfs.diff_ids");
        goto out;
    }
    c->env = strv(field(cc, "Env", json_type_array), NULL);
    c->entrypoint = strv(field(cc, "Entrypoint", json_type_array), NULL);
    c->cmd = strv(field(cc, "Cmd", json_type_array), NULL);
    c->working_dir = xstrdup(str_field(cc, "WorkingDir"));
    c->user = xstrdup(str_field(cc, "User"));
    c->stop_signal = xstrdup(str_field(cc, "StopSignal"));
    json_object *ports = field(cc, "ExposedPorts", json_type_object);
    c->port = ports ? first_tcp_port(ports) : 0;
    c->created = parse_time(str_field(o, "created"));
    ret = 0;
out:
    json_object_put(o);
    if (ret < 0)
        kago__image_config_free(c);
    return ret;
}

void kago__image_config_free(struct kago__image_config *c)
{
    kago__strv_free(c->diff_ids);
    kago__strv_free(c->env);
    kago__strv_free(c->entrypoint);
    kago__strv_free(c->cmd);
    free(c->working_dir);
    free(c->user);
    free(c->stop_signal);
    *c = (struct kago__image_config){0};
}

bool kago__layer_media_type_ok(const char *mt)
{
    static const char *const ok[] = {
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        NULL,
    };
    for (size_t i = 0; mt && ok[i]; i++)
        if (!strcmp(mt, ok[i]))
            return true;
    return false;
}
