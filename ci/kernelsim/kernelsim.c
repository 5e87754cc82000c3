/*
 * kernelsim.c - run a command as if on an old Linux kernel's syscall table.
 *
 *   kernelsim --kernel VERSION [--log FILE] -- COMMAND [ARGS...]
 *   kernelsim --list                (print the syscall table, one per line)
 *   kernelsim --kernel V --dump     (print the BPF filter for V, for debugging)
 *
 * VERSION is "2.6.9", "2.6.18", "2.6.32", "3.10" or any "x.y[.z]" (trailing
 * junk such as "-80.el8" is ignored).  The exit status is the command's
 * (a command killed by a signal kills kernelsim with the same signal).
 * kernelsim's own errors exit 125, a command that cannot be executed 126/127.
 *
 * HOW IT WORKS
 * ------------
 * A seccomp-BPF filter is installed (with PR_SET_NO_NEW_PRIVS) right before
 * execve() of COMMAND.  The filter looks at seccomp_data.arch:
 *   - AUDIT_ARCH_X86_64: the 64-bit table.  Numbers with __X32_SYSCALL_BIT
 *     (x32 ABI) are always refused with ENOSYS.
 *   - AUDIT_ARCH_I386: the 32-bit table (an i386 binary on an x86_64 host,
 *     via int $0x80 / sysenter / syscall from compat mode).
 *   - anything else: ENOSYS.
 * For each arch, every syscall number is classified using the table below:
 *   - in the table: allowed iff its "since" version <= the simulated kernel;
 *   - not in the table and <= the highest number that 2.6.9 had (x86_64:
 *     247 waitid, i386: 284 waitid): allowed (it is as old as 2.6.9, or it
 *     never existed and the host kernel answers ENOSYS by itself);
 *   - not in the table and above that ("unknown": gaps and numbers newer
 *     than this table, which knows everything up to Linux 6.17): refused with
 *     ENOSYS, unless the simulated kernel is NEWER than 6.17, in which case
 *     they are passed to the host kernel (we cannot know what e.g. 6.20 has).
 * Refused numbers are compiled into a list of number ranges.
 *
 * Argument checks (old kernels that had the syscall but not the flag):
 *   - x86_64 socket()/socketpair() with SOCK_CLOEXEC|SOCK_NONBLOCK in type,
 *     before 2.6.27: EINVAL (old kernels rejected type >= SOCK_MAX).
 *   - i386 socketcall(): the sub-call number is in a register, so
 *     SYS_ACCEPT4 (18) before 2.6.28, SYS_RECVMMSG (19) before 2.6.33 and
 *     SYS_SENDMMSG (20) before 3.0 return EINVAL as old kernels did.
 *     LIMITATION: socketcall(SYS_SOCKET, ...) passes its arguments in user
 *     memory, which BPF cannot read, so SOCK_CLOEXEC through socketcall is
 *     NOT refused.  (i386 direct socket() etc. are 4.3+ and so are refused
 *     outright below 4.3; musl and glibc on i386 use socketcall.)
 *   - futex (x86_64 202, i386 240 and futex_time64 422): FUTEX_PRIVATE_FLAG
 *     (128) before 2.6.22 -> ENOSYS; FUTEX_CLOCK_REALTIME (256) before
 *     2.6.28 -> ENOSYS, and from 2.6.28 to 4.4 with any op but
 *     WAIT_BITSET/WAIT_REQUEUE_PI -> ENOSYS (4.5 also allowed FUTEX_WAIT;
 *     from 4.5 on the host kernel's own rule applies, and current kernels
 *     refuse FUTEX_WAIT|FUTEX_CLOCK_REALTIME again); ops newer than the kernel ->
 *     ENOSYS: WAKE_OP 2.6.14, LOCK_PI/UNLOCK_PI/TRYLOCK_PI 2.6.18,
 *     WAIT_BITSET/WAKE_BITSET 2.6.25, WAIT_REQUEUE_PI/CMP_REQUEUE_PI 2.6.31,
 *     LOCK_PI2 5.14.
 *   - prctl options newer than the kernel -> EINVAL: 19-20 (ENDIAN) 2.6.18,
 *     21-22 (SECCOMP) 2.6.23, 23-24 (CAPBSET) 2.6.25, 25-28 (TSC, SECUREBITS)
 *     2.6.26, 29-30 (TIMERSLACK) 2.6.28, 31-32 (PERF) 2.6.31, 33-34 (MCE_KILL)
 *     2.6.32, 35 (SET_MM) 3.3, 36-37 (CHILD_SUBREAPER) and PR_SET_PTRACER
 *     3.4, 38-40 (NO_NEW_PRIVS, GET_TID_ADDRESS) 3.5, 41-42 (THP_DISABLE)
 *     3.15, 43-44 (MPX) 3.19, 45-46 (FP_MODE) 4.0, 47 (CAP_AMBIENT) 4.3,
 *     PR_SET_VMA 5.17.  Higher options are left to the host.
 * Not refused on purpose (old kernels silently IGNORED these, so the call
 * succeeded there too and only the flag's effect was missing — which we
 * cannot take away): O_CLOEXEC/O_DIRECTORY/O_NOFOLLOW-era open flags
 * (O_CLOEXEC is 2.6.23), MAP_STACK and other new mmap flags, unknown
 * clone flags in some ranges, madvise advice values, etc.
 * pipe2/eventfd2/epoll_create1/inotify_init1/dup3/signalfd4/accept4 flags
 * need no check: the syscalls themselves are refused before they existed.
 *
 * Refused calls return ENOSYS (EINVAL for the flag cases above).
 *
 * --log FILE
 * ----------
 * Without --log the filter's refusals are SECCOMP_RET_ERRNO|errno and there
 * is no supervisor: kernelsim simply becomes the command.
 * With --log the SAME filter is generated with SECCOMP_RET_TRACE|data instead
 * (data = errno | reason<<8), and a supervisor process ptrace()s the command
 * and all its threads and descendants (PTRACE_SEIZE with TRACESECCOMP,
 * TRACECLONE, TRACEFORK, TRACEVFORK, TRACEEXEC, EXITKILL).  On each
 * PTRACE_EVENT_SECCOMP stop it logs name, arch, args and pid, then skips the
 * call (orig_rax = -1) with rax = -errno, i.e. the exact result that
 * SECCOMP_RET_ERRNO would have given.  Both modes therefore give the target
 * identical results (the decision is made by the same BPF program).
 * The supervisor uses PTRACE_GET_SYSCALL_INFO (host >= 5.3) for the log's
 * arch/args, falling back to the registers on older hosts.
 * Process layout with --log: kernelsim (front) -> supervisor -> command.
 * The front exits with the command's status as soon as the command exits;
 * the supervisor keeps following (and logging) any descendants that outlive
 * it (e.g. a daemon that forked into the background), then exits.  The
 * front forwards SIGHUP/INT/QUIT/TERM/USR1/USR2 to the command.
 *
 * WHAT THIS CANNOT SIMULATE
 * -------------------------
 *  - The ELF loader: static-PIE (ET_DYN without PT_INTERP), PT_GNU_STACK,
 *    PT_GNU_PROPERTY etc. are handled by the host's loader, not 2.6.x's.
 *  - The auxiliary vector (AT_RANDOM is 2.6.29, AT_SYSINFO_EHDR, AT_HWCAP2,
 *    AT_MINSIGSTKSZ ... are all present here), and the vDSO itself: vDSO
 *    calls (clock_gettime, gettimeofday, time, getcpu) never enter the
 *    kernel, so they are not filtered.  2.6.9 x86_64 had no vDSO (only the
 *    vsyscall page); i386 2.6.9 had a vDSO with only sysenter glue.  Legacy
 *    vsyscall page calls (0xffffffffff600000) are emulated by the host, or
 *    fault if the host disabled vsyscall emulation.
 *  - /proc and /sys contents, cgroup layout, capabilities, the network
 *    stack, filesystems and device behaviour: those of the host.
 *  - Behaviour changes inside an existing syscall other than the flag
 *    checks above (e.g. new errno values, changed semantics).
 *  - RHEL backports: RHEL kernels carry syscalls newer than their base
 *    version (e.g. RHEL5's 2.6.18 has some later features, RHEL7's 3.10
 *    has getrandom/memfd_create... in later minor releases).  Simulating
 *    the upstream version is the conservative choice.
 *  - Syscalls REMOVED since (sysctl, uselib, FUTEX_FD, ...): the host
 *    answers ENOSYS where an old kernel would have worked.
 *  - Versions below 2.6.9 are accepted, but only the 2.6.6-2.6.9 additions
 *    listed in the table are modelled below 2.6.9.
 *  - A filter inherited by a glibc child (/bin/sh ...) breaks that child
 *    when simulating < 2.6.16 (modern glibc needs openat): test static
 *    children.
 *
 * Numbers come from <asm/unistd_64.h> and <asm/unistd_32.h> (Linux 6.1
 * headers) and, for 451-469, from arch/x86/entry/syscalls/syscall_*.tbl;
 * "since" versions from the kernel history (man-pages and the commits that
 * wired each syscall up on x86).  The selftest checks the numbers against
 * the installed headers (kernelsim --list).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

#ifndef AUDIT_ARCH_I386
#define AUDIT_ARCH_I386 0x40000003
#endif
#define X32_SYSCALL_BIT 0x40000000u

/* ------------------------------------------------------------------ */
/* Versions                                                            */
/* ------------------------------------------------------------------ */

typedef uint32_t kver; /* major<<16 | minor<<8 | patch (each capped at 255) */

/* Parse "2.6.18", "3.10", "4.18.0-80.el8" ...; returns 0 on error. */
static kver parse_version(const char *s)
{
    unsigned part[3] = {0, 0, 0};
    int n = 0;
    const char *p = s;
    while (n < 3) {
        if (*p < '0' || *p > '9')
            break;
        unsigned v = 0;
        while (*p >= '0' && *p <= '9') {
            v = v * 10 + (unsigned)(*p - '0');
            if (v > 255)
                v = 255;
            p++;
        }
        part[n++] = v;
        if (*p != '.')
            break;
        p++;
    }
    if (n < 2 || part[0] == 0)
        return 0;
    return (kver)(part[0] << 16 | part[1] << 8 | part[2]);
}

static const char *fmt_version(kver v, char *buf, size_t len)
{
    if (v & 0xff)
        snprintf(buf, len, "%u.%u.%u", v >> 16, (v >> 8) & 0xff, v & 0xff);
    else
        snprintf(buf, len, "%u.%u", v >> 16, (v >> 8) & 0xff);
    return buf;
}

/* ------------------------------------------------------------------ */
/* The syscall table                                                   */
/* ------------------------------------------------------------------ */

struct sc {
    const char *name;
    int nr64;          /* x86_64 number, -1 if none on x86_64 */
    int nr32;          /* i386 number, -1 if none on i386 */
    const char *since; /* first upstream kernel version that had it */
};

/*
 * Everything below these numbers that is not listed in the table existed in
 * 2.6.9 (or never existed at all: vserver, afs_syscall, tuxcall ...).
 */
#define BASE_MAX_X86_64 247 /* waitid, 2.6.9 */
#define BASE_MAX_I386 284   /* waitid, 2.6.9 */
#define TABLE_LATEST "6.17" /* the newest kernel this table fully knows */
#define NR_LIMIT 1024       /* numbers >= this are "unknown" on both arches */

static const struct sc table[] = {
    /* 2.6.6 - 2.6.9 (only matters for --kernel < 2.6.9) */
    {"mq_open", 240, 277, "2.6.6"},
    {"mq_unlink", 241, 278, "2.6.6"},
    {"mq_timedsend", 242, 279, "2.6.6"},
    {"mq_timedreceive", 243, 280, "2.6.6"},
    {"mq_notify", 244, 281, "2.6.6"},
    {"mq_getsetattr", 245, 282, "2.6.6"},
    {"mbind", 237, 274, "2.6.7"},
    {"set_mempolicy", 238, 276, "2.6.7"},
    {"get_mempolicy", 239, 275, "2.6.7"},
    {"waitid", 247, 284, "2.6.9"},
    /* after 2.6.9 */
    {"add_key", 248, 286, "2.6.10"},
    {"request_key", 249, 287, "2.6.10"},
    {"keyctl", 250, 288, "2.6.10"},
    {"kexec_load", 246, 283, "2.6.13"}, /* number reserved, sys_ni before */
    {"ioprio_set", 251, 289, "2.6.13"},
    {"ioprio_get", 252, 290, "2.6.13"},
    {"inotify_init", 253, 291, "2.6.13"},
    {"inotify_add_watch", 254, 292, "2.6.13"},
    {"inotify_rm_watch", 255, 293, "2.6.13"},
    {"migrate_pages", 256, 294, "2.6.16"},
    {"openat", 257, 295, "2.6.16"},
    {"mkdirat", 258, 296, "2.6.16"},
    {"mknodat", 259, 297, "2.6.16"},
    {"fchownat", 260, 298, "2.6.16"},
    {"futimesat", 261, 299, "2.6.16"},
    {"newfstatat", 262, -1, "2.6.16"},
    {"fstatat64", -1, 300, "2.6.16"},
    {"unlinkat", 263, 301, "2.6.16"},
    {"renameat", 264, 302, "2.6.16"},
    {"linkat", 265, 303, "2.6.16"},
    {"symlinkat", 266, 304, "2.6.16"},
    {"readlinkat", 267, 305, "2.6.16"},
    {"fchmodat", 268, 306, "2.6.16"},
    {"faccessat", 269, 307, "2.6.16"},
    {"pselect6", 270, 308, "2.6.16"},
    {"ppoll", 271, 309, "2.6.16"},
    {"unshare", 272, 310, "2.6.16"},
    {"set_robust_list", 273, 311, "2.6.17"},
    {"get_robust_list", 274, 312, "2.6.17"},
    {"splice", 275, 313, "2.6.17"},
    {"tee", 276, 315, "2.6.17"},
    {"sync_file_range", 277, 314, "2.6.17"},
    {"vmsplice", 278, 316, "2.6.17"},
    {"move_pages", 279, 317, "2.6.18"},
    {"utimensat", 280, 320, "2.6.22"},
    {"epoll_pwait", 281, 319, "2.6.19"},
    {"getcpu", -1, 318, "2.6.19"}, /* x86_64 had only the vsyscall until 3.1 */
    {"signalfd", 282, 321, "2.6.22"},
    {"timerfd_create", 283, 322, "2.6.25"}, /* a different "timerfd" in 2.6.22 */
    {"eventfd", 284, 323, "2.6.22"},
    {"fallocate", 285, 324, "2.6.23"},
    {"timerfd_settime", 286, 325, "2.6.25"},
    {"timerfd_gettime", 287, 326, "2.6.25"},
    {"accept4", 288, -1, "2.6.28"},
    {"signalfd4", 289, 327, "2.6.27"},
    {"eventfd2", 290, 328, "2.6.27"},
    {"epoll_create1", 291, 329, "2.6.27"},
    {"dup3", 292, 330, "2.6.27"},
    {"pipe2", 293, 331, "2.6.27"},
    {"inotify_init1", 294, 332, "2.6.27"},
    {"preadv", 295, 333, "2.6.30"},
    {"pwritev", 296, 334, "2.6.30"},
    {"rt_tgsigqueueinfo", 297, 335, "2.6.31"},
    {"perf_event_open", 298, 336, "2.6.31"},
    {"recvmmsg", 299, 337, "2.6.33"},
    {"fanotify_init", 300, 338, "2.6.37"},
    {"fanotify_mark", 301, 339, "2.6.37"},
    {"prlimit64", 302, 340, "2.6.36"},
    {"name_to_handle_at", 303, 341, "2.6.39"},
    {"open_by_handle_at", 304, 342, "2.6.39"},
    {"clock_adjtime", 305, 343, "2.6.39"},
    {"syncfs", 306, 344, "2.6.39"},
    {"sendmmsg", 307, 345, "3.0"},
    {"setns", 308, 346, "3.0"},
    {"getcpu", 309, -1, "3.1"},
    {"process_vm_readv", 310, 347, "3.2"},
    {"process_vm_writev", 311, 348, "3.2"},
    {"kcmp", 312, 349, "3.5"},
    {"finit_module", 313, 350, "3.8"},
    {"sched_setattr", 314, 351, "3.14"},
    {"sched_getattr", 315, 352, "3.14"},
    {"renameat2", 316, 353, "3.15"},
    {"seccomp", 317, 354, "3.17"},
    {"getrandom", 318, 355, "3.17"},
    {"memfd_create", 319, 356, "3.17"},
    {"kexec_file_load", 320, -1, "3.17"},
    {"bpf", 321, 357, "3.18"},
    {"execveat", 322, 358, "3.19"},
    /* i386 got direct socket syscalls in 4.3; before: socketcall only */
    {"socket", -1, 359, "4.3"},
    {"socketpair", -1, 360, "4.3"},
    {"bind", -1, 361, "4.3"},
    {"connect", -1, 362, "4.3"},
    {"listen", -1, 363, "4.3"},
    {"accept4", -1, 364, "4.3"},
    {"getsockopt", -1, 365, "4.3"},
    {"setsockopt", -1, 366, "4.3"},
    {"getsockname", -1, 367, "4.3"},
    {"getpeername", -1, 368, "4.3"},
    {"sendto", -1, 369, "4.3"},
    {"sendmsg", -1, 370, "4.3"},
    {"recvfrom", -1, 371, "4.3"},
    {"recvmsg", -1, 372, "4.3"},
    {"shutdown", -1, 373, "4.3"},
    {"userfaultfd", 323, 374, "4.3"},
    {"membarrier", 324, 375, "4.3"},
    {"mlock2", 325, 376, "4.4"},
    {"copy_file_range", 326, 377, "4.5"},
    {"preadv2", 327, 378, "4.6"},
    {"pwritev2", 328, 379, "4.6"},
    {"pkey_mprotect", 329, 380, "4.9"},
    {"pkey_alloc", 330, 381, "4.9"},
    {"pkey_free", 331, 382, "4.9"},
    {"statx", 332, 383, "4.11"},
    {"arch_prctl", -1, 384, "4.12"}, /* x86_64's arch_prctl (158) is old */
    {"io_pgetevents", 333, 385, "4.18"},
    {"rseq", 334, 386, "4.18"},
    /* i386 direct SysV IPC calls (before: ipc() multiplexer) and time64 */
    {"semget", -1, 393, "5.1"},
    {"semctl", -1, 394, "5.1"},
    {"shmget", -1, 395, "5.1"},
    {"shmctl", -1, 396, "5.1"},
    {"shmat", -1, 397, "5.1"},
    {"shmdt", -1, 398, "5.1"},
    {"msgget", -1, 399, "5.1"},
    {"msgsnd", -1, 400, "5.1"},
    {"msgrcv", -1, 401, "5.1"},
    {"msgctl", -1, 402, "5.1"},
    {"clock_gettime64", -1, 403, "5.1"},
    {"clock_settime64", -1, 404, "5.1"},
    {"clock_adjtime64", -1, 405, "5.1"},
    {"clock_getres_time64", -1, 406, "5.1"},
    {"clock_nanosleep_time64", -1, 407, "5.1"},
    {"timer_gettime64", -1, 408, "5.1"},
    {"timer_settime64", -1, 409, "5.1"},
    {"timerfd_gettime64", -1, 410, "5.1"},
    {"timerfd_settime64", -1, 411, "5.1"},
    {"utimensat_time64", -1, 412, "5.1"},
    {"pselect6_time64", -1, 413, "5.1"},
    {"ppoll_time64", -1, 414, "5.1"},
    {"io_pgetevents_time64", -1, 416, "5.1"},
    {"recvmmsg_time64", -1, 417, "5.1"},
    {"mq_timedsend_time64", -1, 418, "5.1"},
    {"mq_timedreceive_time64", -1, 419, "5.1"},
    {"semtimedop_time64", -1, 420, "5.1"},
    {"rt_sigtimedwait_time64", -1, 421, "5.1"},
    {"futex_time64", -1, 422, "5.1"},
    {"sched_rr_get_interval_time64", -1, 423, "5.1"},
    /* from here on both arches share the numbers */
    {"pidfd_send_signal", 424, 424, "5.1"},
    {"io_uring_setup", 425, 425, "5.1"},
    {"io_uring_enter", 426, 426, "5.1"},
    {"io_uring_register", 427, 427, "5.1"},
    {"open_tree", 428, 428, "5.2"},
    {"move_mount", 429, 429, "5.2"},
    {"fsopen", 430, 430, "5.2"},
    {"fsconfig", 431, 431, "5.2"},
    {"fsmount", 432, 432, "5.2"},
    {"fspick", 433, 433, "5.2"},
    {"pidfd_open", 434, 434, "5.3"},
    {"clone3", 435, 435, "5.3"},
    {"close_range", 436, 436, "5.9"},
    {"openat2", 437, 437, "5.6"},
    {"pidfd_getfd", 438, 438, "5.6"},
    {"faccessat2", 439, 439, "5.8"},
    {"process_madvise", 440, 440, "5.10"},
    {"epoll_pwait2", 441, 441, "5.11"},
    {"mount_setattr", 442, 442, "5.12"},
    {"quotactl_fd", 443, 443, "5.14"},
    {"landlock_create_ruleset", 444, 444, "5.13"},
    {"landlock_add_rule", 445, 445, "5.13"},
    {"landlock_restrict_self", 446, 446, "5.13"},
    {"memfd_secret", 447, 447, "5.14"},
    {"process_mrelease", 448, 448, "5.15"},
    {"futex_waitv", 449, 449, "5.16"},
    {"set_mempolicy_home_node", 450, 450, "5.17"},
    {"cachestat", 451, 451, "6.5"},
    {"fchmodat2", 452, 452, "6.6"},
    {"map_shadow_stack", 453, 453, "6.6"},
    {"futex_wake", 454, 454, "6.7"},
    {"futex_wait", 455, 455, "6.7"},
    {"futex_requeue", 456, 456, "6.7"},
    {"statmount", 457, 457, "6.8"},
    {"listmount", 458, 458, "6.8"},
    {"lsm_get_self_attr", 459, 459, "6.8"},
    {"lsm_set_self_attr", 460, 460, "6.8"},
    {"lsm_list_modules", 461, 461, "6.8"},
    {"mseal", 462, 462, "6.10"},
    {"setxattrat", 463, 463, "6.13"},
    {"getxattrat", 464, 464, "6.13"},
    {"listxattrat", 465, 465, "6.13"},
    {"removexattrat", 466, 466, "6.13"},
    {"open_tree_attr", 467, 467, "6.15"},
    {"file_getattr", 468, 468, "6.17"},
    {"file_setattr", 469, 469, "6.17"},
};
#define TABLE_LEN (sizeof table / sizeof table[0])

/* Old syscalls that the filter looks into, and names for the log. */
#define NR64_SOCKET 41
#define NR64_SOCKETPAIR 53
#define NR64_FUTEX 202
#define NR64_PRCTL 157
#define NR32_SOCKETCALL 102
#define NR32_FUTEX 240
#define NR32_PRCTL 172

enum arch { A64 = 0, A32 = 1 };

static const struct sc *lookup(enum arch a, long nr)
{
    for (size_t i = 0; i < TABLE_LEN; i++)
        if ((a == A64 ? table[i].nr64 : table[i].nr32) == nr)
            return &table[i];
    return NULL;
}

static kver table_latest;

/* Does the simulated kernel k have syscall nr on arch a? */
static int nr_allowed(enum arch a, long nr, kver k)
{
    const struct sc *e = lookup(a, nr);
    if (e)
        return parse_version(e->since) <= k;
    if (nr >= 0 && nr <= (a == A64 ? BASE_MAX_X86_64 : BASE_MAX_I386))
        return 1;
    return k > table_latest; /* unknown: only a kernel newer than the table */
}

/* futex ops and their versions (op & FUTEX_CMD_MASK) */
static const struct {
    int op;
    const char *since;
} futex_ops[] = {
    {5, "2.6.14"},  /* FUTEX_WAKE_OP */
    {6, "2.6.18"},  /* FUTEX_LOCK_PI */
    {7, "2.6.18"},  /* FUTEX_UNLOCK_PI */
    {8, "2.6.18"},  /* FUTEX_TRYLOCK_PI */
    {9, "2.6.25"},  /* FUTEX_WAIT_BITSET */
    {10, "2.6.25"}, /* FUTEX_WAKE_BITSET */
    {11, "2.6.31"}, /* FUTEX_WAIT_REQUEUE_PI */
    {12, "2.6.31"}, /* FUTEX_CMP_REQUEUE_PI */
    {13, "5.14"},   /* FUTEX_LOCK_PI2 */
};

/* prctl option ranges and their versions */
static const struct {
    uint32_t lo, hi;
    const char *since;
} prctl_opts[] = {
    {19, 20, "2.6.18"}, {21, 22, "2.6.23"}, {23, 24, "2.6.25"},
    {25, 28, "2.6.26"}, {29, 30, "2.6.28"}, {31, 32, "2.6.31"},
    {33, 34, "2.6.32"}, {35, 35, "3.3"},    {36, 37, "3.4"},
    {38, 40, "3.5"},    {41, 42, "3.15"},   {43, 44, "3.19"},
    {45, 46, "4.0"},    {47, 47, "4.3"},
    {0x59616d61, 0x59616d61, "3.4"}, /* PR_SET_PTRACER (Yama) */
    {0x53564d41, 0x53564d41, "5.17"}, /* PR_SET_VMA */
};

/* i386 socketcall sub-calls newer than 2.6.9 (which had 1..17) */
static const struct {
    uint32_t call;
    const char *name, *since;
} socketcalls[] = {
    {18, "accept4", "2.6.28"},
    {19, "recvmmsg", "2.6.33"},
    {20, "sendmmsg", "3.0"},
};

#define SOCK_FLAGS_MASK 0x80800u /* SOCK_CLOEXEC | SOCK_NONBLOCK */
#define FUTEX_PRIVATE 128u
#define FUTEX_CLOCK_RT 256u

/* Why a call was refused: bits 8..15 of SECCOMP_RET_DATA in --log mode. */
enum reason {
    R_NOSYS = 1,   /* syscall number not in this kernel */
    R_X32,         /* x32 ABI */
    R_ARCH,        /* neither x86_64 nor i386 */
    R_SOCK_FLAGS,  /* socket type flags */
    R_SOCKETCALL,  /* i386 socketcall sub-call */
    R_FUTEX_PRIV,  /* FUTEX_PRIVATE_FLAG */
    R_FUTEX_CLOCK, /* FUTEX_CLOCK_REALTIME */
    R_FUTEX_OP,    /* futex op */
    R_PRCTL,       /* prctl option */
};

/* ------------------------------------------------------------------ */
/* A tiny BPF assembler with labels (forward jumps only)               */
/* ------------------------------------------------------------------ */

#define MAXINSN 4096
static struct sock_filter prog[MAXINSN];
static int plen;
static int trace_mode; /* 1: SECCOMP_RET_TRACE (with --log); 0: RET_ERRNO */

#define MAXLABELS 64
static int label_pos[MAXLABELS];
static int nlabels;
static struct {
    int insn, label;
} fixups[MAXINSN];
static int nfixups;

static void emit(uint16_t code, uint32_t k, uint8_t jt, uint8_t jf)
{
    if (plen >= MAXINSN) {
        fprintf(stderr, "kernelsim: filter too long\n");
        exit(125);
    }
    prog[plen].code = code;
    prog[plen].k = k;
    prog[plen].jt = jt;
    prog[plen].jf = jf;
    plen++;
}
static int new_label(void) { label_pos[nlabels] = -1; return nlabels++; }
static void set_label(int l) { label_pos[l] = plen; }
static void jump(int l)
{
    fixups[nfixups].insn = plen;
    fixups[nfixups].label = l;
    nfixups++;
    emit(BPF_JMP | BPF_JA, 0, 0, 0);
}
static void resolve(void)
{
    for (int i = 0; i < nfixups; i++)
        prog[fixups[i].insn].k = (uint32_t)(label_pos[fixups[i].label] - fixups[i].insn - 1);
}
static void ret_allow(void) { emit(BPF_RET | BPF_K, SECCOMP_RET_ALLOW, 0, 0); }
static void ret_refuse(int err, enum reason r)
{
    if (trace_mode)
        emit(BPF_RET | BPF_K, SECCOMP_RET_TRACE | ((uint32_t)r << 8) | (uint32_t)err, 0, 0);
    else
        emit(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (uint32_t)err, 0, 0);
}
/* "if (A == k) goto l" */
static void jeq_to(uint32_t k, int l)
{
    emit(BPF_JMP | BPF_JEQ | BPF_K, k, 0, 1);
    jump(l);
}
/* "if (A == k) refuse" */
static void jeq_refuse(uint32_t k, int err, enum reason r)
{
    emit(BPF_JMP | BPF_JEQ | BPF_K, k, 0, 1);
    ret_refuse(err, r);
}
/* "if (A & k) refuse" */
static void jset_refuse(uint32_t k, int err, enum reason r)
{
    emit(BPF_JMP | BPF_JSET | BPF_K, k, 0, 1);
    ret_refuse(err, r);
}
/* "if (lo <= A && A <= hi) refuse" */
static void range_refuse(uint32_t lo, uint32_t hi, int err, enum reason r)
{
    if (hi == UINT32_MAX) {
        emit(BPF_JMP | BPF_JGE | BPF_K, lo, 0, 1);
    } else {
        emit(BPF_JMP | BPF_JGE | BPF_K, lo, 0, 2);
        emit(BPF_JMP | BPF_JGT | BPF_K, hi, 1, 0);
    }
    ret_refuse(err, r);
}
static void load_nr(void) { emit(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr), 0, 0); }
/* low 32 bits of argument i (little endian) */
static void load_arg(int i)
{
    emit(BPF_LD | BPF_W | BPF_ABS, (uint32_t)(offsetof(struct seccomp_data, args) + 8 * i), 0, 0);
}

#define V(s) parse_version(s)

/* The futex checks, for kernel k; A is clobbered. */
static void gen_futex(kver k)
{
    int ok = new_label();
    load_arg(1);
    if (k < V("2.6.22"))
        jset_refuse(FUTEX_PRIVATE, ENOSYS, R_FUTEX_PRIV);
    if (k < V("2.6.28")) {
        jset_refuse(FUTEX_CLOCK_RT, ENOSYS, R_FUTEX_CLOCK);
    } else if (k < V("4.5")) {
        /* CLOCK_REALTIME only with WAIT_BITSET (9) / WAIT_REQUEUE_PI (11) */
        int next = new_label();
        emit(BPF_ALU | BPF_AND | BPF_K, FUTEX_CLOCK_RT | 0x7f, 0, 0);
        jeq_to(FUTEX_CLOCK_RT | 9, next);
        jeq_to(FUTEX_CLOCK_RT | 11, next);
        jset_refuse(FUTEX_CLOCK_RT, ENOSYS, R_FUTEX_CLOCK);
        set_label(next);
    }
    emit(BPF_ALU | BPF_AND | BPF_K, 0x7f, 0, 0); /* cmd */
    for (size_t i = 0; i < sizeof futex_ops / sizeof futex_ops[0]; i++)
        if (V(futex_ops[i].since) > k)
            jeq_refuse((uint32_t)futex_ops[i].op, ENOSYS, R_FUTEX_OP);
    set_label(ok);
    ret_allow();
}

static void gen_prctl(kver k)
{
    load_arg(0);
    for (size_t i = 0; i < sizeof prctl_opts / sizeof prctl_opts[0]; i++)
        if (V(prctl_opts[i].since) > k)
            range_refuse(prctl_opts[i].lo, prctl_opts[i].hi, EINVAL, R_PRCTL);
    ret_allow();
}

/* Refused-number ranges for one arch, then ALLOW. A must hold nr. */
static void gen_ranges(enum arch a, kver k)
{
    long start = -1;
    for (long n = 0; n < NR_LIMIT; n++) {
        int ok = nr_allowed(a, n, k);
        if (!ok && start < 0)
            start = n;
        if (ok && start >= 0) {
            range_refuse((uint32_t)start, (uint32_t)(n - 1), ENOSYS, R_NOSYS);
            start = -1;
        }
    }
    if (!nr_allowed(a, NR_LIMIT, k)) { /* unknown numbers are refused */
        if (start < 0)
            start = NR_LIMIT;
        range_refuse((uint32_t)start, UINT32_MAX, ENOSYS, R_NOSYS);
    } else if (start >= 0) {
        range_refuse((uint32_t)start, NR_LIMIT - 1, ENOSYS, R_NOSYS);
    }
    ret_allow();
}

static void build_filter(kver k)
{
    int l64 = new_label(), l32 = new_label();
    plen = 0;

    emit(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch), 0, 0);
    jeq_to(AUDIT_ARCH_X86_64, l64);
    jeq_to(AUDIT_ARCH_I386, l32);
    ret_refuse(ENOSYS, R_ARCH);

    /* ---- x86_64 ---- */
    {
        int sock = new_label(), futex = new_label(), prctl = new_label();
        set_label(l64);
        load_nr();
        jset_refuse(X32_SYSCALL_BIT, ENOSYS, R_X32);
        if (k < V("2.6.27")) {
            jeq_to(NR64_SOCKET, sock);
            jeq_to(NR64_SOCKETPAIR, sock);
        }
        jeq_to(NR64_FUTEX, futex);
        jeq_to(NR64_PRCTL, prctl);
        gen_ranges(A64, k);

        set_label(sock);
        if (k < V("2.6.27")) {
            load_arg(1);
            jset_refuse(SOCK_FLAGS_MASK, EINVAL, R_SOCK_FLAGS);
        }
        ret_allow();
        set_label(futex);
        gen_futex(k);
        set_label(prctl);
        gen_prctl(k);
    }

    /* ---- i386 ---- */
    {
        int sc = new_label(), futex = new_label(), prctl = new_label();
        set_label(l32);
        load_nr();
        jeq_to(NR32_SOCKETCALL, sc);
        jeq_to(NR32_FUTEX, futex);
        if (nr_allowed(A32, 422, k))
            jeq_to(422, futex); /* futex_time64 */
        jeq_to(NR32_PRCTL, prctl);
        gen_ranges(A32, k);

        set_label(sc);
        load_arg(0);
        for (size_t i = 0; i < sizeof socketcalls / sizeof socketcalls[0]; i++)
            if (V(socketcalls[i].since) > k)
                jeq_refuse(socketcalls[i].call, EINVAL, R_SOCKETCALL);
        ret_allow();
        set_label(futex);
        gen_futex(k);
        set_label(prctl);
        gen_prctl(k);
    }
    resolve();
}

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("kernelsim: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(125);
}

/* Resolve COMMAND like execvp, but before the filter is in place. */
static const char *find_command(const char *cmd)
{
    static char buf[4096];
    if (strchr(cmd, '/'))
        return cmd;
    const char *path = getenv("PATH");
    if (!path || !*path)
        path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        const char *end = strchr(path, ':');
        size_t len = end ? (size_t)(end - path) : strlen(path);
        if (len == 0)
            snprintf(buf, sizeof buf, "./%s", cmd);
        else
            snprintf(buf, sizeof buf, "%.*s/%s", (int)len, path, cmd);
        if (access(buf, X_OK) == 0) {
            struct stat st;
            if (stat(buf, &st) == 0 && S_ISREG(st.st_mode))
                return buf;
        }
        if (!end)
            break;
        path = end + 1;
    }
    return NULL;
}

/* Install the filter and exec; never returns. */
static void exec_filtered(char **argv)
{
    extern char **environ;
    const char *path = find_command(argv[0]);
    if (!path) {
        fprintf(stderr, "kernelsim: %s: command not found\n", argv[0]);
        _exit(127);
    }
    struct sock_fprog fprog = {.len = (unsigned short)plen, .filter = prog};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        perror("kernelsim: PR_SET_NO_NEW_PRIVS");
        _exit(125);
    }
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog, 0, 0) != 0) {
        perror("kernelsim: PR_SET_SECCOMP");
        _exit(125);
    }
    /* From here on only old syscalls: execve, write, exit_group. */
    execve(path, argv, environ);
    int e = errno;
    static const char msg[] = "kernelsim: cannot execute command\n";
    if (write(2, msg, sizeof msg - 1) < 0) { /* nothing to do */ }
    _exit(e == ENOENT ? 127 : 126);
}

/* ------------------------------------------------------------------ */
/* --log: the supervisor                                               */
/* ------------------------------------------------------------------ */

static FILE *logf;
static kver sim;

static const char *reason_text(enum reason r)
{
    switch (r) {
    case R_NOSYS: return "syscall not in this kernel";
    case R_X32: return "x32 ABI refused";
    case R_ARCH: return "unknown arch";
    case R_SOCK_FLAGS: return "SOCK_CLOEXEC/SOCK_NONBLOCK in type before 2.6.27";
    case R_SOCKETCALL: return "socketcall sub-call not in this kernel";
    case R_FUTEX_PRIV: return "FUTEX_PRIVATE_FLAG before 2.6.22";
    case R_FUTEX_CLOCK: return "FUTEX_CLOCK_REALTIME not allowed with this op in this kernel";
    case R_FUTEX_OP: return "futex op not in this kernel";
    case R_PRCTL: return "prctl option not in this kernel";
    }
    return "?";
}

static const char *old_name(enum arch a, long nr)
{
    if (a == A64) {
        switch (nr) {
        case NR64_SOCKET: return "socket";
        case NR64_SOCKETPAIR: return "socketpair";
        case NR64_FUTEX: return "futex";
        case NR64_PRCTL: return "prctl";
        }
    } else {
        switch (nr) {
        case NR32_SOCKETCALL: return "socketcall";
        case NR32_FUTEX: return "futex";
        case NR32_PRCTL: return "prctl";
        }
    }
    return NULL;
}

static void log_refusal(pid_t pid, const struct __ptrace_syscall_info *si, int err, enum reason r)
{
    enum arch a = si->arch == AUDIT_ARCH_I386 ? A32 : A64;
    long nr = (long)si->seccomp.nr;
    const struct sc *e = NULL;
    const char *name = old_name(a, nr);
    char namebuf[64], vb[32], extra[128] = "";
    if (!name && r == R_NOSYS && !(si->arch == AUDIT_ARCH_X86_64 && (nr & X32_SYSCALL_BIT)))
        e = lookup(a, nr);
    if (e)
        name = e->name;
    if (!name) {
        snprintf(namebuf, sizeof namebuf, "syscall_%ld", nr);
        name = namebuf;
    }
    if (e)
        snprintf(extra, sizeof extra, "added in %s", e->since);
    else if (r == R_NOSYS)
        snprintf(extra, sizeof extra, "unknown number, above the table or in a gap");
    else if (r == R_SOCKETCALL) {
        for (size_t i = 0; i < sizeof socketcalls / sizeof socketcalls[0]; i++)
            if (si->seccomp.args[0] == socketcalls[i].call)
                snprintf(extra, sizeof extra, "SYS_%s (%u) added in %s", socketcalls[i].name,
                         socketcalls[i].call, socketcalls[i].since);
    }
    const char *ename = err == ENOSYS ? "ENOSYS" : err == EINVAL ? "EINVAL" : "E?";
    fprintf(logf, "kernelsim: pid %d %s %s(%#llx, %#llx, %#llx, %#llx, %#llx, %#llx) = -1 %s [%s%s%s; simulating %s]\n",
            (int)pid, si->arch == AUDIT_ARCH_I386 ? "i386" : si->arch == AUDIT_ARCH_X86_64 ? "x86_64" : "other-arch",
            name, (unsigned long long)si->seccomp.args[0], (unsigned long long)si->seccomp.args[1],
            (unsigned long long)si->seccomp.args[2], (unsigned long long)si->seccomp.args[3],
            (unsigned long long)si->seccomp.args[4], (unsigned long long)si->seccomp.args[5], ename,
            reason_text(r), *extra ? ": " : "", extra, fmt_version(sim, vb, sizeof vb));
    fflush(logf);
}

/* A tracee is in PTRACE_EVENT_SECCOMP stop: log, then skip with -errno.
 * The errno comes from the filter's SECCOMP_RET_DATA (PTRACE_GETEVENTMSG),
 * so the result does not depend on the logging below succeeding. */
static void handle_seccomp(pid_t pid)
{
    unsigned long data = 0;
    if (ptrace(PTRACE_GETEVENTMSG, pid, 0, &data) != 0)
        return; /* ESRCH: the tracee is gone (e.g. SIGKILLed) */
    int err = (int)(data & 0xff);
    enum reason r = (enum reason)((data >> 8) & 0xff);

    struct user_regs_struct regs;
    if (ptrace(PTRACE_GETREGS, pid, 0, &regs) != 0)
        return;

    struct __ptrace_syscall_info si;
    memset(&si, 0, sizeof si);
    long n = ptrace(PTRACE_GET_SYSCALL_INFO, pid, (void *)sizeof si, &si);
    if (n > 0 && si.op == PTRACE_SYSCALL_INFO_SECCOMP) {
        log_refusal(pid, &si, err, r);
    } else {
        /* host kernel < 5.3: log what the registers tell (cs 0x23 = 32-bit) */
        int is32 = regs.cs == 0x23;
        si.arch = is32 ? AUDIT_ARCH_I386 : AUDIT_ARCH_X86_64;
        si.seccomp.nr = regs.orig_rax;
        unsigned long long a64[6] = {regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9};
        unsigned long long a32[6] = {regs.rbx, regs.rcx, regs.rdx, regs.rsi, regs.rdi, regs.rbp};
        for (int i = 0; i < 6; i++)
            si.seccomp.args[i] = is32 ? (uint32_t)a32[i] : a64[i];
        log_refusal(pid, &si, err, r);
    }

    regs.orig_rax = (unsigned long long)-1;          /* skip the syscall ... */
    regs.rax = (unsigned long long)(long long)-err;  /* ... and return -err */
    if (ptrace(PTRACE_SETREGS, pid, 0, &regs) != 0 && errno != ESRCH)
        fprintf(logf, "kernelsim: pid %d: PTRACE_SETREGS failed: %s\n", (int)pid, strerror(errno));
}

/* The supervisor: forks the command, traces it and all its descendants. */
static void supervise(char **argv, const char *logpath, int report_fd)
{
    int go[2];
    logf = fopen(logpath, "ae");
    if (!logf)
        die("cannot open log %s: %s", logpath, strerror(errno));
    if (pipe2(go, O_CLOEXEC) != 0)
        die("pipe: %s", strerror(errno));
    pid_t child = fork();
    if (child < 0)
        die("fork: %s", strerror(errno));
    if (child == 0) {
        char c;
        close(go[1]);
        close(report_fd);
        while (read(go[0], &c, 1) < 0 && errno == EINTR)
            ;
        exec_filtered(argv);
    }
    close(go[0]);
    long opts = PTRACE_O_TRACESECCOMP | PTRACE_O_TRACECLONE | PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK |
                PTRACE_O_TRACEEXEC | PTRACE_O_EXITKILL;
    if (ptrace(PTRACE_SEIZE, child, 0, (void *)opts) != 0) {
        int e = errno;
        kill(child, SIGKILL);
        die("PTRACE_SEIZE: %s", strerror(e));
    }
    {
        char vb[32];
        fprintf(logf, "kernelsim: simulating Linux %s, command pid %d: %s\n", fmt_version(sim, vb, sizeof vb),
                (int)child, argv[0]);
        fflush(logf);
    }
    int32_t cpid = child;
    if (write(report_fd, &cpid, sizeof cpid) != sizeof cpid) { /* front is gone */ }
    if (write(go[1], "g", 1) != 1) { /* child is gone */ }
    close(go[1]);

    /* Do not hold the caller's terminal or pipes open, and do not die of
     * signals meant for the command (which would SIGKILL it: EXITKILL). */
    int devnull = open("/dev/null", O_RDWR);
    if (devnull >= 0) {
        dup2(devnull, 0);
        dup2(devnull, 1);
        dup2(devnull, 2);
        if (devnull > 2)
            close(devnull);
    }
    signal(SIGINT, SIG_IGN);
    signal(SIGQUIT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTSTP, SIG_IGN);
    signal(SIGTTIN, SIG_IGN);
    signal(SIGTTOU, SIG_IGN);

    for (;;) {
        int st;
        pid_t pid = waitpid(-1, &st, __WALL);
        if (pid < 0) {
            if (errno == EINTR)
                continue;
            break; /* ECHILD: nothing left to trace */
        }
        if (WIFEXITED(st) || WIFSIGNALED(st)) {
            if (pid == child && report_fd >= 0) {
                int32_t s = st;
                if (write(report_fd, &s, sizeof s) != sizeof s) { /* front is gone */ }
                close(report_fd);
                report_fd = -1;
            }
            continue;
        }
        if (!WIFSTOPPED(st))
            continue;
        int sig = WSTOPSIG(st);
        int event = (unsigned)st >> 16;
        switch (event) {
        case PTRACE_EVENT_SECCOMP:
            handle_seccomp(pid);
            ptrace(PTRACE_CONT, pid, 0, 0);
            break;
        case PTRACE_EVENT_STOP:
            if (sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU)
                ptrace(PTRACE_LISTEN, pid, 0, 0); /* group-stop: stay stopped */
            else
                ptrace(PTRACE_CONT, pid, 0, 0); /* new child / SIGCONT */
            break;
        case 0: /* signal-delivery-stop: deliver the signal */
            ptrace(PTRACE_CONT, pid, 0, (void *)(long)sig);
            break;
        default: /* CLONE, FORK, VFORK, VFORK_DONE, EXEC, EXIT */
            ptrace(PTRACE_CONT, pid, 0, 0);
            break;
        }
    }
    fclose(logf);
    _exit(0);
}

/* The front process (with --log): forwards signals, returns the status. */
static volatile pid_t fwd_pid;
static void forward(int sig)
{
    if (fwd_pid > 0)
        kill(fwd_pid, sig);
}

static int read_full(int fd, void *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, (char *)buf + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        got += (size_t)n;
    }
    return 0;
}

static int run_logged(char **argv, const char *logpath)
{
    static const int fwd[] = {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
    int rep[2];
    if (pipe2(rep, O_CLOEXEC) != 0)
        die("pipe: %s", strerror(errno));
    fflush(NULL);
    pid_t sup = fork();
    if (sup < 0)
        die("fork: %s", strerror(errno));
    if (sup == 0) {
        close(rep[0]);
        supervise(argv, logpath, rep[1]);
    }
    close(rep[1]);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = forward;
    for (size_t i = 0; i < sizeof fwd / sizeof fwd[0]; i++)
        sigaction(fwd[i], &sa, NULL);

    int32_t cpid, st;
    if (read_full(rep[0], &cpid, sizeof cpid) != 0) {
        int s;
        waitpid(sup, &s, 0);
        /* the supervisor died early and printed why */
        return WIFEXITED(s) && WEXITSTATUS(s) ? WEXITSTATUS(s) : 125;
    }
    fwd_pid = cpid;
    if (read_full(rep[0], &st, sizeof st) != 0)
        die("supervisor died before the command finished");
    fwd_pid = 0;
    waitpid(sup, NULL, WNOHANG); /* reap it if it is already done */
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    /* Die of the same signal, without a core dump of our own. */
    int sig = WTERMSIG(st);
    struct rlimit rl = {0, 0};
    setrlimit(RLIMIT_CORE, &rl);
    signal(sig, SIG_DFL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    fflush(NULL);
    kill(getpid(), sig);
    return 128 + sig;
}

/* ------------------------------------------------------------------ */
/* main                                                                */
/* ------------------------------------------------------------------ */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: kernelsim --kernel VERSION [--log FILE] -- COMMAND [ARGS...]\n"
            "       kernelsim --list\n"
            "       kernelsim --kernel VERSION --dump\n"
            "VERSION: 2.6.9, 2.6.18, 2.6.32, 3.10, ... (any x.y[.z]); table known up to %s\n",
            TABLE_LATEST);
}

int main(int argc, char **argv)
{
    const char *kernel = NULL, *logpath = NULL;
    int list = 0, dump = 0, i;
    table_latest = parse_version(TABLE_LATEST);

    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--")) {
            i++;
            break;
        } else if (!strcmp(argv[i], "--kernel") && i + 1 < argc) {
            kernel = argv[++i];
        } else if (!strncmp(argv[i], "--kernel=", 9)) {
            kernel = argv[i] + 9;
        } else if (!strcmp(argv[i], "--log") && i + 1 < argc) {
            logpath = argv[++i];
        } else if (!strncmp(argv[i], "--log=", 6)) {
            logpath = argv[i] + 6;
        } else if (!strcmp(argv[i], "--list")) {
            list = 1;
        } else if (!strcmp(argv[i], "--dump")) {
            dump = 1;
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (argv[i][0] == '-') {
            usage(stderr);
            return 125;
        } else {
            break; /* COMMAND without "--" */
        }
    }

    if (list) {
        for (size_t j = 0; j < TABLE_LEN; j++)
            printf("%s %d %d %s\n", table[j].name, table[j].nr64, table[j].nr32, table[j].since);
        return 0;
    }
    if (!kernel) {
        usage(stderr);
        return 125;
    }
    sim = parse_version(kernel);
    if (!sim)
        die("cannot parse kernel version '%s'", kernel);
    trace_mode = logpath != NULL;
    build_filter(sim);

    if (dump) {
        printf("# kernelsim filter for %s: %d instructions\n", kernel, plen);
        for (int j = 0; j < plen; j++)
            printf("%4d: code=%#06x jt=%3u jf=%3u k=%#010x\n", j, prog[j].code, prog[j].jt, prog[j].jf, prog[j].k);
        return 0;
    }
    if (i >= argc) {
        usage(stderr);
        return 125;
    }
    if (!logpath)
        exec_filtered(argv + i);
    return run_logged(argv + i, logpath);
}
