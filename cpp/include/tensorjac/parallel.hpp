// Threading and checked-arithmetic helpers shared by all kernels.
// Header-only, no Python headers.
#pragma once
#include <cstdint>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#ifdef _OPENMP
#include <omp.h>
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

// Threads OpenMP would use by default (honours OMP_NUM_THREADS).
inline int default_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
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
// any thread count.  Exceptions thrown by body never escape the parallel
// region: the first one is captured and rethrown on the calling thread.
template <class Body>
void parallel_blocks(std::int64_t n, int nthreads, std::int64_t work_per_index, Body&& body) {
    if (n <= 0) return;
    int nt = nthreads < 1 ? 1 : nthreads;
    if (nt > n) nt = static_cast<int>(n);
    const std::int64_t per = work_per_index > 0 ? work_per_index : 1;
    const bool small = n < (kParallelGrain + per - 1) / per;
    if (nt == 1 || small) {
        body(std::int64_t(0), n, 0);
        return;
    }
#ifdef _OPENMP
    std::exception_ptr error = nullptr;
    std::mutex error_mutex;
#pragma omp parallel num_threads(nt)
    {
        const int tid = omp_get_thread_num();
        const int cnt = omp_get_num_threads();
        const std::int64_t lo = n * tid / cnt;
        const std::int64_t hi = n * (tid + 1) / cnt;
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
