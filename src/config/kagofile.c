/* Loading a Kagofile: one mruby state per file, the DSL prelude, the operator's --set values, and
 * errors translated once at this boundary into "FILE:LINE: message". */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mruby.h>
#include <mruby/array.h>
#include <mruby/compile.h>
#include <mruby/error.h>
#include <mruby/hash.h>
#include <mruby/string.h>
#include <mruby/variable.h>

#include <kago/kago.h>

#include "internal.h"
#include "supervisor.h"

#define PRELUDE_NAME "(kago)"
#define MAX_KAGOFILE (16u << 20)

extern char **environ;

struct kf_container *kf_find(struct kago_kagofile *kf, const char *name)
{
    for (size_t i = 0; i < kf->ncts; i++)
        if (!strcmp(kf->cts[i]->spec->name, name))
            return kf->cts[i];
    return NULL;
}

/* Copies "FILE:LINE" out of a backtrace entry "FILE:LINE[:in METHOD]". */
static void entry_position(const char *entry, size_t pathlen, char *out, size_t outlen)
{
    const char *p = entry + pathlen + 1;
    size_t n = pathlen + 1 + strspn(p, "0123456789");
    snprintf(out, outlen, "%.*s", (int)n, entry);
}

static bool entry_in(const char *entry, const char *file)
{
    size_t n = strlen(file);
    return !strncmp(entry, file, n) && entry[n] == ':' && entry[n + 1] >= '0' && entry[n + 1] <= '9';
}

/* The DSL method the operator called: the prelude frame just before the first frame in their file. */
static void dsl_method(mrb_state *mrb, mrb_value bt, mrb_int user_idx, char *out, size_t outlen)
{
    out[0] = '\0';
    if (user_idx < 1)
        return;
    mrb_value e = mrb_ary_ref(mrb, bt, user_idx - 1);
    if (!mrb_string_p(e))
        return;
    const char *s = RSTRING_CSTR(mrb, e);
    const char *in = strstr(s, ":in ");
    if (!entry_in(s, PRELUDE_NAME) || !in || in[4] == '_')
        return;
    snprintf(out, outlen, "%s", in + 4);
}

/* Messages are one line: control characters a value carried in ("3s\n") are shown escaped. */
static char *one_line(char *s)
{
    size_t n = 0;
    for (const char *p = s; *p; p++)
        n += ((unsigned char)*p < 0x20 || *p == 0x7f) ? 4 : 1;
    char *out = malloc(n + 1), *o = out;
    if (!out)
        abort();
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '\n')
            o += sprintf(o, "\\n");
        else if (c == '\t')
            o += sprintf(o, "\\t");
        else if (c < 0x20 || c == 0x7f)
            o += sprintf(o, "\\x%02x", c);
        else
            *o++ = (char)c;
    }
    *o = '\0';
    free(s);
    return out;
}

char *kf_exc_string(mrb_state *mrb, const char *path)
{
    mrb_value exc = mrb_obj_value(mrb->exc);
    mrb->exc = NULL;
    int ai = mrb_gc_arena_save(mrb);
    const char *cls = mrb_obj_classname(mrb, exc);
    mrb_value msg = mrb_funcall(mrb, exc, "message", 0);
    if (mrb->exc || !mrb_string_p(msg)) {
        mrb->exc = NULL;
        msg = mrb_str_new_lit(mrb, "(no message)");
    }
    mrb_value bt = mrb_exc_backtrace(mrb, exc);
    char pos[512], method[128] = "";
    snprintf(pos, sizeof pos, "%s", path);
    mrb_value line = mrb_iv_get(mrb, exc, mrb_intern_lit(mrb, "@kago_line"));
    if (mrb_integer_p(line))
        snprintf(pos, sizeof pos, "%s:%d", path, (int)mrb_integer(line));
    else if (mrb_array_p(bt)) {
        for (mrb_int i = 0; i < RARRAY_LEN(bt); i++) {
            mrb_value e = mrb_ary_ref(mrb, bt, i);
            if (mrb_string_p(e) && entry_in(RSTRING_CSTR(mrb, e), path)) {
                entry_position(RSTRING_CSTR(mrb, e), strlen(path), pos, sizeof pos);
                dsl_method(mrb, bt, i, method, sizeof method);
                break;
            }
        }
    }
    const char *m = RSTRING_CSTR(mrb, msg);
    bool named = method[0] && !strncmp(m, method, strlen(method));
    char *out = NULL;
    if (asprintf(&out, "%s: %s%s%s (%s)", pos, method[0] && !named ? method : "",
                 method[0] && !named ? ": " : "", m, cls) < 0)
        abort();
    mrb_gc_arena_restore(mrb, ai);
    return one_line(out);
}

static int exc_error(struct kago_kagofile *kf, struct kago_error **err)
{
    char *s = kf_exc_string(kf->mrb, kf->path);
    kago_error_set(err, 0, "%s", s);
    free(s);
    return -1;
}

static mrb_value make_params(mrb_state *mrb, char *const *sets, struct kago_error **err)
{
    mrb_value h = mrb_hash_new(mrb);
    for (size_t i = 0; sets && sets[i]; i++) {
        const char *eq = strchr(sets[i], '=');
        if (!eq || eq == sets[i]) {
            kago_error_set(err, 0, "--set \"%s\": expected KEY=VALUE", sets[i]);
            return mrb_nil_value();
        }
        mrb_hash_set(mrb, h, mrb_str_new(mrb, sets[i], (size_t)(eq - sets[i])),
                     mrb_str_new_cstr(mrb, eq + 1));
    }
    return h;
}

static void define_env(mrb_state *mrb)
{
    mrb_value h = mrb_hash_new(mrb);
    for (char **e = environ; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        if (eq)
            mrb_hash_set(mrb, h, mrb_str_new(mrb, *e, (size_t)(eq - *e)), mrb_str_new_cstr(mrb, eq + 1));
    }
    mrb_define_global_const(mrb, "ENV", h);
}

static int setup_state(struct kago_kagofile *kf, char *const *sets, struct kago_error **err)
{
    mrb_state *mrb = kf->mrb;
    kf_dsl_define(mrb);
    kf_ctobj_define(mrb);
    define_env(mrb);
    mrb_value params = make_params(mrb, sets, err);
    if (mrb_nil_p(params))
        return -1;
    mrb_iv_set(mrb, mrb_obj_value(mrb_module_get(mrb, "Kago")), mrb_intern_lit(mrb, "@params"), params);
    mrbc_context *cxt = mrbc_context_new(mrb);
    mrbc_filename(mrb, cxt, PRELUDE_NAME);
    mrb_load_string_cxt(mrb, kf_prelude_rb, cxt);
    mrbc_context_free(mrb, cxt);
    if (mrb->exc) {
        char *s = kf_exc_string(mrb, PRELUDE_NAME);
        kago_error_set(err, 0, "internal error in the Kagofile prelude: %s", s);
        free(s);
        return -1;
    }
    return 0;
}

static int evaluate(struct kago_kagofile *kf, const char *src, size_t len, struct kago_error **err)
{
    mrb_state *mrb = kf->mrb;
    mrbc_context *cxt = mrbc_context_new(mrb);
    mrbc_filename(mrb, cxt, kf->path);
    cxt->capture_errors = TRUE;
    int ai = mrb_gc_arena_save(mrb);
    struct mrb_parser_state *p = mrb_parse_nstring(mrb, src, len, cxt);
    int rc = 0;
    if (!p) {
        rc = kago_error_set(err, ENOMEM, "%s: parse", kf->path);
    } else if (p->nerr) {
        char *m = strdup(p->error_buffer[0].message ? p->error_buffer[0].message : "syntax error");
        if (!m)
            abort();
        m = one_line(m);
        rc = kago_error_set(err, 0, "%s:%d: %s (SyntaxError)", kf->path, (int)p->error_buffer[0].lineno, m);
        free(m);
        mrb_parser_free(p);
    } else {
        mrb_load_exec(mrb, p, cxt); /* frees p */
        if (mrb->exc)
            rc = exc_error(kf, err);
    }
    mrb_gc_arena_restore(mrb, ai);
    mrbc_context_free(mrb, cxt);
    return rc;
}

/* A file's state: its mruby (on a heap of its own, but under ASan, which then sees mruby's memory) with the
 * DSL and sets defined. NULL with *err. */
static struct kago_kagofile *kf_new(const char *name, char *const *sets, struct kago_error **err)
{
    struct kago_kagofile *kf = calloc(1, sizeof *kf);
    if (!kf || !(kf->path = strdup(name)))
        abort();
#if defined(__SANITIZE_ADDRESS__)
    kf->mrb = mrb_open();
#else
    kf->heap = kf_heap_new();
    kf->mrb = mrb_open_allocf(kf_heap_allocf, kf->heap);
#endif
    if (!kf->mrb) {
        kago_kagofile_free(kf);
        return kago_error_set(err, ENOMEM, "%s: cannot start mruby", name), NULL;
    }
    kf->mrb->ud = kf;
    if (setup_state(kf, sets, err) < 0) {
        kago_kagofile_free(kf);
        return NULL;
    }
    return kf;
}

/* Evaluates src as the file name in kf; it must define something. */
static int evaluate_file(struct kago_kagofile *kf, const char *name, const char *src, size_t len,
                         struct kago_error **err)
{
    if (strcmp(kf->path, name) != 0) {
        free(kf->path);
        if (!(kf->path = strdup(name)))
            abort();
    }
    size_t before = kf->ncts + kf->napps;
    if (evaluate(kf, src, len, err) < 0)
        return -1;
    if (kf->ncts + kf->napps == before)
        return kago_error_set(err, 0, "%s: defines no container (Kago.container \"name\" do |c| ... end)",
                              name);
    return 0;
}

int kago_kagofile_load_string(const char *name, const char *src, size_t len, char *const *sets,
                              struct kago_kagofile **out, struct kago_error **err)
{
    struct kago_kagofile *kf = kf_new(name, sets, err);
    if (!kf)
        return -1;
    if (evaluate_file(kf, name, src, len, err) < 0) {
        kago_kagofile_free(kf);
        return -1;
    }
    *out = kf;
    return 0;
}

/* path's contents (NUL-terminated, *len without it; free it), or NULL with *err. */
static char *read_file(const char *path, size_t *len, struct kago_error **err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return kago_error_set(err, errno, "%s", path), NULL;
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > MAX_KAGOFILE) {
        int e = errno;
        close(fd);
        if (S_ISDIR(st.st_mode))
            return kago_error_set(err, EISDIR, "%s", path), NULL;
        return kago_error_set(err, e, "%s: not a regular file of at most 16 MiB", path), NULL;
    }
    char *buf = malloc((size_t)st.st_size + 1);
    if (!buf)
        abort();
    size_t have = 0;
    while (have < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + have, (size_t)st.st_size - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int e = n < 0 ? errno : EIO;
            free(buf);
            close(fd);
            return kago_error_set(err, e, "%s: read", path), NULL;
        }
        have += (size_t)n;
    }
    close(fd);
    buf[have] = 0;
    *len = have;
    return buf;
}

int kago_kagofile_load(const char *path, char *const *sets, struct kago_kagofile **out,
                       struct kago_error **err)
{
    size_t len;
    char *buf = read_file(path, &len, err);
    if (!buf)
        return -1;
    int rc = kago_kagofile_load_string(path, buf, len, sets, out, err);
    free(buf);
    return rc;
}

int kago_kagofile_load_files(const char *const *paths, size_t n, char *const *sets,
                             struct kago_kagofile **out, struct kago_error **err)
{
    if (!n)
        return kago_error_set(err, 0, "no Kagofile to load");
    struct kago_kagofile *kf = kf_new(paths[0], sets, err);
    if (!kf)
        return -1;
    if (!(kf->files = calloc(n, sizeof(*kf->files))))
        abort();
    for (size_t i = 0; i < n; i++) {
        if (!(kf->files[i] = strdup(paths[i])))
            abort();
        kf->nfiles++;
        size_t len, first = kf->napps;
        char *buf = read_file(paths[i], &len, err);
        int rc = buf ? evaluate_file(kf, paths[i], buf, len, err) : -1;
        free(buf);
        if (rc < 0) {
            kago_kagofile_free(kf);
            return -1;
        }
        for (size_t k = first; k < kf->napps; k++)
            kf->apps[k]->file = i;
    }
    *out = kf;
    return 0;
}

const char *kago_kagofile_app_path(const struct kago_kagofile *kf, size_t i)
{
    return kf->files && i < kf->napps ? kf->files[kf->apps[i]->file] : kf->path;
}

static void free_container(struct kf_container *ct)
{
    for (size_t i = 0; i < ct->nhooks; i++)
        free(ct->hooks[i].desc);
    free(ct->hooks);
    free(ct->image);
    for (size_t i = 0; ct->entrypoint && ct->entrypoint[i]; i++)
        free(ct->entrypoint[i]);
    free(ct->entrypoint);
    for (size_t i = 0; i < ct->nenv_set; i++)
        free(ct->env_set[i]);
    free(ct->env_set);
    if (ct->spec == &ct->own)
        kago_spec_free(&ct->own);
}

void kago_kagofile_free(struct kago_kagofile *kf)
{
    if (!kf)
        return;
    /* mruby first: its objects point into the specs, never the other way round after this. */
    if (kf->mrb)
        mrb_close(kf->mrb);
    for (size_t i = 0; i < kf->ncts; i++) {
        free_container(kf->cts[i]);
        free(kf->cts[i]);
    }
    free(kf->cts);
    for (size_t i = 0; i < kf->napps; i++) {
        free_container(&kf->apps[i]->ct);
        kago_app_free(&kf->apps[i]->app);
        kf_zfree(kf, kf->apps[i]);
    }
    free(kf->apps);
    kago__smap_fini(&kf->app_names);
    kf_heap_free(kf->heap);
    for (size_t i = 0; i < kf->nfiles; i++)
        free(kf->files[i]);
    free(kf->files);
    free(kf->path);
    free(kf);
}

void *kf_zalloc(struct kago_kagofile *kf, size_t n)
{
    void *p = kf->heap ? kf_heap_allocf(NULL, NULL, n, kf->heap) : malloc(n);
    if (!p)
        abort();
    return memset(p, 0, n);
}

void kf_zfree(struct kago_kagofile *kf, void *p)
{
    if (kf->heap)
        kf_heap_allocf(NULL, p, 0, kf->heap);
    else
        free(p);
}

const char *kago_kagofile_path(const struct kago_kagofile *kf)
{
    return kf->path;
}

size_t kago_kagofile_ncontainers(const struct kago_kagofile *kf)
{
    return kf->ncts;
}

const struct kago_spec *kago_kagofile_container(const struct kago_kagofile *kf, size_t i)
{
    return i < kf->ncts ? kf->cts[i]->spec : NULL;
}

const struct kago_spec *kago_kagofile_find(const struct kago_kagofile *kf, const char *name)
{
    struct kf_container *ct = kf_find((struct kago_kagofile *)kf, name);
    return ct ? ct->spec : NULL;
}

size_t kago_kagofile_nhooks(const struct kago_kagofile *kf, size_t i, const char *kind)
{
    if (i >= kf->ncts)
        return 0;
    size_t n = 0;
    for (size_t h = 0; h < kf->cts[i]->nhooks; h++)
        if (!strcmp(kf_hook_kind_name(kf->cts[i]->hooks[h].kind), kind))
            n++;
    return n;
}

size_t kago_kagofile_napps(const struct kago_kagofile *kf)
{
    return kf->napps;
}

const struct kago_app *kago_kagofile_app(const struct kago_kagofile *kf, size_t i)
{
    return i < kf->napps ? &kf->apps[i]->app : NULL;
}

void kago_kagofile_take_app(struct kago_kagofile *kf, size_t i, struct kago_app *out)
{
    if (i >= kf->napps)
        return;
    struct kf_app *a = kf->apps[i];
    *out = a->app;
    kago__smap_del(&kf->app_names, out->name, strlen(out->name));
    /* The Ruby objects still point at a->app: leave a valid empty app behind for them. */
    kago_app_init(&a->app);
    a->app.name = strdup(out->name);
    a->app.spec.name = strdup(out->spec.name ? out->spec.name : out->name);
    if (!a->app.name || !a->app.spec.name)
        abort();
    kago__smap_add(&kf->app_names, a->app.name, strlen(a->app.name), a);
}
