/*
 * probe.c - a static test program for ci/kernelsim/selftest.
 * Built twice: `cc -static` (x86_64) and `cc -m32 -static` (i386).
 *
 *   probe TEST...      runs each TEST via raw syscall() and prints one line
 *                      "TEST=OK" (result >= 0) or "TEST=ENOSYS" (errno name)
 *   probe exit:N       exits with status N
 *   probe kill:SIG     kills itself with signal SIG
 *   probe thread:TEST  runs TEST in a second pthread, prints "tid=N TEST=..."
 *   probe fork:TEST    runs TEST in a forked child, prints "pid=N TEST=..."
 *   probe bg:TEST      forks a child that runs TEST after 1 s; exits at once
 *
 * Output goes through write(2) only, so the probe itself needs no syscall
 * newer than 2.6.9 apart from what libc's static startup tolerates.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void out(const char *s)
{
    size_t len = strlen(s);
    while (len > 0) {
        ssize_t n = write(1, s, len);
        if (n <= 0)
            return;
        s += n;
        len -= (size_t)n;
    }
}

static const char *ename(int e)
{
    static char buf[16];
    switch (e) {
    case ENOSYS: return "ENOSYS";
    case EINVAL: return "EINVAL";
    case EBADF: return "EBADF";
    case EAGAIN: return "EAGAIN";
    case EFAULT: return "EFAULT";
    case ENOENT: return "ENOENT";
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case ENOTSOCK: return "ENOTSOCK";
    case ETIMEDOUT: return "ETIMEDOUT";
    }
    snprintf(buf, sizeof buf, "E%d", e);
    return buf;
}

#ifdef __i386__
/* i386: the socket API through socketcall(2), arguments in memory */
static long socketcall(long call, long a0, long a1, long a2, long a3, long a4)
{
    long args[6] = {a0, a1, a2, a3, a4, 0};
    return syscall(SYS_socketcall, call, args);
}
#endif

static int futex_word;

/* Run one named test; returns the raw result (errno set on -1). */
static long run(const char *t, int *known)
{
    int fds[2];
    char buf[64];
    *known = 1;
    if (!strcmp(t, "inotify_init1")) return syscall(SYS_inotify_init1, 0);
    if (!strcmp(t, "inotify_init")) return syscall(SYS_inotify_init);
    if (!strcmp(t, "epoll_create1")) return syscall(SYS_epoll_create1, 0);
    if (!strcmp(t, "epoll_create")) return syscall(SYS_epoll_create, 1);
    if (!strcmp(t, "pipe2")) return syscall(SYS_pipe2, fds, 0);
    if (!strcmp(t, "pipe")) return syscall(SYS_pipe, fds);
    if (!strcmp(t, "openat")) return syscall(SYS_openat, AT_FDCWD, "/", O_RDONLY);
    if (!strcmp(t, "open")) return syscall(SYS_open, "/", O_RDONLY);
    if (!strcmp(t, "open_cloexec")) return syscall(SYS_open, "/", O_RDONLY | O_CLOEXEC);
    if (!strcmp(t, "getrandom")) return syscall(SYS_getrandom, buf, 4, 0);
    if (!strcmp(t, "prlimit64")) {
        struct rlimit rl;
        return syscall(SYS_prlimit64, 0, RLIMIT_NOFILE, NULL, &rl);
    }
    if (!strcmp(t, "statx")) return syscall(SYS_statx, AT_FDCWD, "/", 0, 0x7ff, buf);
    if (!strcmp(t, "close_range")) return syscall(SYS_close_range, 1000, 1001, 0);
    if (!strcmp(t, "nr470")) return syscall(470, 0, 0, 0, 0, 0, 0); /* above the table */
    if (!strcmp(t, "dup3")) return syscall(SYS_dup3, 1, 1000, 0);
    if (!strcmp(t, "eventfd2")) return syscall(SYS_eventfd2, 0, 0);
    if (!strcmp(t, "set_robust_list")) return syscall(SYS_get_robust_list, 0, buf, buf + 32);
    if (!strcmp(t, "futex_wake")) return syscall(SYS_futex, &futex_word, FUTEX_WAKE, 1, NULL, NULL, 0);
    if (!strcmp(t, "futex_wake_private"))
        return syscall(SYS_futex, &futex_word, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, 1, NULL, NULL, 0);
    if (!strcmp(t, "futex_wait_bitset")) /* value mismatch: EAGAIN when supported */
        return syscall(SYS_futex, &futex_word, FUTEX_WAIT_BITSET, 1, NULL, NULL, ~0u);
    if (!strcmp(t, "futex_clock_rt_wait")) /* FUTEX_WAIT|CLOCK_REALTIME: 4.5+ */
        return syscall(SYS_futex, &futex_word, FUTEX_WAIT | FUTEX_CLOCK_REALTIME, 1, NULL, NULL, 0);
    if (!strcmp(t, "futex_clock_rt_bitset")) /* 2.6.28+ */
        return syscall(SYS_futex, &futex_word, FUTEX_WAIT_BITSET | FUTEX_CLOCK_REALTIME, 1, NULL, NULL, ~0u);
    if (!strcmp(t, "prctl_get_no_new_privs")) return syscall(SYS_prctl, 39 /* PR_GET_NO_NEW_PRIVS */, 0, 0, 0, 0);
    if (!strcmp(t, "prctl_get_name")) return syscall(SYS_prctl, PR_GET_NAME, buf, 0, 0, 0);
#ifdef __i386__
    if (!strcmp(t, "socket_plain")) return socketcall(1 /* SYS_SOCKET */, AF_INET, SOCK_STREAM, 0, 0, 0);
    if (!strcmp(t, "sock_cloexec")) /* LIMITATION: not refusable through socketcall */
        return socketcall(1, AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0, 0, 0);
    if (!strcmp(t, "socket_direct")) return syscall(SYS_socket, AF_INET, SOCK_STREAM, 0);
    if (!strcmp(t, "accept4")) return socketcall(18 /* SYS_ACCEPT4 */, -1, 0, 0, 0, 0);
    if (!strcmp(t, "recvmmsg")) return syscall(SYS_recvmmsg, -1, NULL, 0, 0, NULL);
    if (!strcmp(t, "sc_recvmmsg")) return socketcall(19 /* SYS_RECVMMSG */, -1, 0, 0, 0, 0);
    if (!strcmp(t, "sc_sendmmsg")) return socketcall(20 /* SYS_SENDMMSG */, -1, 0, 0, 0, 0);
    if (!strcmp(t, "futex_time64"))
        return syscall(422, &futex_word, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, 1, NULL, NULL, 0);
#else
    if (!strcmp(t, "socket_plain")) return syscall(SYS_socket, AF_INET, SOCK_STREAM, 0);
    if (!strcmp(t, "sock_cloexec")) return syscall(SYS_socket, AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (!strcmp(t, "sock_nonblock")) return syscall(SYS_socket, AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (!strcmp(t, "socketpair_cloexec"))
        return syscall(SYS_socketpair, AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds);
    if (!strcmp(t, "accept4")) return syscall(SYS_accept4, -1, NULL, NULL, 0);
    if (!strcmp(t, "recvmmsg")) return syscall(SYS_recvmmsg, -1, NULL, 0, 0, NULL);
    if (!strcmp(t, "x32_getpid")) return syscall(0x40000000 | SYS_getpid);
#endif
    *known = 0;
    return -1;
}

static void report(const char *prefix, const char *t)
{
    char line[256];
    int known;
    errno = 0;
    long r = run(t, &known);
    int e = errno;
    if (!known)
        snprintf(line, sizeof line, "%s%s=UNKNOWN-TEST\n", prefix, t);
    else if (r >= 0)
        snprintf(line, sizeof line, "%s%s=OK\n", prefix, t);
    else
        snprintf(line, sizeof line, "%s%s=%s\n", prefix, t, ename(e));
    out(line);
}

static void *thread_main(void *arg)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "tid=%ld ", (long)syscall(SYS_gettid));
    report(prefix, (const char *)arg);
    return NULL;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strncmp(a, "exit:", 5)) {
            exit(atoi(a + 5));
        } else if (!strncmp(a, "kill:", 5)) {
            signal(atoi(a + 5), SIG_DFL);
            kill(getpid(), atoi(a + 5));
            pause();
        } else if (!strncmp(a, "thread:", 7)) {
            pthread_t th;
            if (pthread_create(&th, NULL, thread_main, (void *)(a + 7)) != 0) {
                out("pthread_create failed\n");
                return 3;
            }
            pthread_join(th, NULL);
        } else if (!strncmp(a, "fork:", 5) || !strncmp(a, "bg:", 3)) {
            int bg = a[0] == 'b';
            const char *t = strchr(a, ':') + 1;
            pid_t p = (pid_t)syscall(SYS_fork);
            if (p == 0) {
                char prefix[64];
                if (bg) {
                    struct timespec ts = {1, 0};
                    nanosleep(&ts, NULL);
                }
                snprintf(prefix, sizeof prefix, "pid=%ld ", (long)syscall(SYS_getpid));
                report(prefix, t);
                _exit(0);
            }
            if (!bg) {
                int st;
                waitpid(p, &st, 0);
            }
        } else {
            report("", a);
        }
    }
    return 0;
}
