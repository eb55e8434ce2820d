/* kago run --tty: this process relays between its own stdin/stdout and the container's terminal. The
 * local terminal (if stdin is one) goes raw, so keys such as ^C and ^Z reach the container's line
 * discipline and act on its foreground job there; its size is copied at start and on every SIGWINCH. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "cli.h"

static volatile sig_atomic_t resized;

static void on_winch(int sig)
{
    (void)sig;
    resized = 1;
}

static void copy_size(int master)
{
    struct winsize ws;
    if (ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0)
        ioctl(master, TIOCSWINSZ, &ws);
}

/* Writes all of buf; false when out cannot take it any more. */
static bool write_all(int out, const char *buf, ssize_t n)
{
    while (n > 0) {
        ssize_t w = write(out, buf, (size_t)n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            if (errno != EAGAIN)
                return false;
            struct pollfd p = {.fd = out, .events = POLLOUT};
            poll(&p, 1, -1);
            continue;
        }
        buf += w;
        n -= w;
    }
    return true;
}

/* Copies what fd has now to out; false at its end (EOF, or EIO: every holder of the terminal left). */
static bool pump(int fd, int out)
{
    char buf[16384];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return true;
    return n > 0 && write_all(out, buf, n);
}

int cli_wait_tty(pid_t pid, int master)
{
    struct termios saved;
    bool raw = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0;
    if (raw) {
        struct termios t = saved;
        cfmakeraw(&t);
        tcsetattr(STDIN_FILENO, TCSANOW, &t);
        copy_size(master);
    }
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    cli_forward_signals(pid, on_winch);
    struct pollfd p[3] = {{.fd = STDIN_FILENO, .events = POLLIN},
                          {.fd = master, .events = POLLIN},
                          {.fd = pidfd, .events = POLLIN}};
    bool exited = pidfd < 0; /* without a pidfd (old kernel): relay until the terminal's end */
    while (p[1].fd >= 0 && !(exited && p[0].fd < 0)) {
        if (resized) {
            resized = 0;
            copy_size(master);
        }
        int n = poll(p, 3, exited ? 50 : -1);
        if (n < 0 && errno != EINTR)
            break;
        if (n <= 0) {
            if (exited) /* the command is gone and its terminal has nothing more to say */
                break;
            continue;
        }
        if ((p[1].revents & (POLLIN | POLLHUP | POLLERR)) && !pump(master, STDOUT_FILENO))
            p[1].fd = -1; /* every process of the container left the terminal */
        if ((p[0].revents & (POLLIN | POLLHUP | POLLERR)) && !pump(STDIN_FILENO, master))
            p[0].fd = -1; /* our input ended: the container keeps its terminal */
        if (p[2].revents & POLLIN) {
            exited = true;
            p[2].fd = -1;
            p[0].fd = -1;
        }
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (raw)
        tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    if (pidfd >= 0)
        close(pidfd);
    close(master);
    return status;
}
