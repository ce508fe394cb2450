// Threading and checked-arithmetic helpers shared by all kernels.
// Header-only, no Python headers.
#pragma once
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#define TJ_HAVE_PTHREAD_ATFORK 1
#endif
#if defined(__linux__)
#include <sched.h>
#endif

namespace tensorjac {

// Below this many elements of work a kernel runs on the calling thread:
// starting a parallel region costs more than it saves.
constexpr std::int64_t kParallelGrain = std::int64_t(1) << 15;

inline bool openmp_enabled() {
#ifdef _OPENMP
    return true;
#else
    return false;
#endif
}

// CPUs this process may run on: its affinity mask where the OS has one, else
// the number of online CPUs.  At least 1.
inline int available_cpus() {
#if defined(__linux__)
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        const int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
#endif
#ifdef _OPENMP
    const int procs = omp_get_num_procs();
    if (procs > 0) return procs;
#endif
    const unsigned hc = std::thread::hardware_concurrency();
    return hc > 0 ? static_cast<int>(hc < (1u << 20) ? hc : (1u << 20)) : 1;
}

// The largest team any kernel uses: the CPUs available to the process when it
// first asked (more threads than cores only slow memory-bound kernels down,
// and absurd counts crash OpenMP runtimes), further limited by OMP_THREAD_LIMIT.
// 1 without OpenMP: kernels then always run on the calling thread.
inline int thread_cap() {
    static const int cap = [] {
#ifdef _OPENMP
        int c = available_cpus();
        const int limit = omp_get_thread_limit();
        if (limit > 0 && limit < c) c = limit;
        return c < 1 ? 1 : c;
#else
        return 1;
#endif
    }();
    return cap;
}

// Any requested count (<= 0 means 1) as a team size in [1, thread_cap()].
inline int clamp_threads(std::int64_t requested) {
    if (requested < 1) return 1;
    const int cap = thread_cap();
    return requested > cap ? cap : static_cast<int>(requested);
}

// Threads OpenMP would use by default (honours OMP_NUM_THREADS), capped.
inline int default_threads() {
#ifdef _OPENMP
    return clamp_threads(omp_get_max_threads());
#else
    return 1;
#endif
}

// ----------------------------------------------------------------------------- fork safety

// GNU libgomp keeps its worker threads in a pool that fork() does not copy: a
// forked child that starts a team waits forever for threads that do not exist.
// So just before the first team starts, a pthread_atfork child handler is
// registered that marks every later child (and, by inheritance, its
// descendants) as forked, and parallel_blocks runs serially there.  A process
// forked before any team started keeps its threads.
namespace detail {
inline std::atomic<bool>& forked_flag() {
    static std::atomic<bool> forked{false};
    return forked;
}
#ifdef TJ_HAVE_PTHREAD_ATFORK
extern "C" inline void tj_mark_forked_child() { forked_flag().store(true, std::memory_order_relaxed); }
#endif
}  // namespace detail

// Registers the fork handler (once); parallel_blocks calls it before starting a team.
inline void arm_fork_guard() {
#ifdef TJ_HAVE_PTHREAD_ATFORK
    static const bool armed = [] {
        detail::forked_flag();  // constructed before any fork
        return pthread_atfork(nullptr, nullptr, &detail::tj_mark_forked_child) == 0;
    }();
    (void)armed;
#endif
}

// True in a process forked after this one (or an ancestor) started a team.
inline bool in_forked_child() { return detail::forked_flag().load(std::memory_order_relaxed); }

// Bounds of block `tid` of `cnt` over [0, n): n * tid / cnt without the
// overflow of n * tid (n = q * cnt + r; r * tid < cnt * cnt fits).
inline void block_bounds(std::int64_t n, int tid, int cnt, std::int64_t& lo, std::int64_t& hi) {
    const std::int64_t q = n / cnt, r = n % cnt;
    lo = q * tid + r * tid / cnt;
    hi = q * (tid + 1) + r * (tid + 1) / cnt;
}

inline std::int64_t checked_mul(std::int64_t a, std::int64_t b) {
    std::int64_t r;
    if (__builtin_mul_overflow(a, b, &r))
        throw std::overflow_error("tensorjac: size product overflows 64-bit integers");
    return r;
}

inline std::int64_t checked_add(std::int64_t a, std::int64_t b) {
    std::int64_t r;
    if (__builtin_add_overflow(a, b, &r))
        throw std::overflow_error("tensorjac: size sum overflows 64-bit integers");
    return r;
}

// Runs body(begin, end, thread_id) over [0, n) split into one contiguous,
// statically assigned block per thread.  The split depends only on n and the
// thread count, and each index is handled exactly once, so kernels whose
// per-index work has no cross-index reduction are bitwise reproducible for
// any thread count.  The team has at most min(nthreads, thread_cap(), n)
// threads; in a forked child (see in_forked_child) it is 1.  Exceptions thrown by body never escape the parallel region: the
// first one is captured and rethrown on the calling thread.
template <class Body>
void parallel_blocks(std::int64_t n, int nthreads, std::int64_t work_per_index, Body&& body) {
    if (n <= 0) return;
    int nt = clamp_threads(nthreads);
    if (nt > n) nt = static_cast<int>(n);
    const std::int64_t per = work_per_index > 0 ? work_per_index : 1;
    const bool small = n < (kParallelGrain + per - 1) / per;
    if (nt == 1 || small || in_forked_child()) {
        body(std::int64_t(0), n, 0);
        return;
    }
#ifdef _OPENMP
    arm_fork_guard();
    std::exception_ptr error = nullptr;
    std::mutex error_mutex;
#pragma omp parallel num_threads(nt)
    {
        const int tid = omp_get_thread_num();
        const int cnt = omp_get_num_threads();
        std::int64_t lo, hi;
        block_bounds(n, tid, cnt, lo, hi);
        try {
            if (lo < hi) body(lo, hi, tid);
        } catch (...) {
            std::lock_guard<std::mutex> lock(error_mutex);
            if (!error) error = std::current_exception();
        }
    }
    if (error) std::rethrow_exception(error);
#else
    body(std::int64_t(0), n, 0);
#endif
}

}  // namespace tensorjac
