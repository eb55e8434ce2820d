/* Unit tests of the image code that touches no store: the JSON documents, references, the User lookup. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "image_int.h"
#include "manifest.h"
#include "store.h"
#include "tap.h"

#define HEX_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define HEX_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

static int pick(const char *json, const char *tag, char *hex, bool *is_index, char **why)
{
    struct kago__desc d = {0};
    struct kago_error *err = NULL;
    char *ref = NULL;
    int r = kago__index_pick(json, strlen(json), tag, &d, is_index, &ref, &err);
    if (r == 0)
        memcpy(hex, d.hex, 65);
    *why = err ? strdup(err->msg) : NULL;
    kago_error_free(err);
    kago__desc_free(&d);
    free(ref);
    return r;
}

static void test_index(void)
{
    const char *two =
        "{\"manifests\":["
        "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:" HEX_A
        "\",\"size\":10,\"platform\":{\"os\":\"linux\",\"architecture\":\"arm64\"},"
        "\"annotations\":{\"org.opencontainers.image.ref.name\":\"v1\"}},"
        "{\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"digest\":\"sha256:" HEX_B
        "\",\"size\":20,\"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\"},"
        "\"annotations\":{\"org.opencontainers.image.ref.name\":\"v2\"}}]}";
    char hex[65] = "";
    bool idx = false;
    char *why = NULL;
    ok(pick(two, NULL, hex, &idx, &why) == 0 && !strcmp(hex, HEX_B) && idx,
       "index: linux/amd64 picked, nested index");
    free(why);
    ok(pick(two, "v1", hex, &idx, &why) == 0 && !strcmp(hex, HEX_A) && !idx, "index: a tag picks its entry");
    free(why);
    ok(pick(two, "v3", hex, &idx, &why) < 0 && why && strstr(why, "no image tagged v3"),
       "index: unknown tag: %s", why);
    free(why);
    ok(pick("{\"manifests\":[]}", NULL, hex, &idx, &why) < 0 && strstr(why, "no manifests"),
       "index: empty: %s", why);
    free(why);
    ok(pick("{\"manifests\":[{\"digest\":\"sha256:abc\",\"size\":1}]}", NULL, hex, &idx, &why) < 0 &&
           strstr(why, "no sha256 digest"),
       "index: a short digest refused: %s", why);
    free(why);
    ok(pick("{\"manifests\": [", NULL, hex, &idx, &why) < 0 && strstr(why, "not valid JSON"),
       "index: truncated JSON: %s", why);
    free(why);
    ok(pick("{} trailing", NULL, hex, &idx, &why) < 0, "index: trailing garbage refused");
    free(why);
}

static void test_manifest(void)
{
    const char *m =
        "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
        "\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:" HEX_A
        "\",\"size\":5},\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+zstd\","
        "\"digest\":\"sha256:" HEX_B "\",\"size\":7}]}";
    struct kago__manifest man;
    struct kago_error *err = NULL;
    ok(kago__manifest_parse(m, strlen(m), &man, &err) == 0 && man.nlayers == 1 &&
           !strcmp(man.config.hex, HEX_A) && man.layers[0].size == 7 &&
           !strcmp(man.layers[0].media_type, "application/vnd.oci.image.layer.v1.tar+zstd"),
       "manifest: config and layers read");
    kago__manifest_free(&man);
    const char *bad = "{\"mediaType\":\"application/vnd.docker.distribution.manifest.v1+json\",\"config\":{},"
                      "\"layers\":[]}";
    ok(kago__manifest_parse(bad, strlen(bad), &man, &err) < 0 && strstr(err->msg, "unsupported media type"),
       "manifest: schema 1 refused: %s", err ? err->msg : "");
    kago_error_clear(&err);
    ok(kago__layer_media_type_ok("application/vnd.oci.image.layer.v1.tar+gzip") &&
           kago__layer_media_type_ok("application/vnd.docker.image.rootfs.diff.tar.gzip") &&
           !kago__layer_media_type_ok("application/vnd.oci.image.layer.v1.tar+encrypted") &&
           !kago__layer_media_type_ok(NULL),
       "layer media types: tar, gzip, zstd only");
    const char *dm = "[{\"Config\":\"c.json\",\"RepoTags\":[\"localhost/app:v1\"],\"Layers\":[\"a/"
                     "layer.tar\",\"b.tar\"]}]";
    struct kago__docker_manifest d;
    ok(kago__docker_manifest_parse(dm, strlen(dm), &d, &err) == 0 && d.nlayers == 2 &&
           !strcmp(d.config, "c.json") && !strcmp(d.repo_tags[0], "localhost/app:v1"),
       "docker manifest.json read");
    kago__docker_manifest_free(&d);
    ok(kago__docker_manifest_parse("[{},{}]", 7, &d, &err) < 0 && strstr(err->msg, "2 images"),
       "docker manifest.json with two images refused: %s", err ? err->msg : "");
    kago_error_clear(&err);
}

static void test_config(void)
{
    const char *c =
        "{\"created\":\"2024-01-02T03:04:05.5Z\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":["
        "\"sha256:" HEX_A
        "\"]},\"config\":{\"Env\":[\"A=1\"],\"Cmd\":[\"sh\"],\"Entrypoint\":[\"/init\"],\"WorkingDir\":"
        "\"/app\",\"User\":\"app:app\",\"StopSignal\":\"SIGQUIT\",\"ExposedPorts\":{\"9000/udp\":{},"
        "\"8080/tcp\":{},\"3000\":{}}}}";
    struct kago__image_config cfg;
    struct kago_error *err = NULL;
    ok(kago__config_parse(c, strlen(c), &cfg, &err) == 0, "config parsed");
    ok(cfg.ndiff_ids == 1 && !strcmp(cfg.diff_ids[0], HEX_A), "config: diff_ids as hex");
    ok(cfg.port == 3000, "config: the lowest TCP port (a port without protocol is TCP): %u", cfg.port);
    ok(cfg.created == 1704164645, "config: created %lld", cfg.created);
    ok(!strcmp(cfg.env[0], "A=1") && !strcmp(cfg.cmd[0], "sh") && !strcmp(cfg.entrypoint[0], "/init") &&
           !strcmp(cfg.working_dir, "/app") && !strcmp(cfg.user, "app:app") &&
           !strcmp(cfg.stop_signal, "SIGQUIT"),
       "config: env, cmd, entrypoint, cwd, user, stop signal");
    kago__image_config_free(&cfg);
    const char *bad = "{\"rootfs\":{\"diff_ids\":[\"md5:00\"]}}";
    ok(kago__config_parse(bad, strlen(bad), &cfg, &err) < 0 && strstr(err->msg, "not a sha256"),
       "config: a bad diff_id refused: %s", err ? err->msg : "");
    kago_error_clear(&err);
}

static void test_refs(void)
{
    static const char *const cases[][2] = {{"busybox", "busybox:latest"},
                                           {"localhost:5000/app", "localhost:5000/app:latest"},
                                           {"app:v2", "app:v2"}};
    for (size_t i = 0; i < 3; i++) {
        char *s = kago__ref_normalize(cases[i][0]);
        is_str(s, cases[i][1], "ref %s is %s", cases[i][0], cases[i][1]);
        free(s);
    }
    const char *hex;
    ok(kago__digest_hex("sha256:" HEX_A, &hex) && !strcmp(hex, HEX_A) &&
           !kago__digest_hex("sha256:AB", NULL) && !kago__digest_hex("sha512:" HEX_A, NULL),
       "digests: sha256 and 64 lowercase hex digits only");
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static void test_user(void)
{
    char top[] = "/tmp/kago-test-user-XXXXXX", base[] = "/tmp/kago-test-user-XXXXXX";
    if (!mkdtemp(top) || !mkdtemp(base)) {
        ok(0, "mkdtemp");
        return;
    }
    char p[600];
    snprintf(p, sizeof p, "%s/etc", top);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/etc", base);
    mkdir(p, 0755);
    write_file(base, "etc/passwd", "root:x:0:0::/root:/bin/sh\nold:x:5:5::/:/bin/sh\n");
    write_file(top, "etc/passwd", "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/app:/bin/sh\n");
    write_file(base, "etc/group", "root:x:0:\nstaff:x:50:\n");
    const char *layers[] = {top, base, NULL};
    uid_t u = 9;
    gid_t g = 9;
    struct kago_error *err = NULL;
    ok(kago__image_user(layers, "app", &u, &g, &err) == 0 && u == 1000 && g == 1001,
       "user by name: the top layer's passwd");
    ok(kago__image_user(layers, "old", &u, &g, &err) < 0 &&
           strstr(err->msg, "not in the image's /etc/passwd"),
       "the top layer's passwd hides the lower one's: %s", err ? err->msg : "");
    kago_error_clear(&err);
    ok(kago__image_user(layers, "app:staff", &u, &g, &err) == 0 && u == 1000 && g == 50,
       "user:group by name (group from the lower layer)");
    ok(kago__image_user(layers, "1234:77", &u, &g, &err) == 0 && u == 1234 && g == 77, "numeric uid:gid");
    ok(kago__image_user(layers, "1000", &u, &g, &err) == 0 && u == 1000 && g == 1001,
       "a numeric uid takes its group");
    ok(kago__image_user(layers, "app:nogroup", &u, &g, &err) < 0 && strstr(err->msg, "group nogroup"),
       "unknown group refused: %s", err ? err->msg : "");
    kago_error_clear(&err);
    /* a whiteout of etc/passwd in the top layer: the image has none */
    snprintf(p, sizeof p, "%s/etc/passwd", top);
    unlink(p);
    mknod(p, S_IFCHR | 0600, makedev(0, 0));
    ok(kago__image_user(layers, "old", &u, &g, &err) < 0, "a whiteout hides the lower passwd");
    kago_error_clear(&err);
    snprintf(p, sizeof p, "rm -rf %s %s", top, base);
    ok(system(p) == 0, "cleanup");
}

int main(void)
{
    test_index();
    test_manifest();
    test_config();
    test_refs();
    test_user();
    return tap_done();
}
