/* Preloaded before libfaketime by scripts/clock_check.sh, which fakes the wall clock only
 * (FAKETIME_DONT_FAKE_MONOTONIC=1). libfaketime 0.9.10 (Debian 12) still shifts an absolute
 * CLOCK_MONOTONIC deadline by the fake offset, so time.sleep() of Python 3.11 and later, which
 * sleeps with clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME), fails with EINVAL (libfaketime
 * issue 426). The monotonic clock is the real one here, so its deadlines go to the kernel as
 * they are; every other clock goes on to libfaketime. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

typedef int (*clock_nanosleep_fn)(clockid_t, int, const struct timespec *, struct timespec *);

int clock_nanosleep(clockid_t clock, int flags, const struct timespec *request, struct timespec *remain)
{
    static clock_nanosleep_fn next;
    if (clock == CLOCK_MONOTONIC)
        return syscall(SYS_clock_nanosleep, clock, flags, request, remain) == 0 ? 0 : errno;
    if (next == NULL)
        next = (clock_nanosleep_fn)dlsym(RTLD_NEXT, "clock_nanosleep");
    return next(clock, flags, request, remain);
}
