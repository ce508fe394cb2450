// Threading and checked-arithmetic helpers shared by all kernels.
// Header-only, no Python headers.
//
//   checked_mul, checked_add   int64 size arithmetic that throws std::overflow_error
//   thread_cap, clamp_threads  team sizes capped at the CPUs available to the process
//   in_forked_child            kernels run serially in children forked after a team started
//   CancelFlag, ScopedCancel   cooperative cancellation (Ctrl-C), polled by parallel_blocks
//   parallel_blocks(_aligned)  static per-thread blocks, exception capture, cancellation
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
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

// Work units (about one element read or written each) between two polls of the
// cancellation flag: a fraction of a millisecond of memory traffic.
constexpr std::int64_t kPollWork = std::int64_t(1) << 18;

inline bool openmp_enabled() {
#ifdef _OPENMP
    return true;
#else
    return false;
#endif
}

// ----------------------------------------------------------------------------- checked arithmetic

namespace detail {

// Portable overflow tests that never evaluate the overflowing operation (used
// where the GCC/Clang builtins are missing; unit-tested against them).
constexpr bool mul_overflows(std::int64_t a, std::int64_t b) {
    using L = std::numeric_limits<std::int64_t>;
    if (a == 0 || b == 0) return false;
    if (a > 0) return b > 0 ? a > L::max() / b : b < L::min() / a;
    return b > 0 ? a < L::min() / b : b < L::max() / a;
}

constexpr bool add_overflows(std::int64_t a, std::int64_t b) {
    using L = std::numeric_limits<std::int64_t>;
    return b > 0 ? a > L::max() - b : a < L::min() - b;
}

[[noreturn]] inline void throw_overflow(const char* what) {
    throw std::overflow_error(std::string("tensorjac: size ") + what + " overflows 64-bit integers");
}

}  // namespace detail

// a * b and a + b, or std::overflow_error when the exact result does not fit
// in int64 (the GCC/Clang builtins where available, a portable test otherwise).
inline std::int64_t checked_mul(std::int64_t a, std::int64_t b) {
#if defined(__GNUC__) || defined(__clang__)
    std::int64_t r;
    if (__builtin_mul_overflow(a, b, &r)) detail::throw_overflow("product");
    return r;
#else
    if (detail::mul_overflows(a, b)) detail::throw_overflow("product");
    return a * b;
#endif
}

inline std::int64_t checked_add(std::int64_t a, std::int64_t b) {
#if defined(__GNUC__) || defined(__clang__)
    std::int64_t r;
    if (__builtin_add_overflow(a, b, &r)) detail::throw_overflow("sum");
    return r;
#else
    if (detail::add_overflows(a, b)) detail::throw_overflow("sum");
    return a + b;
#endif
}

// ----------------------------------------------------------------------------- thread counts

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

// ----------------------------------------------------------------------------- cancellation

// A flag another thread or a signal handler sets to ask running kernels to
// stop.  Lock-free, hence async-signal-safe.
using CancelFlag = std::atomic<bool>;
static_assert(CancelFlag::is_always_lock_free, "CancelFlag must be async-signal-safe");

// Thrown on the calling thread by a kernel that stopped early because its
// cancel flag was set; the output is then partly written.
struct Interrupted : std::runtime_error {
    Interrupted() : std::runtime_error("tensorjac: kernel interrupted") {}
};

namespace detail {
inline const CancelFlag*& cancel_slot() {
    thread_local const CancelFlag* flag = nullptr;
    return flag;
}
}  // namespace detail

// While alive, every parallel_blocks started on this thread polls `flag`
// (every kPollWork units of work, in every thread of the team) and throws
// Interrupted once it is set.  Scopes nest; the previous flag is restored.
class ScopedCancel {
public:
    explicit ScopedCancel(const CancelFlag* flag) : prev_(detail::cancel_slot()) { detail::cancel_slot() = flag; }
    ~ScopedCancel() { detail::cancel_slot() = prev_; }
    ScopedCancel(const ScopedCancel&) = delete;
    ScopedCancel& operator=(const ScopedCancel&) = delete;

private:
    const CancelFlag* prev_;
};

// Throws Interrupted when the cancel flag of the current parallel_blocks call
// is set.  parallel_blocks polls between the pieces it hands to the body; a
// body whose pieces are long (see parallel_blocks_aligned) polls inside too.
inline void poll_cancel() {
    const CancelFlag* flag = detail::cancel_slot();
    if (flag && flag->load(std::memory_order_relaxed)) throw Interrupted();
}

// ----------------------------------------------------------------------------- parallel_blocks

// Bounds of block `tid` of `cnt` over [0, n): n * tid / cnt without the
// overflow of n * tid (n = q * cnt + r; r * tid < cnt * cnt fits).
inline void block_bounds(std::int64_t n, int tid, int cnt, std::int64_t& lo, std::int64_t& hi) {
    const std::int64_t q = n / cnt, r = n % cnt;
    lo = q * tid + r * tid / cnt;
    hi = q * (tid + 1) + r * (tid + 1) / cnt;
}

namespace detail {
// body over [lo, hi) in consecutive pieces of about `step` indices, cut at
// multiples of `align`, polling the cancel flag (and the team's stop flag)
// before each piece.
template <class Body>
void run_polled(std::int64_t lo, std::int64_t hi, int tid, std::int64_t step, std::int64_t align,
                const std::atomic<bool>* stop, Body& body) {
    for (std::int64_t a = lo; a < hi;) {
        poll_cancel();
        if (stop && stop->load(std::memory_order_relaxed)) return;  // another thread failed
        std::int64_t b = hi - a > step ? a + step : hi;
        if (align > 1 && b < hi) b = std::min(hi, b / align * align);
        body(a, b, tid);
        a = b;
    }
}
}  // namespace detail

// Runs body(begin, end, thread_id) over [0, n) split into one contiguous,
// statically assigned block per thread; a block is handed to body in
// consecutive pieces of about kPollWork units of work (work_per_index
// estimates the units per index), cut at multiples of `align` indices (so a
// kernel can keep, e.g., whole rows together), and the cancel flag is polled
// between pieces.  The split depends only on n and the thread count, and
// each index is handled exactly once, so kernels whose per-index work has no
// cross-index reduction are bitwise reproducible for any thread count.
//
// The team has at most min(nthreads, thread_cap(), n) threads; in a forked
// child (see in_forked_child) it is 1.  Exceptions thrown by body never escape
// the parallel region: the first one is captured, the other threads stop at
// their next poll, and it is rethrown on the calling thread.  When the calling
// thread has a ScopedCancel flag and it gets set, every thread stops at its
// next poll and Interrupted is thrown; bodies may call poll_cancel() (which
// sees the same flag in every thread of the team) to poll inside long pieces.
template <class Body>
void parallel_blocks_aligned(std::int64_t n, int nthreads, std::int64_t work_per_index, std::int64_t align,
                             Body&& body) {
    if (n <= 0) return;
    const std::int64_t per = work_per_index > 0 ? work_per_index : 1;
    const std::int64_t al = align > 0 ? align : 1;
    const std::int64_t step = std::max<std::int64_t>(al, kPollWork / per);
    int nt = clamp_threads(nthreads);
    if (nt > n) nt = static_cast<int>(n);
    const bool small = n < (kParallelGrain + per - 1) / per;
    if (nt == 1 || small || in_forked_child()) {
        detail::run_polled(0, n, 0, step, al, nullptr, body);
        return;
    }
#ifdef _OPENMP
    arm_fork_guard();
    const CancelFlag* cancel = detail::cancel_slot();  // the caller's, handed to every thread
    std::exception_ptr error = nullptr;
    std::mutex error_mutex;
    std::atomic<bool> stop{false};
#pragma omp parallel num_threads(nt)
    {
        const int tid = omp_get_thread_num();
        const int cnt = omp_get_num_threads();
        std::int64_t lo, hi;
        block_bounds(n, tid, cnt, lo, hi);
        try {
            ScopedCancel same_flag(cancel);  // poll_cancel() in this thread sees the caller's flag
            detail::run_polled(lo, hi, tid, step, al, &stop, body);
        } catch (...) {
            stop.store(true, std::memory_order_relaxed);
            std::lock_guard<std::mutex> lock(error_mutex);
            if (!error) error = std::current_exception();
        }
    }
    if (error) std::rethrow_exception(error);
#else
    detail::run_polled(0, n, 0, step, al, nullptr, body);
#endif
}

// parallel_blocks_aligned without alignment: pieces may start at any index.
template <class Body>
void parallel_blocks(std::int64_t n, int nthreads, std::int64_t work_per_index, Body&& body) {
    parallel_blocks_aligned(n, nthreads, work_per_index, 1, std::forward<Body>(body));
}

}  // namespace tensorjac
