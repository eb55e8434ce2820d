/* kago serve: telling from /proc/PID/net/tcp{,6} that an app's port listens (checkpoint :at_listen). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "serve_int.h"
#include "tap.h"

static void put(const char *dir, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static const char head[] =
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
    "timeout inode\n";

int main(void)
{
    char dir[] = "/tmp/kago-unit-net-XXXXXX";
    ok(mkdtemp(dir) != NULL, "temp dir");
    ok(kago__serve_listening(dir, 8080) < 0, "no tcp files: an error, not 'not listening'");

    /* 8080 (0x1F90) established only, 9000 (0x2328) listening */
    char tcp[1024];
    snprintf(tcp, sizeof(tcp),
             "%s   0: 0100007F:1F90 0100007F:A2C4 01 00000000:00000000 00:00000000 00000000     0 0 1 1\n"
             "   1: 00000000:2328 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0 0 2 1\n",
             head);
    put(dir, "tcp", tcp);
    ok(kago__serve_listening(dir, 8080) == 0, "an established connection on the port is not listening");
    ok(kago__serve_listening(dir, 9000) == 1, "a listening socket on 0.0.0.0:9000");
    ok(kago__serve_listening(dir, 0x90) == 0, "ports compare whole, not by suffix");
    put(dir, "tcp6",
        "  sl  local_address                         remote_address                        st\n"
        "   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 0 0 0\n");
    ok(kago__serve_listening(dir, 8080) == 1, "a listening IPv6 socket on [::]:8080");

    /* the real thing: this process's own namespace */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    ok(s >= 0 && bind(s, (struct sockaddr *)&a, sizeof(a)) == 0 &&
           getsockname(s, (struct sockaddr *)&a, &len) == 0,
       "bound a loopback port");
    unsigned port = ntohs(a.sin_port);
    ok(kago__serve_listening("/proc/self/net", port) == 0, "bound but not listening: 0");
    ok(listen(s, 1) == 0 && kago__serve_listening("/proc/self/net", port) == 1, "listening: 1");
    close(s);

    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    ok(system(cmd) == 0, "cleaned up");
    return tap_done();
}
