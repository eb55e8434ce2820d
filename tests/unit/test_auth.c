/* kago serve's admin auth: the Authorization header, the token comparison, the rate limit, the token
 * file (made 0600, read back, refused when others may read it or when short). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth.h"
#include "tap.h"

static int bearer(const char *head, char *out, size_t n)
{
    const char *tok;
    size_t len;
    if (!kago__auth_bearer(head, strlen(head), &tok, &len))
        return 0;
    snprintf(out, n, "%.*s", (int)len, tok);
    return 1;
}

static void test_bearer(void)
{
    char t[128];
    ok(bearer("GET /ps HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer abc123\r\n\r\n", t, sizeof t) &&
           !strcmp(t, "abc123"),
       "Bearer token found");
    ok(bearer("GET /ps HTTP/1.1\nauthorization:bearer   xyz  \n\n", t, sizeof t) && !strcmp(t, "xyz"),
       "any case, bare LF, blanks around");
    ok(!bearer("GET /ps HTTP/1.1\r\nAuthorization: Basic Zm9v\r\n\r\n", t, sizeof t), "Basic is not Bearer");
    ok(!bearer("GET /ps HTTP/1.1\r\nAuthorization: Bearer \r\n\r\n", t, sizeof t), "an empty token is none");
    ok(!bearer("GET /ps HTTP/1.1\r\nHost: a\r\n\r\nAuthorization: Bearer abc\r\n", t, sizeof t),
       "not past the head's end");
    ok(!bearer("GET /Authorization: Bearer abc HTTP/1.1\r\n\r\n", t, sizeof t), "not in the request line");
    ok(!bearer("GET / HTTP/1.1\r\nX-Authorization: Bearer abc\r\n\r\n", t, sizeof t), "not another header");
    ok(!bearer("GET / HTTP/1.1\r\nAuthorization: Bearerabc\r\n\r\n", t, sizeof t),
       "a blank after the scheme");
}

static void test_eq(void)
{
    ok(kago__auth_token_eq("secret-token", "secret-token", 12), "equal");
    ok(!kago__auth_token_eq("secret-token", "secret-tokeX", 12), "one byte differs");
    ok(!kago__auth_token_eq("secret-token", "secret-token-longer", 19), "longer");
    ok(!kago__auth_token_eq("secret-token", "secret", 6), "a prefix");
    ok(!kago__auth_token_eq("secret-token", "", 0), "empty");
}

static void test_limit(void)
{
    static struct auth_limit l;
    uint64_t t = 1000000;
    for (int i = 0; i < AUTH_MAX_FAILS - 1; i++)
        ok(!kago__auth_failed(&l, "10.0.0.1", t + i) && !kago__auth_blocked(&l, "10.0.0.1", t + i),
           "failure %d: not blocked", i + 1);
    ok(kago__auth_failed(&l, "10.0.0.1", t + 100), "the tenth failure within a minute blocks");
    ok(kago__auth_blocked(&l, "10.0.0.1", t + 101) == AUTH_BLOCK_MS - 1, "for AUTH_BLOCK_MS");
    ok(!kago__auth_blocked(&l, "10.0.0.2", t + 101), "another client is not");
    ok(!kago__auth_blocked(&l, "10.0.0.1", t + 100 + AUTH_BLOCK_MS), "until the block ends");
    /* failures spread over more than the window do not add up */
    for (int i = 0; i < 3 * AUTH_MAX_FAILS; i++)
        ok(!kago__auth_failed(&l, "10.0.0.3", t + (uint64_t)i * (AUTH_WINDOW_MS / (AUTH_MAX_FAILS - 1) + 1)),
           "slow failure %d: not blocked", i + 1);
    /* a right token starts the count again */
    for (int i = 0; i < AUTH_MAX_FAILS - 1; i++)
        kago__auth_failed(&l, "10.0.0.4", t);
    kago__auth_ok(&l, "10.0.0.4");
    ok(!kago__auth_failed(&l, "10.0.0.4", t), "counted again from 0 after a success");
    /* more clients than slots: a blocked one is not forgotten for an unblocked one */
    char ip[48];
    for (int i = 0; i < 2 * AUTH_SLOTS; i++) {
        snprintf(ip, sizeof ip, "192.168.%d.%d", i / 256, i % 256);
        kago__auth_failed(&l, ip, t + 200 + i);
    }
    ok(kago__auth_blocked(&l, "10.0.0.1", t + 1000) > 0, "a blocked client survives a flood of others");
}

static void test_token_file(void)
{
    char dir[] = "/tmp/kago-test-auth-XXXXXX";
    if (!mkdtemp(dir)) {
        ok(0, "mkdtemp");
        return;
    }
    char path[128], tmp[160];
    snprintf(path, sizeof path, "%s/token", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    char *tok = NULL, *again = NULL;
    bool made = false;
    struct kago_error *err = NULL;
    ok(kago__auth_token_load(path, &tok, &made, &err) == 0 && made && tok &&
           strlen(tok) == 2 * AUTH_TOKEN_BYTES,
       "made: %d hex characters", 2 * AUTH_TOKEN_BYTES);
    struct stat st;
    ok(stat(path, &st) == 0 && (st.st_mode & 07777) == 0600, "mode 0600");
    ok(access(tmp, F_OK) < 0, "no temporary file left");
    ok(kago__auth_token_load(path, &again, &made, &err) == 0 && !made && again && !strcmp(tok, again),
       "read back the same");
    free(again);
    again = NULL;
    chmod(path, 0644);
    ok(kago__auth_token_load(path, &again, &made, &err) < 0 && err &&
           strstr(err->msg, "others may access it"),
       "refused when others may read it: %s", err ? err->msg : "");
    kago_error_free(err);
    err = NULL;
    int fd = open(path, O_WRONLY | O_TRUNC);
    if (fd >= 0) {
        ok(write(fd, "  short \n", 9) == 9, "write");
        close(fd);
    }
    chmod(path, 0600);
    ok(kago__auth_token_load(path, &again, &made, &err) < 0 && err && strstr(err->msg, "too short"),
       "refused when short: %s", err ? err->msg : "");
    kago_error_free(err);
    free(tok);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    test_bearer();
    test_eq();
    test_limit();
    test_token_file();
    return tap_done();
}
