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
#include <algorithm>
#include <limits>
#include <vector>

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

// The combination rule shared by the linear methods (see the file comment).
struct Rule {
    std::int64_t K = 0;
    const double* c = nullptr;      // K weights of the Jacobian
    double c0 = 0;                  // weight of y0
    const double* d = nullptr;      // K weights of the truncation estimate, or nullptr
    double d0 = 0;
    const double* sigma = nullptr;  // K step multipliers (for the secant-slope statistic), or nullptr
    double eps = 0;                 // unit roundoff of the outputs, for the rounding estimate
    double tiny = 0;                // absolute resolution of one output value (smallest subnormal)
};

// Per-entry statistics written next to the Jacobian (4 doubles per entry n of the block):
//   [0] max_m |J[m, n]| over finite values
//   [1] max_{m,k} |Y[n, k, m]| over finite values (the size of f along the stencil)
//   [2] max_{m,k} |Y[n, k, m] - y0[m]| / (|sigma_k| h[n]) over finite values (secant slopes)
//   [3] number of m with J[m, n] not finite although y0[m] is finite
// Maxima and counts do not depend on the order of reduction, so the statistics
// are identical for any thread count.
constexpr int kStats = 4;

struct StatsAcc {
    std::int64_t B = 0;  // entries in the block
    int nt = 1;
    std::vector<double> part;  // nt * B * kStats
    StatsAcc(std::int64_t entries, int threads) : B(entries), nt(threads), part(static_cast<std::size_t>(threads) * entries * kStats, 0.0) {}
    double* slot(int tid, std::int64_t b) { return part.data() + (static_cast<std::int64_t>(tid) * B + b) * kStats; }
    void finish(double* out) const {
        for (std::int64_t b = 0; b < B; ++b) {
            double* o = out + b * kStats;
            for (int s = 0; s < kStats; ++s) o[s] = 0.0;
            for (int t = 0; t < nt; ++t) {
                const double* p = part.data() + (static_cast<std::int64_t>(t) * B + b) * kStats;
                for (int s = 0; s < 3; ++s) o[s] = std::max(o[s], p[s]);
                o[3] += p[3];
            }
        }
    }
};

template <class A>
inline bool finite_val(const A& v) {
    if constexpr (is_complex_v<A>) return std::isfinite(v.real()) && std::isfinite(v.imag());
    else return std::isfinite(v);
}

inline void upd_max(double& m, double v) {
    if (std::isfinite(v) && v > m) m = v;
}

// Y is the type of f's outputs; with Imag (complex step) the Jacobian is real.
template <class Y, bool Imag>
using jac_t = std::conditional_t<Imag, real_t<Y>, Y>;

// Writes J[moff[m] + noff[n]] (and err at the same offsets, if err is not
// null) for n in [n0, n1) and m in [0, M).  ys holds the block's stacked
// outputs, (n1 - n0) * K rows of M, C-contiguous; y0 is f(x) (M values).
// stats, if not null, receives kStats doubles per entry of the block.
// Each entry is computed independently, in a fixed order, so the result does
// not depend on the thread count.
template <class Y, bool Imag>
void combine(const Y* ys, const Y* y0, std::int64_t M, std::int64_t n0, std::int64_t n1, const double* h,
             const Rule& rule, const std::int64_t* moff, const std::int64_t* noff, jac_t<Y, Imag>* J,
             real_t<jac_t<Y, Imag>>* err, double* stats, int nthreads) {
    using A = std::conditional_t<Imag, double, acc_t<Y>>;
    using JT = jac_t<Y, Imag>;
    using ER = real_t<JT>;
    if (n1 < n0 || rule.K < 1) throw std::invalid_argument("fd::combine: bad range");
    const std::int64_t K = rule.K;
    const std::int64_t total = checked_mul(n1 - n0, M);
    double csum = std::abs(rule.c0);
    for (std::int64_t k = 0; k < K; ++k) csum += std::abs(rule.c[k]);
    auto val = [](const Y& v) -> A {
        if constexpr (Imag) return static_cast<double>(std::imag(v));
        else return static_cast<A>(v);
    };
    const int nt = fd_threads(checked_mul(total, K), nthreads);
    StatsAcc acc(stats ? n1 - n0 : 0, stats ? std::max(nt, 1) : 0);
    parallel_blocks(total, nt, K, [&](std::int64_t lo, std::int64_t hi, int tid) {
        for (std::int64_t t = lo; t < hi; ++t) {
            const std::int64_t b = t / M;  // entry within the block
            const std::int64_t m = t % M;
            const std::int64_t n = n0 + b;
            const Y* yk = ys + b * K * M + m;
            const double inv_h = 1.0 / h[n];
            A sum = A(0), trunc = A(0);
            double mag = 0.0;
            const A v0 = val(y0[m]);
            double* st = stats ? acc.slot(tid, b) : nullptr;
            for (std::int64_t k = 0; k < K; ++k) {
                const A v = val(yk[k * M]);
                sum += rule.c[k] * v;
                mag += std::abs(rule.c[k]) * std::abs(v);
                if (rule.d) trunc += rule.d[k] * v;
                if (st) {
                    upd_max(st[1], std::abs(v));
                    if (rule.sigma) upd_max(st[2], std::abs(v - v0) * inv_h / std::abs(rule.sigma[k]));
                }
            }
            if (rule.c0 != 0.0 || rule.d0 != 0.0) {
                sum += rule.c0 * v0;
                trunc += rule.d0 * v0;
                mag += std::abs(rule.c0) * std::abs(v0);
            }
            const A jv = sum * inv_h;
            const std::int64_t at = moff[m] + noff[n];
            J[at] = static_cast<JT>(jv);
            if (err) err[at] = static_cast<ER>((std::abs(trunc) + rule.eps * mag + rule.tiny * csum) * inv_h);
            if (st) {
                upd_max(st[0], std::abs(jv));
                if (!finite_val(jv) && finite_val(v0)) st[3] += 1.0;
            }
        }
    });
    if (stats) acc.finish(stats);
}

// Adaptive Richardson extrapolation.  Each entry n has 2L rows: for level l,
// x[n] + h[n] r^-l and x[n] - h[n] r^-l.  With D_l the central differences,
// the Neville tableau T[i][j] = T[i][j-1] + (T[i][j-1] - T[i-1][j-1]) / (r^2j - 1)
// removes the h^2, h^4, ... terms.  Every T[i][j] with j >= 1 is a candidate;
// its error estimate is |T[i][j] - T[i][j-1]| + |T[i][j] - T[i-1][j-1]| (the
// last correction, twice) plus the rounding eps * R[i][j], where R carries
// |y+| + |y-| + 2 tiny / eps through the tableau with absolute weights.  Per entry
// (m, n) the candidate with the smallest estimate wins (the first one on ties,
// in the order i = 1..L-1, j = 1..i); candidates with a non-finite value or
// estimate are skipped, so levels whose stencil leaves f's domain drop out.
constexpr int kMaxLevels = 12;

template <class Y>
void combine_richardson(const Y* ys, const Y* y0, std::int64_t M, std::int64_t n0, std::int64_t n1, const double* h,
                        int L, double ratio, double eps, double tiny, const std::int64_t* moff,
                        const std::int64_t* noff, Y* J, real_t<Y>* err, double* stats, int nthreads) {
    using A = acc_t<Y>;
    using ER = real_t<Y>;
    if (n1 < n0 || L < 2 || L > kMaxLevels || !(ratio > 1.0)) throw std::invalid_argument("fd::combine_richardson: bad arguments");
    const std::int64_t K = 2 * static_cast<std::int64_t>(L);
    const std::int64_t total = checked_mul(n1 - n0, M);
    double scale[kMaxLevels], a[kMaxLevels];
    for (int l = 0; l < L; ++l) scale[l] = std::pow(ratio, l) * 0.5;  // 1 / (2 h_l) = scale[l] / h
    for (int j = 1; j < L; ++j) a[j] = 1.0 / (std::pow(ratio, 2 * j) - 1.0);
    const double tiny_mag = eps > 0 ? tiny / eps : 0.0;  // eps * R then carries the tiny term too
    const int nt = fd_threads(checked_mul(total, K), nthreads);
    StatsAcc acc(stats ? n1 - n0 : 0, stats ? std::max(nt, 1) : 0);
    parallel_blocks(total, nt, K * 4, [&](std::int64_t lo, std::int64_t hi, int tid) {
        A T[kMaxLevels][kMaxLevels];
        double R[kMaxLevels][kMaxLevels];
        for (std::int64_t t = lo; t < hi; ++t) {
            const std::int64_t b = t / M;
            const std::int64_t m = t % M;
            const std::int64_t n = n0 + b;
            const Y* yk = ys + b * K * M + m;
            const double inv_h = 1.0 / h[n];
            const A v0 = static_cast<A>(y0[m]);
            double* st = stats ? acc.slot(tid, b) : nullptr;
            for (int l = 0; l < L; ++l) {
                const A yp = static_cast<A>(yk[(2 * l) * M]);
                const A ym = static_cast<A>(yk[(2 * l + 1) * M]);
                const double s = scale[l] * inv_h;
                T[l][0] = (yp - ym) * s;
                R[l][0] = (std::abs(yp) + std::abs(ym) + 2.0 * tiny_mag) * s;
                if (st) {
                    upd_max(st[1], std::abs(yp));
                    upd_max(st[1], std::abs(ym));
                    upd_max(st[2], std::abs(yp - v0) * 2.0 * s);
                    upd_max(st[2], std::abs(ym - v0) * 2.0 * s);
                }
            }
            A best = T[L - 1][0];
            double best_err = std::numeric_limits<double>::infinity();
            bool found = false;
            for (int i = 1; i < L; ++i) {
                for (int j = 1; j <= i; ++j) {
                    T[i][j] = T[i][j - 1] + (T[i][j - 1] - T[i - 1][j - 1]) * a[j];
                    R[i][j] = R[i][j - 1] * (1.0 + a[j]) + R[i - 1][j - 1] * a[j];
                    const double e = std::abs(T[i][j] - T[i][j - 1]) + std::abs(T[i][j] - T[i - 1][j - 1]) +
                                     eps * R[i][j];
                    if (finite_val(T[i][j]) && std::isfinite(e) && (!found || e < best_err)) {
                        best = T[i][j];
                        best_err = e;
                        found = true;
                    }
                }
            }
            if (!found) best_err = std::numeric_limits<double>::quiet_NaN();
            const std::int64_t at = moff[m] + noff[n];
            J[at] = static_cast<Y>(best);
            if (err) err[at] = static_cast<ER>(found ? best_err : std::numeric_limits<double>::infinity());
            if (st) {
                upd_max(st[0], std::abs(best));
                if (!found && finite_val(v0)) st[3] += 1.0;
            }
        }
    });
    if (stats) acc.finish(stats);
}

}  // namespace fd
}  // namespace tensorjac
