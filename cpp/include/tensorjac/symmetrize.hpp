// Exact symmetrization of stacked square matrices in place: a[k, i, j] = a[k, j, i] =
// (a[k, i, j] + a[k, j, i]) / 2.  Used for Hessians, which are symmetric in their two
// input groups: the result is symmetric bitwise (x + y == y + x in IEEE arithmetic).
//
// Header-only, templated on the element type, no Python headers.  Work is split into
// static tiles (one per matrix and pair of row blocks), each element written once, so
// the result does not depend on the thread count.
#pragma once
#include <algorithm>
#include <cstdint>

#include "tensorjac/parallel.hpp"

namespace tensorjac {

constexpr std::int64_t kSymTile = 64;

// a: m contiguous n x n matrices (C order).
template <class T>
void symmetrize(T* a, std::int64_t m, std::int64_t n, int nthreads) {
    if (m <= 0 || n < 2) return;
    const std::int64_t nb = (n + kSymTile - 1) / kSymTile;
    const std::int64_t pairs = nb * (nb + 1) / 2;  // tiles (bi <= bj)
    const std::int64_t tiles = checked_mul(m, pairs);
    const std::int64_t nn = checked_mul(n, n);
    const T half = T(0.5);
    parallel_blocks(tiles, nthreads, kSymTile * kSymTile, [&](std::int64_t lo, std::int64_t hi, int) {
        for (std::int64_t t = lo; t < hi; ++t) {
            const std::int64_t k = t / pairs;
            std::int64_t p = t % pairs;
            std::int64_t bi = 0;  // the p-th pair (bi, bj) with bi <= bj, row by row
            while (p >= nb - bi) {
                p -= nb - bi;
                ++bi;
            }
            const std::int64_t bj = bi + p;
            T* A = a + k * nn;
            const std::int64_t i0 = bi * kSymTile, i1 = std::min(n, i0 + kSymTile);
            const std::int64_t j0 = bj * kSymTile, j1 = std::min(n, j0 + kSymTile);
            for (std::int64_t i = i0; i < i1; ++i) {
                for (std::int64_t j = std::max(j0, i + 1); j < j1; ++j) {
                    const T v = (A[i * n + j] + A[j * n + i]) * half;
                    A[i * n + j] = v;
                    A[j * n + i] = v;
                }
            }
        }
    });
}

}  // namespace tensorjac
