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

// a: m contiguous n x n matrices (C order).  Each tile pair (bi, bj), bi < bj, transposes the lower
// block A[bj rows, bi cols] into a small local buffer (read row by row: contiguous), averages the upper
// block A[bi rows, bj cols] with it in place row by row (both contiguous), and writes the buffer back
// transposed: the transposed accesses stay inside a few KiB instead of striding across pages, and the
// upper block is touched once.  A diagonal tile (bi == bj) is averaged in place.  Every entry is
// (upper + lower) / 2, written to both.
template <class T>
void symmetrize(T* a, std::int64_t m, std::int64_t n, int nthreads) {
    if (m <= 0 || n < 2) return;
    const std::int64_t nb = (n + kSymTile - 1) / kSymTile;
    const std::int64_t pairs = nb * (nb + 1) / 2;  // tiles (bi <= bj)
    const std::int64_t tiles = checked_mul(m, pairs);
    const std::int64_t nn = checked_mul(n, n);
    const T half = T(0.5);
    parallel_blocks(tiles, nthreads, 2 * kSymTile * kSymTile, [&](std::int64_t lo, std::int64_t hi, int) {
        T tr[kSymTile * kSymTile];  // tr[r][c] = A[j0 + c][i0 + r]
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
            if (bi != bj) {
                for (std::int64_t c = 0; c < nj; ++c) {
                    const T* src = A + (j0 + c) * n + i0;
                    for (std::int64_t r = 0; r < ni; ++r) tr[r * kSymTile + c] = src[r];
                }
                for (std::int64_t r = 0; r < ni; ++r) {
                    T* up = A + (i0 + r) * n + j0;
                    T* lw = tr + r * kSymTile;
                    for (std::int64_t c = 0; c < nj; ++c) {
                        const T v = (up[c] + lw[c]) * half;
                        up[c] = v;
                        lw[c] = v;
                    }
                }
                for (std::int64_t c = 0; c < nj; ++c) {
                    T* dst = A + (j0 + c) * n + i0;
                    for (std::int64_t r = 0; r < ni; ++r) dst[r] = tr[r * kSymTile + c];
                }
            } else {
                for (std::int64_t r = 0; r < ni; ++r)
                    for (std::int64_t c = r + 1; c < nj; ++c) {
                        T* up = A + (i0 + r) * n + j0 + c;
                        T* lw = A + (j0 + c) * n + i0 + r;
                        const T v = (*up + *lw) * half;
                        *up = v;
                        *lw = v;
                    }
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
