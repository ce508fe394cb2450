// Finite-difference kernels: the perturbed-input stack and the combination of
// the stacked outputs into a Jacobian written directly in any layout.
//
// Every method is a linear rule over K perturbations per input entry n:
//   row (n, k) of the stack is x with x[n] += sigma[k] * h[n]
//   (or += i * sigma[k] * h[n] for the complex step), and
//   J[m, n] = (sum_k c[k] * Y[n, k, m] + c0 * y0[m]) / h[n]
// where Y[n, k, m] is output m of f on row (n, k) and y0 = f(x).  The
// complex step takes Im(Y) instead of Y.  Richardson extrapolation is such a
// rule too (its weights are computed once, in Python), and so is its error
// estimate, the difference to the previous extrapolation level
// (coefficients d, d0).  The error written is |truncation estimate| plus the
// rounding estimate eps * sum_k |c[k] * Y[n, k, m]| / h[n] (the caller adds
// heuristic terms that need whole columns).
//
// The result is addressed as J[moff[m] + noff[n]]: the per-output and
// per-input offsets encode the layout, so nothing is transposed afterwards.
//
// Header-only, templated on the element type, no Python headers.
#pragma once
#include <cmath>
#include <complex>
#include <cstdint>
#include <stdexcept>
#include <type_traits>

#include "tensorjac/parallel.hpp"

namespace tensorjac {
namespace fd {

template <class T>
struct real_of {
    using type = T;
};
template <class T>
struct real_of<std::complex<T>> {
    using type = T;
};
template <class T>
using real_t = typename real_of<T>::type;

// Below this many elements of work an FD kernel stays on the calling thread.
// The kernels are memory-bound copies that run between calls of a Python f;
// on small VMs waking the OpenMP team there costs milliseconds (a spinning
// barrier waits for a worker that shares the core), far more than it saves.
constexpr std::int64_t kFdParallelWork = std::int64_t(1) << 22;

inline int fd_threads(std::int64_t work, int nthreads) { return work < kFdParallelWork ? 1 : nthreads; }

template <class T>
inline constexpr bool is_complex_v = !std::is_same_v<T, real_t<T>>;

// Accumulate in double precision whatever the storage type.
template <class T>
using acc_t = std::conditional_t<is_complex_v<T>, std::complex<double>, double>;

// Rows (n - n0) * K + k, for n in [n0, n1) and k in [0, K), of the perturbed
// stack: out[row, :] = x, then out[row, n] += sigma[k] * h[n] (times i when
// imag).  x and out are C-contiguous; out has (n1 - n0) * K rows of N.
template <class T>
void build_stack(const T* x, std::int64_t N, const double* h, const double* sigma, std::int64_t K,
                 std::int64_t n0, std::int64_t n1, bool imag, T* out, int nthreads) {
    if (n0 < 0 || n1 < n0 || n1 > N || K < 1) throw std::invalid_argument("fd::build_stack: bad range");
    if (imag && !is_complex_v<T>) throw std::invalid_argument("fd::build_stack: imaginary step needs complex T");
    const std::int64_t rows = checked_mul(n1 - n0, K);
    const std::int64_t work = checked_mul(rows, N);  // the stack's size must be addressable
    parallel_blocks(rows, fd_threads(work, nthreads), N, [&](std::int64_t lo, std::int64_t hi, int) {
        for (std::int64_t r = lo; r < hi; ++r) {
            T* o = out + r * N;
            for (std::int64_t j = 0; j < N; ++j) o[j] = x[j];
            const std::int64_t n = n0 + r / K;
            const double step = sigma[r % K] * h[n];
            if constexpr (is_complex_v<T>) {
                using R = real_t<T>;
                if (imag) o[n] += T(R(0), static_cast<R>(step));
                else o[n] += T(static_cast<R>(step), R(0));
            } else {
                o[n] += static_cast<T>(step);
            }
        }
    });
}

// The combination rule shared by all methods (see the file comment).
struct Rule {
    std::int64_t K = 0;
    const double* c = nullptr;  // K weights of the Jacobian
    double c0 = 0;              // weight of y0
    const double* d = nullptr;  // K weights of the truncation estimate, or nullptr
    double d0 = 0;
    double eps = 0;                // unit roundoff of the outputs, for the rounding estimate
};

// Y is the type of f's outputs; with Imag (complex step) the Jacobian is real.
template <class Y, bool Imag>
using jac_t = std::conditional_t<Imag, real_t<Y>, Y>;

// Writes J[moff[m] + noff[n]] (and err at the same offsets, if err is not
// null) for n in [n0, n1) and m in [0, M).  ys holds the block's stacked
// outputs, (n1 - n0) * K rows of M, C-contiguous; y0 is f(x) (M values; only
// read when c0 or d0 is non-zero).  Each entry is computed independently, in
// a fixed order, so the result does not depend on the thread count.
template <class Y, bool Imag>
void combine(const Y* ys, const Y* y0, std::int64_t M, std::int64_t n0, std::int64_t n1, const double* h,
             const Rule& rule, const std::int64_t* moff, const std::int64_t* noff, jac_t<Y, Imag>* J,
             real_t<jac_t<Y, Imag>>* err, int nthreads) {
    using A = std::conditional_t<Imag, double, acc_t<Y>>;
    using JT = jac_t<Y, Imag>;
    using ER = real_t<JT>;
    if (n1 < n0 || rule.K < 1) throw std::invalid_argument("fd::combine: bad range");
    const std::int64_t K = rule.K;
    const std::int64_t total = checked_mul(n1 - n0, M);
    auto val = [](const Y& v) -> A {
        if constexpr (Imag) return static_cast<double>(std::imag(v));
        else return static_cast<A>(v);
    };
    parallel_blocks(total, fd_threads(checked_mul(total, K), nthreads), K, [&](std::int64_t lo, std::int64_t hi, int) {
        for (std::int64_t t = lo; t < hi; ++t) {
            const std::int64_t b = t / M;  // entry within the block
            const std::int64_t m = t % M;
            const std::int64_t n = n0 + b;
            const Y* yk = ys + b * K * M + m;
            const double inv_h = 1.0 / h[n];
            A sum = A(0), trunc = A(0);
            double mag = 0.0;
            for (std::int64_t k = 0; k < K; ++k) {
                const A v = val(yk[k * M]);
                sum += rule.c[k] * v;
                mag += std::abs(rule.c[k]) * std::abs(v);
                if (rule.d) trunc += rule.d[k] * v;
            }
            if (rule.c0 != 0.0 || rule.d0 != 0.0) {
                const A v0 = val(y0[m]);
                sum += rule.c0 * v0;
                trunc += rule.d0 * v0;
                mag += std::abs(rule.c0) * std::abs(v0);
            }
            const A jv = sum * inv_h;
            const std::int64_t at = moff[m] + noff[n];
            J[at] = static_cast<JT>(jv);
            if (err) {
                err[at] = static_cast<ER>((std::abs(trunc) + rule.eps * mag) * inv_h);
            }
        }
    });
}

}  // namespace fd
}  // namespace tensorjac
