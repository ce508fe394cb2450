// Structured kernels for the VJPs and JVPs of the Kronecker product, and the
// batched elementwise product used by elementwise VJPs/JVPs.
//
// With K = kron(A, B), K[(i,k),(j,l)] = A[i,j] B[k,l] for A (m x n), B (p x q),
// a batch of cotangents G viewed as (nb, m, p, n, q) gives
//     dA[b,i,j] = sum_{k,l} G[b,i,k,j,l] B[k,l]      (kron_vjp_a)
//     dB[b,k,l] = sum_{i,j} G[b,i,k,j,l] A[i,j]      (kron_vjp_b)
// and a batch of tangents gives the batched Kronecker product (kron_batched).
// These are memory-bound: G is streamed once, in storage order.
//
// Reproducibility: every output element is reduced by exactly one thread, in
// an order that depends only on the shapes (never on the thread count), so
// results are bitwise identical for any number of threads.
//
// Header-only, templated on the element type, no Python headers.  All arrays
// are C-contiguous; sizes are element counts.
#pragma once
#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <stdexcept>

#include "tensorjac/parallel.hpp"

namespace tensorjac {

namespace detail {

// sum_t a[t] * b[t] with four interleaved partial sums combined as
// (s0 + s1) + (s2 + s3) + tail: a fixed order the compiler may vectorise
// without reassociating anything.
template <class T>
inline T dot_fixed(const T* a, const T* b, std::int64_t n) {
    T s0{}, s1{}, s2{}, s3{};
    std::int64_t t = 0;
    for (; t + 4 <= n; t += 4) {
        s0 += a[t] * b[t];
        s1 += a[t + 1] * b[t + 1];
        s2 += a[t + 2] * b[t + 2];
        s3 += a[t + 3] * b[t + 3];
    }
    T tail{};
    for (; t < n; ++t) tail += a[t] * b[t];
    return ((s0 + s1) + (s2 + s3)) + tail;
}

inline std::int64_t prod(std::initializer_list<std::int64_t> xs) {
    std::int64_t p = 1;
    for (auto x : xs) {
        if (x < 0) throw std::invalid_argument("tensorjac: negative extent");
        p = checked_mul(p, x);
    }
    return p;
}

}  // namespace detail

// out[b,i,j] = sum_k sum_l G[b,i,k,j,l] * B[k,l]
// G: (nb, m, p, n, q), B: (p, q), out: (nb, m, n).
// Parallel over the flat output index (b,i,j); within a (b,i) row the k loop is
// outermost so G's row block is read once, front to back.
template <class T>
void kron_vjp_a(const T* G, std::int64_t nb, std::int64_t m, std::int64_t p, std::int64_t n, std::int64_t q,
                const T* B, T* out, int nthreads) {
    const std::int64_t rows = detail::prod({nb, m});
    const std::int64_t total = checked_mul(rows, n);
    const std::int64_t row_len = detail::prod({p, n, q});
    (void)checked_mul(rows, row_len);  // G's size: every offset below is smaller
    // Pieces are whole output rows (b,i) where a block allows, so G's row block is streamed in order.
    parallel_blocks_aligned(total, nthreads, checked_mul(p, q), n, [&](std::int64_t lo, std::int64_t hi, int) {
        std::int64_t e = lo;
        while (e < hi) {
            const std::int64_t r = e / n;
            const std::int64_t j0 = e - r * n;
            const std::int64_t j1 = std::min(n, j0 + (hi - e));
            T* o = out + r * n;
            for (std::int64_t j = j0; j < j1; ++j) o[j] = T(0);
            const T* g = G + r * row_len;
            for (std::int64_t k = 0; k < p; ++k) {
                poll_cancel();  // a row may be long
                const T* gk = g + k * n * q;
                const T* bk = B + k * q;
                for (std::int64_t j = j0; j < j1; ++j) o[j] += detail::dot_fixed(gk + j * q, bk, q);
            }
            e += j1 - j0;
        }
    });
}

// out[b,k,l] = sum_i sum_j A[i,j] * G[b,i,k,j,l]
// G: (nb, m, p, n, q), A: (m, n), out: (nb, p, q).
// Parallel over output rows (b,k).  For each batch entry the loops run
// i, k, j, l, so G[b] is read front to back while the rows of out[b] being
// accumulated stay in cache; every output element still sums over (i, j) in
// lexicographic order, whatever the split.  Four j-terms are added per pass
// over a row, left to right, to halve the load/store traffic on out.
template <class T>
void kron_vjp_b(const T* G, std::int64_t nb, std::int64_t m, std::int64_t p, std::int64_t n, std::int64_t q,
                const T* A, T* out, int nthreads) {
    const std::int64_t rows = detail::prod({nb, p});
    const std::int64_t nq = detail::prod({n, q});
    const std::int64_t batch_len = detail::prod({m, p, n, q});
    (void)checked_mul(nb, batch_len);  // G's size: every offset below is smaller
    // Pieces are whole batch entries where a block allows, so G[b] is streamed in order.
    parallel_blocks_aligned(rows, nthreads, checked_mul(checked_mul(m, n), q), p, [&](std::int64_t lo, std::int64_t hi,
                                                                                      int) {
        std::int64_t r = lo;
        while (r < hi) {
            const std::int64_t b = r / p;
            const std::int64_t k0 = r - b * p;
            const std::int64_t k1 = std::min(p, k0 + (hi - r));
            T* ob = out + b * p * q;
            for (std::int64_t t = k0 * q; t < k1 * q; ++t) ob[t] = T(0);
            const T* gb = G + b * batch_len;
            for (std::int64_t i = 0; i < m; ++i) {
                poll_cancel();  // a batch entry may be long
                const T* ai = A + i * n;
                for (std::int64_t k = k0; k < k1; ++k) {
                    const T* g = gb + (i * p + k) * nq;
                    T* o = ob + k * q;
                    std::int64_t j = 0;
                    for (; j + 4 <= n; j += 4) {
                        const T a0 = ai[j], a1 = ai[j + 1], a2 = ai[j + 2], a3 = ai[j + 3];
                        const T* g0 = g + j * q;
                        const T* g1 = g0 + q;
                        const T* g2 = g1 + q;
                        const T* g3 = g2 + q;
                        for (std::int64_t l = 0; l < q; ++l)
                            o[l] = (((o[l] + a0 * g0[l]) + a1 * g1[l]) + a2 * g2[l]) + a3 * g3[l];
                    }
                    for (; j < n; ++j) {
                        const T a = ai[j];
                        const T* gj = g + j * q;
                        for (std::int64_t l = 0; l < q; ++l) o[l] += a * gj[l];
                    }
                }
            }
            r += k1 - k0;
        }
    });
}

// out[b, (i,k), (j,l)] = X[b,i,j] * Y[b,k,l]: a batch of Kronecker products.
// X: (nbx, m, n), Y: (nby, p, q) with nbx, nby each 1 (broadcast) or nb;
// out: (nb, m*p, n*q).  Parallel over output rows (b, i, k).
template <class T>
void kron_batched(const T* X, std::int64_t nbx, std::int64_t m, std::int64_t n, const T* Y, std::int64_t nby,
                  std::int64_t p, std::int64_t q, std::int64_t nb, T* out, int nthreads) {
    if ((nbx != 1 && nbx != nb) || (nby != 1 && nby != nb))
        throw std::invalid_argument("kron_batched: batch sizes must be 1 or nb");
    const std::int64_t rows = detail::prod({nb, m, p});
    const std::int64_t row_len = detail::prod({n, q});
    (void)checked_mul(rows, row_len);  // the output's size: every offset below is smaller
    const std::int64_t xbs = nbx == 1 ? 0 : checked_mul(m, n);
    const std::int64_t ybs = nby == 1 ? 0 : checked_mul(p, q);
    parallel_blocks(rows, nthreads, row_len, [&](std::int64_t lo, std::int64_t hi, int) {
        for (std::int64_t r = lo; r < hi; ++r) {
            const std::int64_t bi = r / p, k = r - bi * p;
            const std::int64_t b = bi / m, i = bi - b * m;
            const T* x = X + b * xbs + i * n;
            const T* y = Y + b * ybs + k * q;
            T* o = out + r * row_len;
            for (std::int64_t j = 0; j < n; ++j) {
                const T s = x[j];
                T* oj = o + j * q;
                for (std::int64_t l = 0; l < q; ++l) oj[l] = s * y[l];
            }
        }
    });
}

// out[b, t] = G[b, t] * d[t]: a batch of rows scaled elementwise by one vector
// (the VJP and JVP of every elementwise rule).  G, out: (nb, N); d: (N,).
template <class T>
void mul_rows(const T* G, std::int64_t nb, std::int64_t N, const T* d, T* out, int nthreads) {
    const std::int64_t total = detail::prod({nb, N});
    parallel_blocks(total, nthreads, 1, [&](std::int64_t lo, std::int64_t hi, int) {
        std::int64_t e = lo;
        while (e < hi) {
            const std::int64_t r = e / N;
            const std::int64_t t0 = e - r * N;
            const std::int64_t t1 = std::min(N, t0 + (hi - e));
            const T* g = G + r * N;
            T* o = out + r * N;
            for (std::int64_t t = t0; t < t1; ++t) o[t] = g[t] * d[t];
            e += t1 - t0;
        }
    });
}

}  // namespace tensorjac
