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

constexpr std::int64_t kSymTile = 32;

// a: m contiguous n x n matrices (C order).  Each tile pair (bi, bj), bi <= bj, is read into two
// small local buffers row by row (contiguous), averaged, and written back row by row: the
// transposed accesses stay inside a few KiB instead of striding across pages.
template <class T>
void symmetrize(T* a, std::int64_t m, std::int64_t n, int nthreads) {
    if (m <= 0 || n < 2) return;
    const std::int64_t nb = (n + kSymTile - 1) / kSymTile;
    const std::int64_t pairs = nb * (nb + 1) / 2;  // tiles (bi <= bj)
    const std::int64_t tiles = checked_mul(m, pairs);
    const std::int64_t nn = checked_mul(n, n);
    const T half = T(0.5);
    parallel_blocks(tiles, nthreads, 2 * kSymTile * kSymTile, [&](std::int64_t lo, std::int64_t hi, int) {
        T up[kSymTile * kSymTile];  // A[bi rows, bj cols]
        T lw[kSymTile * kSymTile];  // A[bj rows, bi cols]
        std::int64_t k = lo / pairs, p = lo % pairs, bi = 0;
        while (p >= nb - bi) {  // the p-th pair (bi, bj) with bi <= bj, row by row
            p -= nb - bi;
            ++bi;
        }
        std::int64_t bj = bi + p;
        for (std::int64_t t = lo; t < hi; ++t) {
            T* A = a + k * nn;
            const std::int64_t i0 = bi * kSymTile, ni = std::min(n, i0 + kSymTile) - i0;
            const std::int64_t j0 = bj * kSymTile, nj = std::min(n, j0 + kSymTile) - j0;
            for (std::int64_t r = 0; r < ni; ++r)
                for (std::int64_t c = 0; c < nj; ++c) up[r * kSymTile + c] = A[(i0 + r) * n + j0 + c];
            for (std::int64_t r = 0; r < nj; ++r)
                for (std::int64_t c = 0; c < ni; ++c) lw[r * kSymTile + c] = A[(j0 + r) * n + i0 + c];
            for (std::int64_t r = 0; r < ni; ++r)
                for (std::int64_t c = (bi == bj ? r + 1 : 0); c < nj; ++c) {
                    const T v = (up[r * kSymTile + c] + lw[c * kSymTile + r]) * half;
                    up[r * kSymTile + c] = v;
                    lw[c * kSymTile + r] = v;
                }
            if (bi == bj) {  // one tile: mirror its upper part into the lower (diagonal unchanged)
                for (std::int64_t r = 0; r < ni; ++r)
                    for (std::int64_t c = 0; c < r; ++c) up[r * kSymTile + c] = lw[r * kSymTile + c];
                for (std::int64_t r = 0; r < ni; ++r)
                    for (std::int64_t c = 0; c < nj; ++c) A[(i0 + r) * n + j0 + c] = up[r * kSymTile + c];
            } else {
                for (std::int64_t r = 0; r < ni; ++r)
                    for (std::int64_t c = 0; c < nj; ++c) A[(i0 + r) * n + j0 + c] = up[r * kSymTile + c];
                for (std::int64_t r = 0; r < nj; ++r)
                    for (std::int64_t c = 0; c < ni; ++c) A[(j0 + r) * n + i0 + c] = lw[r * kSymTile + c];
            }
            if (++bj == nb) {  // next pair
                if (++bi == nb) {
                    bi = 0;
                    ++k;
                }
                bj = bi;
            }
        }
    });
}

}  // namespace tensorjac
