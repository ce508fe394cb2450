// Sparse Jacobians: the stored entries of one term, enumerated over its letter grid.
// Header-only, no Python headers.
//
// A term  coef * prod F[letters]  times Kronecker deltas stores one entry per
// assignment of its letters.  Enumerated over the row-major grid of those
// letters (in the order that makes the coordinates sorted), entry g has
//
//   coordinate  sum_k g_k * mult[k]            (grid_index: one coordinate array)
//   value       F_0[g . s_0] * F_1[g . s_1] ... (grid_values: element strides per factor,
//                                                0 for a letter the factor does not have)
//
//   grid_index   writes the int32/int64 coordinates straight into their final array
//   grid_values  writes the values and reports whether they are all finite, in one pass
//   all_finite   the finiteness of an existing array (one read pass)
//
// Every entry is computed independently (products in factor order, no
// reduction over entries), so results are bitwise identical for any thread
// count; the finiteness flag is an OR over blocks.
#pragma once

#include <algorithm>
#include <atomic>
#include <complex>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "tensorjac/parallel.hpp"

namespace tensorjac {

namespace sparse_detail {

// Visits the flat positions [lo, hi) of the row-major grid `sizes` (nd >= 1,
// every size >= 1) as runs along its last dimension: run(pos, idx, len), with
// `pos` the run's first flat position and `idx` its multi-index.
template <class Run>
void for_runs(std::int64_t lo, std::int64_t hi, int nd, const std::int64_t* sizes, Run&& run) {
    if (lo >= hi) return;
    std::vector<std::int64_t> idx(static_cast<std::size_t>(nd));
    std::int64_t r = lo;
    for (int k = nd - 1; k >= 0; --k) {
        idx[k] = r % sizes[k];
        r /= sizes[k];
    }
    const std::int64_t last = sizes[nd - 1];
    std::int64_t pos = lo;
    while (pos < hi) {
        const std::int64_t len = std::min(last - idx[nd - 1], hi - pos);
        run(pos, idx.data(), len);
        pos += len;
        idx[nd - 1] += len;
        for (int k = nd - 1; k > 0 && idx[k] == sizes[k]; --k) {
            idx[k] = 0;
            ++idx[k - 1];
        }
    }
}

// 0 for a finite value, NaN for an infinity or a NaN (x - x; no -ffast-math).
template <class T>
struct Probe {
    using R = T;
    static R of(T v) { return v - v; }
};
template <class T>
struct Probe<std::complex<T>> {
    using R = T;
    static R of(std::complex<T> v) { return (v.real() - v.real()) + (v.imag() - v.imag()); }
};

// numpy's products: the plain formulas (no C99 Annex G recovery of infinities).
template <class T>
inline T mul(T a, T b) {
    return a * b;
}
template <class T>
inline std::complex<T> mul(std::complex<T> a, std::complex<T> b) {
    return {a.real() * b.real() - a.imag() * b.imag(), a.real() * b.imag() + a.imag() * b.real()};
}

// Sum of Probe over v[0..n) in 16 independent lanes (vectorised; each lane
// adds in order, so no -ffast-math is needed): 0 when every value is finite.
template <class T>
typename Probe<T>::R probe_sum(const T* v, std::int64_t n) {
    using R = typename Probe<T>::R;
    constexpr int kLanes = 16;
    R acc[kLanes] = {};
    std::int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes)
        for (int k = 0; k < kLanes; ++k) acc[k] += Probe<T>::of(v[i + k]);
    R s = 0;
    for (; i < n; ++i) s += Probe<T>::of(v[i]);
    for (int k = 0; k < kLanes; ++k) s += acc[k];
    return s;
}

}  // namespace sparse_detail

// out[g] = sum_k g_k * mults[k] for every g of the row-major grid `sizes`
// (nd >= 1 dimensions, each >= 1; out holds prod(sizes) entries).  The caller
// guarantees every coordinate fits in I.
template <class I>
void grid_index(I* out, int nd, const std::int64_t* sizes, const std::int64_t* mults, int nthreads) {
    std::int64_t n = 1;
    for (int k = 0; k < nd; ++k) n = checked_mul(n, sizes[k]);
    const std::int64_t m_last = mults[nd - 1];
    parallel_blocks(n, nthreads, 1, [&](std::int64_t a, std::int64_t b, int) {
        sparse_detail::for_runs(a, b, nd, sizes, [&](std::int64_t pos, const std::int64_t* idx, std::int64_t len) {
            std::int64_t base = 0;
            for (int k = 0; k < nd; ++k) base += idx[k] * mults[k];
            I* o = out + pos;
            const I v0 = static_cast<I>(base), m = static_cast<I>(m_last);
            for (std::int64_t i = 0; i < len; ++i) o[i] = static_cast<I>(v0 + static_cast<I>(i) * m);
        });
    });
}

// out[g] = F_0[g . strides_0] * F_1[g . strides_1] * ... (left to right) for
// every g of the row-major grid `sizes` (nd >= 1, each >= 1), nf >= 1 factors,
// strides[f * nd + k] in elements.  Returns whether every value written is
// finite.
template <class T>
bool grid_values(T* out, int nd, const std::int64_t* sizes, int nf, const T* const* facs,
                 const std::int64_t* strides, int nthreads) {
    using R = typename sparse_detail::Probe<T>::R;
    constexpr std::int64_t kChunk = 512;
    std::int64_t n = 1;
    for (int k = 0; k < nd; ++k) n = checked_mul(n, sizes[k]);
    std::atomic<bool> bad{false};
    parallel_blocks(n, nthreads, nf + 1, [&](std::int64_t a, std::int64_t b, int) {
        std::vector<const T*> p(static_cast<std::size_t>(nf));
        R acc = 0;
        sparse_detail::for_runs(a, b, nd, sizes, [&](std::int64_t pos, const std::int64_t* idx, std::int64_t len) {
            for (int f = 0; f < nf; ++f) {
                std::int64_t off = 0;
                for (int k = 0; k < nd; ++k) off += idx[k] * strides[f * nd + k];
                p[f] = facs[f] + off;
            }
            // in chunks that stay in L1 between the write and the finiteness probe
            for (std::int64_t c0 = 0; c0 < len; c0 += kChunk) {
                const std::int64_t c1 = std::min(len, c0 + kChunk);
                T* o = out + pos;
                if (nf == 1) {
                    const T* x = p[0];
                    const std::int64_t s = strides[nd - 1];
                    if (s == 1) {
                        for (std::int64_t i = c0; i < c1; ++i) o[i] = x[i];
                    } else {
                        for (std::int64_t i = c0; i < c1; ++i) o[i] = x[i * s];
                    }
                } else if (nf == 2) {
                    const T *x = p[0], *y = p[1];
                    const std::int64_t sx = strides[nd - 1], sy = strides[2 * nd - 1];
                    if (sx == 1 && sy == 1) {
                        for (std::int64_t i = c0; i < c1; ++i) o[i] = sparse_detail::mul(x[i], y[i]);
                    } else if (sx == 1 && sy == 0) {
                        const T c = y[0];
                        for (std::int64_t i = c0; i < c1; ++i) o[i] = sparse_detail::mul(x[i], c);
                    } else if (sx == 0 && sy == 1) {
                        const T c = x[0];
                        for (std::int64_t i = c0; i < c1; ++i) o[i] = sparse_detail::mul(c, y[i]);
                    } else {
                        for (std::int64_t i = c0; i < c1; ++i) o[i] = sparse_detail::mul(x[i * sx], y[i * sy]);
                    }
                } else {
                    for (std::int64_t i = c0; i < c1; ++i) {
                        T v = p[0][i * strides[nd - 1]];
                        for (int f = 1; f < nf; ++f) v = sparse_detail::mul(v, p[f][i * strides[f * nd + nd - 1]]);
                        o[i] = v;
                    }
                }
                acc += sparse_detail::probe_sum(o + c0, c1 - c0);
            }
        });
        if (acc != R(0)) bad.store(true, std::memory_order_relaxed);
    });
    return !bad.load();
}

// Whether every one of the n contiguous values is finite.
template <class T>
bool all_finite(const T* v, std::int64_t n, int nthreads) {
    using R = typename sparse_detail::Probe<T>::R;
    std::atomic<bool> bad{false};
    parallel_blocks(n, nthreads, 1, [&](std::int64_t a, std::int64_t b, int) {
        if (sparse_detail::probe_sum(v + a, b - a) != R(0)) bad.store(true, std::memory_order_relaxed);
    });
    return !bad.load();
}

}  // namespace tensorjac
