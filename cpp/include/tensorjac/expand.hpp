// The "expand" kernel: writes a sum of structured terms into a strided array.
//
// A term is   coef * F1[vars] * F2[vars] * ...   over a set of index variables.
// Every output axis (or sub-axis of a fused axis) is bound to one variable;
// an index variable bound to several axes is a Kronecker delta between them.
// Each variable therefore has one stride into the output buffer (the sum of
// the strides of the axes it is bound to) and one stride into each factor.
// Layouts are nothing but these strides, so any layout is written directly,
// without a full-size temporary.
//
// How a term is evaluated (the arithmetic is fixed by the structure alone,
// never by the thread count or by where a thread's block starts):
//   * its loop nest orders the variables by decreasing output stride (the
//     output is streamed), drops size-1 variables and merges neighbours whose
//     strides allow it; the innermost variable is the "row";
//   * factors constant along the row ("outer") give a per-row scalar
//     s = ((coef * o1) * o2) * ...  (factor order); factors varying along it
//     ("inner") give a row r[t] = (i1[t] * i2[t]) * ...  (factor order; a
//     single inner factor is read in place, several are multiplied into a
//     small per-thread row buffer, reused while the row does not change);
//   * an element is s * r[t] (just s for a term without inner factors).
//
// Fused terms.  Consecutive terms over the same output positions (the same
// variable sizes and output strides, up to the order of the variables) are
// evaluated in one pass over the output: per row, the terms' values are
// summed left to right in registers and stored once.  Each element then gets
// exactly the sum the term-by-term passes would give, ((t1 + t2) + t3) + ...
// (in accumulate mode ((out + t1) + t2) + ...), so fusion never changes a
// result, it only saves passes over memory.  Up to kMaxFused terms with
// kMaxPassFactors factors in all share a pass; longer runs take several.
// So: put like terms next to each other.
//
// Tiles.  Rows are written by short counted loops over __restrict__ pointers
// that the compiler vectorises (SSE2 at the x86-64 baseline).  On x86-64 with
// GCC or Clang the float/double row kernels are also compiled for AVX2
// (without FMA: the same IEEE operations, so the same bits) and chosen at run
// time when the CPU has it (expand_simd(); expand_force_baseline for tests).
// The rows along the next loop variable form a panel, and (where the row
// factors do not move differently) consecutive panels along the variable
// after it form a tile: one kernel call writes a whole tile from scalars
// computed for its rows in one go, so short rows (n = 16..32) carry no
// odometer or buffer bookkeeping.  A strided inner factor that is small next
// to the output is transposed once per call into a contiguous copy, so rows
// read it in place instead of gathering it per row.
//
// Non-finite factors.  With expand(..., &finite) the kernel reports whether
// every factor value it reads is finite: large factors read in place (e.g.
// a dense Jacobian copied from one factor) are checked by the row kernels as
// they read them, at no extra pass over memory; the others before the pass.
//
// Factors must not overlap the output.  Header-only, templated on the element
// type, no Python headers.
#pragma once
#include <algorithm>
#include <atomic>
#include <complex>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "tensorjac/parallel.hpp"

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__)) && \
    !defined(__AVX2__) && !defined(TJ_NO_SIMD_DISPATCH)
#define TJ_EXPAND_AVX2 1
#define TJ_TARGET_AVX2 __attribute__((target("avx2")))
#endif
#if defined(__GNUC__) || defined(__clang__)
#define TJ_INLINE inline __attribute__((always_inline))
#define TJ_RESTRICT __restrict__
#else
#define TJ_INLINE inline
#define TJ_RESTRICT
#endif
#if defined(__GNUC__) && !defined(__clang__)
#define TJ_LAMBDA_INLINE __attribute__((always_inline))
#else
#define TJ_LAMBDA_INLINE
#endif

namespace tensorjac {

template <class T>
struct Factor {
    const T* data = nullptr;
    std::vector<std::int64_t> stride;  // element stride per term variable (0: independent)
};

template <class T>
struct Term {
    T coef{1};
    std::vector<std::int64_t> size;        // extent of each variable
    std::vector<std::int64_t> out_stride;  // element stride into the output per variable
    std::vector<Factor<T>> factors;
};

// Limits of one term: index variables and factors (letters a-z suffice for
// every op; the bindings check these before calling).
constexpr int kMaxVars = 32;
constexpr int kMaxFactors = 8;
// Limits of one fused pass: terms, and factors of all its terms together.
constexpr int kMaxFused = 8;
constexpr int kMaxPassFactors = 16;

// The instruction set the float/double kernels use: the best the CPU has
// (AVX2 where compiled in) unless the baseline is forced, e.g. by a test
// checking that both give the same bits.
enum class Simd { baseline, avx2 };

namespace detail {
inline std::atomic<bool>& force_baseline_flag() {
    static std::atomic<bool> f{false};
    return f;
}
inline bool cpu_has_avx2() {
#ifdef TJ_EXPAND_AVX2
    static const bool ok = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") != 0;
    }();
    return ok;
#else
    return false;
#endif
}
}  // namespace detail

inline void expand_force_baseline(bool on) { detail::force_baseline_flag().store(on, std::memory_order_relaxed); }
inline Simd expand_simd() {
    return (!detail::force_baseline_flag().load(std::memory_order_relaxed) && detail::cpu_has_avx2()) ? Simd::avx2
                                                                                                      : Simd::baseline;
}

namespace detail {

// A fixed-capacity vector on the stack: the kernel's bookkeeping makes no heap
// allocations, which matters for tiny Jacobians where call overhead dominates.
// Only the first size() elements are ever initialised, read or copied.
template <class T, int N>
class Fixed {
public:
    Fixed() {}
    Fixed(int n, T v) { resize(n, v); }
    Fixed(const Fixed& o) : n_(o.n_) {
        for (int i = 0; i < n_; ++i) a_[i] = o.a_[i];
    }
    Fixed& operator=(const Fixed& o) {
        n_ = o.n_;
        for (int i = 0; i < n_; ++i) a_[i] = o.a_[i];
        return *this;
    }
    void push_back(const T& v) {
        if (n_ == N) throw std::length_error("expand: too many index variables or factors");
        a_[n_++] = v;
    }
    void resize(int n, const T& v) {
        if (n > N) throw std::length_error("expand: too many index variables or factors");
        for (int i = n_; i < n; ++i) a_[i] = v;
        n_ = n;
    }
    int size() const { return n_; }
    bool empty() const { return n_ == 0; }
    T& operator[](int i) { return a_[i]; }
    const T& operator[](int i) const { return a_[i]; }
    T& back() { return a_[n_ - 1]; }
    T* data() { return a_; }
    const T* data() const { return a_; }
    T* begin() { return a_; }
    T* end() { return a_ + n_; }
    const T* begin() const { return a_; }
    const T* end() const { return a_ + n_; }

private:
    T a_[N];
    int n_ = 0;
};

using VarInts = Fixed<std::int64_t, kMaxVars>;
using i64 = std::int64_t;

// Longest row segment whose inner-factor product is cached in a per-thread
// buffer; longer rows are handled in segments of this length.
constexpr i64 kRowBuffer = 4096;
// Most rows of one panel (its per-row scalars live in a per-thread array).
constexpr i64 kPanel = 512;
// A strided inner factor is transposed into a contiguous copy when the copy
// has at most this many elements and at most 1/kCopyRatio of the output's.
constexpr i64 kCopyMax = i64(1) << 16;
constexpr i64 kCopyRatio = 8;
// Factors read in place with at least this many elements are checked for
// non-finite values by the row kernels, as they read them.
constexpr i64 kScanInRows = 4096;
// A transposed block: up to kTransRows rows of kTransCols columns (see RowPlan::transposed).
constexpr i64 kTransRows = 32;
constexpr i64 kTransCols = 32;

// c == a * b, false (not undefined behaviour) when a * b overflows.
inline bool is_product(i64 c, i64 a, i64 b) { return !mul_overflows(a, b) && c == a * b; }

// Checks one term's shape (before anything is written) and returns its extent.
template <class T>
i64 check_term(const Term<T>& term) {
    const std::size_t V = term.size.size();
    if (term.out_stride.size() != V) throw std::invalid_argument("expand: out_stride/size length mismatch");
    for (const auto& f : term.factors)
        if (f.stride.size() != V) throw std::invalid_argument("expand: factor stride length mismatch");
    if (V > static_cast<std::size_t>(kMaxVars) || term.factors.size() > static_cast<std::size_t>(kMaxFactors))
        throw std::length_error("expand: too many index variables or factors in a term");
    i64 total = 1;
    for (std::size_t v = 0; v < V; ++v) {
        if (term.size[v] < 0) throw std::invalid_argument("expand: negative variable size");
        total = checked_mul(total, term.size[v]);
    }
    if (total == 0) return 0;
    for (std::size_t v = 0; v < V; ++v)
        if (term.size[v] > 1 && term.out_stride[v] == 0)
            throw std::invalid_argument("expand: a variable has zero output stride (writes would collide)");
    return total;
}

inline std::uint64_t mag(i64 x) { return x < 0 ? 0 - static_cast<std::uint64_t>(x) : static_cast<std::uint64_t>(x); }

// The variables of a term that do not have size 1, by decreasing |output
// stride| (ties keep their order).
template <class T>
Fixed<int, kMaxVars> loop_order(const Term<T>& term) {
    Fixed<int, kMaxVars> order;
    for (std::size_t v = 0; v < term.size.size(); ++v)
        if (term.size[v] != 1) order.push_back(static_cast<int>(v));
    for (int a = 1; a < order.size(); ++a)  // insertion sort: stable, no allocation, a few elements
        for (int b = a; b > 0 && mag(term.out_stride[order[b - 1]]) < mag(term.out_stride[order[b]]); --b)
            std::swap(order[b - 1], order[b]);
    return order;
}

// Can `b` share a pass with `a` (same output positions, up to variable order)?
// Then map[k] is b's variable looping like a's order[k].
template <class T>
bool same_positions(const Term<T>& a, const Fixed<int, kMaxVars>& oa, const Term<T>& b,
                    Fixed<int, kMaxVars>& map) {
    const Fixed<int, kMaxVars> ob = loop_order(b);
    if (ob.size() != oa.size()) return false;
    map = Fixed<int, kMaxVars>();
    for (int k = 0; k < oa.size(); ++k) {
        const int va = oa[k];
        // a's variables with the same |stride| would make the match ambiguous
        for (int j = 0; j < oa.size(); ++j)
            if (j != k && mag(a.out_stride[oa[j]]) == mag(a.out_stride[va])) return false;
        int found = -1;
        for (int j = 0; j < ob.size(); ++j)
            if (b.out_stride[ob[j]] == a.out_stride[va] && b.size[ob[j]] == a.size[va]) found = ob[j];
        if (found < 0) return false;
        map.push_back(found);
    }
    return true;
}

// One pass over the output: the normalised loop nest shared by a run of
// terms (one, or several fused) and their factors, flattened.
template <class T>
struct Pass {
    VarInts size, ostride;  // outermost first
    i64 total = 1;
    int nterms = 0;
    Fixed<T, kMaxFused> coef;
    Fixed<int, kMaxFused + 1> fbegin;           // term g owns factors [fbegin[g], fbegin[g + 1])
    Fixed<VarInts, kMaxPassFactors> fstride;    // [factor][var]
    Fixed<const T*, kMaxPassFactors> fdata;
};

// Builds the pass of terms[first, last): every term's variables in the loop
// order of the first, neighbours merged where the output and every factor allow.
template <class T>
Pass<T> make_pass(const std::vector<Term<T>>& terms, std::size_t first, std::size_t last,
                  const Fixed<int, kMaxVars>& order) {
    Pass<T> p;
    // fs[f][k]: stride of factor f along the k-th loop variable (before merging)
    Fixed<VarInts, kMaxPassFactors> fs;
    p.fbegin.push_back(0);
    for (std::size_t t = first; t < last; ++t) {
        const Term<T>& term = terms[t];
        Fixed<int, kMaxVars> map;
        if (t == first) map = order;
        else if (!same_positions(terms[first], order, term, map))
            throw std::logic_error("expand: terms of one pass do not share their positions");
        p.coef.push_back(term.coef);
        for (const auto& f : term.factors) {
            VarInts s;
            for (int k = 0; k < map.size(); ++k) s.push_back(f.stride[map[k]]);
            fs.push_back(s);
            p.fdata.push_back(f.data);
        }
        p.fbegin.push_back(fs.size());
        ++p.nterms;
    }
    const Term<T>& t0 = terms[first];
    const int F = fs.size();
    p.fstride.resize(F, VarInts{});
    for (int k = 0; k < order.size(); ++k) {
        const int v = order[k];
        const i64 sz = t0.size[v];
        p.total = checked_mul(p.total, sz);
        bool merge = !p.size.empty() && is_product(p.ostride.back(), sz, t0.out_stride[v]);
        for (int f = 0; merge && f < F; ++f) merge = is_product(p.fstride[f].back(), sz, fs[f][k]);
        if (merge) {
            p.size.back() *= sz;
            p.ostride.back() = t0.out_stride[v];
            for (int f = 0; f < F; ++f) p.fstride[f].back() = fs[f][k];
        } else {
            p.size.push_back(sz);
            p.ostride.push_back(t0.out_stride[v]);
            for (int f = 0; f < F; ++f) p.fstride[f].push_back(fs[f][k]);
        }
    }
    return p;
}

// How a term's row values are read.
enum class Src : unsigned char {
    constant,  // no inner factor: the row is the scalar alone
    direct,    // one inner factor of stride 1: read in place
    buffer     // the product of the inner factors, built in a row buffer
};

// Per-term row plan of a pass (fixed by the structure).
template <class T>
struct RowPlan {
    Fixed<Src, kMaxFused> src;
    Fixed<int, kMaxPassFactors> inner, outer;  // factor indices, grouped by term
    Fixed<int, kMaxFused + 1> ibegin, obegin;  // term g: inner[ibegin[g]..], outer[obegin[g]..]
    Fixed<int, kMaxFused> bslot;               // row-buffer slot of a buffered term
    int nbuf = 0;                              // buffered terms
    bool ones = false;       // a constant term in a multi-term pass reads a row of ones
    bool buf_moves = false;  // a row buffer changes along the panel variable (rows then go one by one)
    bool tiles = false;      // several panels (along the tile variable) can go in one call
    bool flat = false;       // ... and their scalars do not depend on the tile variable
    // One term with a big row factor that is strided along the row but
    // (nearly) contiguous along the panel variable -- a transposed copy, e.g.
    // a dense Jacobian in the gradient layout: panels of whole rows are
    // written in column blocks, from the product of the row factors over the
    // block read in that factor's own order.
    bool transposed = false;
    i64 seg = 0;             // row segment length (rows longer than a buffer go in segments)
    Fixed<bool, kMaxPassFactors> kscan;  // a factor the row kernels check for non-finite values as they read it
};

// Bit 63 set when v is not finite (inf or nan); OR-able, branch-free, vectorisable.
template <class T>
TJ_INLINE std::uint64_t nonfinite_bits(T v) {
    if constexpr (std::is_same_v<T, double>) {
        std::uint64_t u;
        std::memcpy(&u, &v, sizeof u);
        return (u & 0x7ff0000000000000ull) + 0x0010000000000000ull;
    } else if constexpr (std::is_same_v<T, float>) {
        std::uint32_t u;
        std::memcpy(&u, &v, sizeof u);
        return static_cast<std::uint64_t>((u & 0x7f800000u) + 0x00800000u) << 32;
    } else {
        return nonfinite_bits(v.real()) | nonfinite_bits(v.imag());
    }
}

// Contiguous copies of small strided inner factors (see kCopyMax), owned by
// the caller for the duration of the pass.
template <class T>
void transpose_small_factors(Pass<T>& p, std::vector<std::vector<T>>& copies) {
    const int V = p.size.size();
    if (V == 0) return;
    const int last = V - 1;
    for (int g = 0; g < p.nterms; ++g) {
        int nin = 0, fin = -1;
        for (int f = p.fbegin[g]; f < p.fbegin[g + 1]; ++f)
            if (p.fstride[f][last] != 0) ++nin, fin = f;
        if (nin != 1 || p.fstride[fin][last] == 1) continue;
        // the copy: every variable the factor depends on, C order in loop order (row innermost)
        i64 n = 1;
        for (int v = 0; v < V; ++v)
            if (p.fstride[fin][v] != 0) n = checked_mul(n, p.size[v]);
        if (n > kCopyMax || checked_mul(n, kCopyRatio) > p.total) continue;
        std::vector<T> c(static_cast<std::size_t>(n));
        VarInts cs(V, 0);
        i64 s = 1;
        for (int v = last; v >= 0; --v)
            if (p.fstride[fin][v] != 0) {
                cs[v] = s;
                s *= p.size[v];
            }
        // walk the copy in its own order
        VarInts idx(V, 0);
        const T* src = p.fdata[fin];
        i64 soff = 0;
        for (i64 e = 0; e < n; ++e) {
            c[static_cast<std::size_t>(e)] = src[soff];
            for (int v = last; v >= 0; --v) {
                if (p.fstride[fin][v] == 0) continue;
                soff += p.fstride[fin][v];
                if (++idx[v] < p.size[v]) break;
                soff -= p.fstride[fin][v] * p.size[v];
                idx[v] = 0;
            }
        }
        p.fstride[fin] = cs;
        copies.push_back(std::move(c));
        p.fdata[fin] = copies.back().data();
    }
}

template <class T>
RowPlan<T> plan_rows(const Pass<T>& p) {
    RowPlan<T> rp;
    const int V = p.size.size();
    const int last = V - 1, pv = V - 2, qv = V - 3;
    rp.ibegin.push_back(0);
    rp.obegin.push_back(0);
    bool buf_moves_q = false;
    for (int g = 0; g < p.nterms; ++g) {
        int nin = 0;
        bool moves = false, moves_q = false, unit = true;
        for (int f = p.fbegin[g]; f < p.fbegin[g + 1]; ++f) {
            if (V > 0 && p.fstride[f][last] != 0) {
                rp.inner.push_back(f);
                ++nin;
                unit = p.fstride[f][last] == 1;
                moves |= pv >= 0 && p.fstride[f][pv] != 0;
                moves_q |= qv >= 0 && p.fstride[f][qv] != 0;
            } else {
                rp.outer.push_back(f);
            }
        }
        rp.ibegin.push_back(rp.inner.size());
        rp.obegin.push_back(rp.outer.size());
        const Src s = nin == 0 ? Src::constant : (nin == 1 && unit) ? Src::direct : Src::buffer;
        rp.src.push_back(s);
        rp.bslot.push_back(s == Src::buffer ? rp.nbuf : -1);
        rp.nbuf += s == Src::buffer;
        rp.buf_moves |= s == Src::buffer && moves;
        buf_moves_q |= s == Src::buffer && moves_q;
        rp.ones |= s == Src::constant && p.nterms > 1;
    }
    const i64 row = V > 0 ? p.size[last] : 1;
    if (p.nterms == 1 && rp.src[0] == Src::buffer && pv >= 0 && row > 1 && p.size[pv] > 1)
        for (int q = 0; q < rp.ibegin[1]; ++q) {
            const int f = rp.inner[q];
            i64 n = 1;
            for (int v = 0; v < V; ++v)
                if (p.fstride[f][v] != 0) n *= p.size[v];
            rp.transposed |= n >= kScanInRows && p.fstride[f][pv] != 0 &&
                             mag(p.fstride[f][pv]) < mag(p.fstride[f][last]);
        }
    rp.seg = rp.transposed ? std::min(row, kTransCols)
                           : (rp.nbuf > 0 || rp.ones) ? std::min(row, kRowBuffer) : row;
    rp.tiles = qv >= 0 && !rp.buf_moves && !buf_moves_q && row <= rp.seg && p.size[pv] <= kPanel &&
               p.nterms <= 4 && !rp.transposed;
    rp.flat = rp.tiles;
    for (int f = 0; rp.flat && f < static_cast<int>(p.fdata.size()); ++f)
        rp.flat = p.fstride[f][last] != 0 || p.fstride[f][qv] == 0;
    // A factor read in place whose elements are about as many as the pass's
    // positions (read once or twice) is checked by the row kernels as they
    // read it; the others are scanned before the pass (see factor_bits).
    rp.kscan.resize(static_cast<int>(p.fdata.size()), false);
    for (int g = 0; g < p.nterms; ++g)
        if (rp.src[g] == Src::direct) {
            const int f = rp.inner[rp.ibegin[g]];
            i64 n = 1;
            for (int v = 0; v < V; ++v)
                if (p.fstride[f][v] != 0) n *= p.size[v];
            rp.kscan[f] = n >= kScanInRows && n >= p.total - n;  // n <= total: no overflow
        }
    if (rp.transposed)  // the row factors are checked as their blocks are read
        for (int q = 0; q < rp.ibegin[1]; ++q) rp.kscan[rp.inner[q]] = true;
    return rp;
}

// ----------------------------------------------------------------------------- row kernels

// A tile of Q x R rows of n elements.  Row (q, r) starts at out + q * oq + r * orr,
// its element t at + t * os (Contig: os == 1).  Term g's value there is
// s * p[t] with s = sv[g * svg + q * svq + r] and p = src[g] + q * pq[g] + r * pr[g].
// The terms are summed left to right; Acc adds the sum to the output, also left to right.
template <class T>
struct Tile {
    T* out;
    i64 os, oq, orr, n, Q, R;
    const T* sv;
    i64 svg, svq;
    const T* src[4];
    i64 pq[4], pr[4];
    std::uint64_t smask[4];  // all ones: check the values read from src[g] (nonfinite_bits into acc)
    std::uint64_t acc;
};

// One row: the pointers are parameters so that __restrict__ holds (no
// run-time aliasing checks; factors never overlap the output).
template <int G, bool Acc, bool Contig, bool Scan, class T>
TJ_INLINE std::uint64_t row_g(T* TJ_RESTRICT o, i64 os, i64 n, const T* TJ_RESTRICT p0, const T* TJ_RESTRICT p1,
                              const T* TJ_RESTRICT p2, const T* TJ_RESTRICT p3, T s0, T s1, T s2, T s3,
                              std::uint64_t m0, std::uint64_t m1, std::uint64_t m2, std::uint64_t m3) {
    std::uint64_t acc = 0;
    for (i64 t = 0; t < n; ++t) {
        T& dst = Contig ? o[t] : o[t * os];
        const T a0 = p0[t];
        T v = s0 * a0;
        if constexpr (Scan) acc |= m0 & nonfinite_bits(a0);
        if constexpr (Acc) v = dst + v;
        if constexpr (G > 1) {
            const T a1 = p1[t];
            v += s1 * a1;
            if constexpr (Scan) acc |= m1 & nonfinite_bits(a1);
        }
        if constexpr (G > 2) {
            const T a2 = p2[t];
            v += s2 * a2;
            if constexpr (Scan) acc |= m2 & nonfinite_bits(a2);
        }
        if constexpr (G > 3) {
            const T a3 = p3[t];
            v += s3 * a3;
            if constexpr (Scan) acc |= m3 & nonfinite_bits(a3);
        }
        dst = v;
    }
    (void)os, (void)p1, (void)p2, (void)p3, (void)s1, (void)s2, (void)s3, (void)m0, (void)m1, (void)m2, (void)m3;
    return acc;
}

template <int G, bool Acc, bool Contig, bool Scan, class T>
TJ_INLINE void tile_g(Tile<T>& k) {
    std::uint64_t acc = 0;
    for (i64 q = 0; q < k.Q; ++q)
        for (i64 r = 0; r < k.R; ++r) {
            const T* sv = k.sv + q * k.svq + r;
            acc |= row_g<G, Acc, Contig, Scan>(
                k.out + q * k.oq + r * k.orr, k.os, k.n, k.src[0] + q * k.pq[0] + r * k.pr[0],
                G > 1 ? k.src[1] + q * k.pq[1] + r * k.pr[1] : nullptr,
                G > 2 ? k.src[2] + q * k.pq[2] + r * k.pr[2] : nullptr,
                G > 3 ? k.src[3] + q * k.pq[3] + r * k.pr[3] : nullptr, sv[0], G > 1 ? sv[k.svg] : T(0),
                G > 2 ? sv[2 * k.svg] : T(0), G > 3 ? sv[3 * k.svg] : T(0), k.smask[0], k.smask[1], k.smask[2],
                k.smask[3]);
        }
    if constexpr (Scan) k.acc |= acc;
}

// One term without inner factors: each row is its scalar.
template <bool Acc, bool Contig, class T>
TJ_INLINE void tile_const(Tile<T>& k) {
    const i64 n = k.n, os = k.os;
    for (i64 q = 0; q < k.Q; ++q)
        for (i64 r = 0; r < k.R; ++r) {
            T* TJ_RESTRICT o = k.out + q * k.oq + r * k.orr;
            const T s = k.sv[q * k.svq + r];
            for (i64 t = 0; t < n; ++t) {
                T& dst = Contig ? o[t] : o[t * os];
                if constexpr (Acc) dst = dst + s;
                else dst = s;
            }
        }
}

template <int G, bool Acc, class T>
TJ_INLINE void tile_gs(bool scan, Tile<T>& k) {
    if (k.os == 1) scan ? tile_g<G, Acc, true, true>(k) : tile_g<G, Acc, true, false>(k);
    else scan ? tile_g<G, Acc, false, true>(k) : tile_g<G, Acc, false, false>(k);
}

// g terms (1..4), or one term without inner factors (g == 0); scan: some smask is set.
template <bool Acc, class T>
TJ_INLINE void tile_any(int g, bool scan, Tile<T>& k) {
    switch (g) {
        case 0: k.os == 1 ? tile_const<Acc, true>(k) : tile_const<Acc, false>(k); return;
        case 1: tile_gs<1, Acc>(scan, k); return;
        case 2: tile_gs<2, Acc>(scan, k); return;
        case 3: tile_gs<3, Acc>(scan, k); return;
        default: tile_gs<4, Acc>(scan, k); return;
    }
}

// nonfinite_bits of n values p[t * stride], OR-ed.
template <class T>
TJ_INLINE std::uint64_t scan_run(const T* p, i64 n, i64 stride) {
    std::uint64_t acc = 0;
    if (stride == 1)
        for (i64 t = 0; t < n; ++t) acc |= nonfinite_bits(p[t]);
    else
        for (i64 t = 0; t < n; ++t) acc |= nonfinite_bits(p[t * stride]);
    return acc;
}

// The tile kernels of one instruction set, called through a pointer (a row
// loop compiled on its own gets every register; the bookkeeping around it
// gains nothing from wider vectors).
template <class T>
using TileFn = void (*)(int, bool, Tile<T>&);
template <class T>
using ScanFn = std::uint64_t (*)(const T*, i64, i64);

template <bool Acc, class T>
void tile_base(int g, bool scan, Tile<T>& k) {
    tile_any<Acc>(g, scan, k);
}
template <class T>
std::uint64_t scan_base(const T* p, i64 n, i64 stride) {
    return scan_run(p, n, stride);
}
#ifdef TJ_EXPAND_AVX2
template <bool Acc, class T>
TJ_TARGET_AVX2 void tile_avx2(int g, bool scan, Tile<T>& k) {
    tile_any<Acc>(g, scan, k);
}
template <class T>
TJ_TARGET_AVX2 std::uint64_t scan_avx2(const T* p, i64 n, i64 stride) {
    return scan_run(p, n, stride);
}
#endif

// The kernels of the instruction set expand_simd() selects (AVX2 for float and double where available).
template <class T>
struct Kernels {
    TileFn<T> tile[2];  // [Acc]
    ScanFn<T> scan;
    Kernels() {
        tile[0] = &tile_base<false, T>;
        tile[1] = &tile_base<true, T>;
        scan = &scan_base<T>;
#ifdef TJ_EXPAND_AVX2
        if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>)
            if (expand_simd() == Simd::avx2) {
                tile[0] = &tile_avx2<false, T>;
                tile[1] = &tile_avx2<true, T>;
                scan = &scan_avx2<T>;
            }
#endif
    }
};

// nonfinite_bits of every element of factor f the pass reads (an odometer
// over the variables it depends on, runs along the innermost of them).
template <class T>
std::uint64_t factor_bits(const Pass<T>& p, int f, ScanFn<T> scan) {
    const int V = p.size.size();
    Fixed<int, kMaxVars> vars;
    for (int v = 0; v < V; ++v)
        if (p.fstride[f][v] != 0) vars.push_back(v);
    const T* base = p.fdata[f];
    if (vars.empty()) return nonfinite_bits(base[0]);
    const int inner = vars.back();
    const i64 n = p.size[inner], st = p.fstride[f][inner];
    const int nv = vars.size() - 1;
    VarInts idx(V, 0);
    std::uint64_t acc = 0;
    i64 off = 0, since_poll = 0;
    for (;;) {
        acc |= scan(base + off, n, st);
        if ((since_poll += n) >= kPollWork) {  // a big factor: stay interruptible
            poll_cancel();
            since_poll = 0;
        }
        int k = nv - 1;
        for (; k >= 0; --k) {
            const int v = vars[k];
            off += p.fstride[f][v];
            if (++idx[v] < p.size[v]) break;
            off -= p.fstride[f][v] * p.size[v];
            idx[v] = 0;
        }
        if (k < 0) return acc;
    }
}

// ----------------------------------------------------------------------------- one block of a pass

// Evaluates positions [lo, hi) of the pass (the loop nest in order): whole
// tiles (Q panels of R rows) where the block allows, else panels of rows
// along the panel variable, else (part of) a row.
// Returns nonfinite_bits of the factor values the row kernels checked (see RowPlan::kscan).
template <bool Acc, class T>
std::uint64_t run_block(const Pass<T>& p, const RowPlan<T>& rp, const Kernels<T>& K, T* out, i64 lo, i64 hi) {
    const int V = p.size.size();
    const int F = p.fdata.size();
    const int G = p.nterms;
    if (V == 0) {  // a single element
        T v = T(0);
        for (int g = 0; g < G; ++g) {
            T s = p.coef[g];
            for (int f = p.fbegin[g]; f < p.fbegin[g + 1]; ++f) s *= p.fdata[f][0];
            if (g == 0) v = Acc ? T(out[0] + s) : s;
            else v += s;
        }
        out[0] = v;
        return 0;
    }
    std::uint64_t nonfinite = 0;
    const int last = V - 1, pv = V - 2, qv = V - 3;
    const i64 row = p.size[last], os = p.ostride[last];
    const i64 seg = rp.seg;

    // scratch: scalars [G][kPanel], row buffers [nbuf][seg], ones [seg]
    const i64 nscratch = G * kPanel + (rp.transposed ? kTransRows : rp.nbuf + (rp.ones ? 1 : 0)) * seg;
    constexpr i64 kLocal = 16384 / static_cast<i64>(sizeof(T));  // 16 KiB on the stack, uninitialised
    alignas(64) unsigned char local[kLocal * sizeof(T)];
    std::vector<T> heap;
    T* scratch = reinterpret_cast<T*>(local);
    if (nscratch > kLocal) {
        heap.resize(static_cast<std::size_t>(nscratch));
        scratch = heap.data();
    }
    T* const sv = scratch;
    T* const bufs = scratch + G * kPanel;
    T* const ones = bufs + rp.nbuf * seg;
    if (rp.ones)
        for (i64 t = 0; t < seg; ++t) ones[t] = T(1);

    // the odometer at lo
    VarInts idx(V, 0);
    Fixed<i64, kMaxPassFactors> foff(F, 0);
    i64 ooff = 0;
    {
        i64 rem = lo;
        for (int v = last; v >= 0; --v) {
            idx[v] = rem % p.size[v];
            rem /= p.size[v];
            ooff += idx[v] * p.ostride[v];
            for (int f = 0; f < F; ++f) foff[f] += idx[v] * p.fstride[f][v];
        }
    }
    // row buffers: offsets of their inner factors at the start of the cached segment, and its length
    Fixed<i64, kMaxPassFactors> bkey(F, 0);
    Fixed<i64, kMaxFused> blen(G, 0);

    // The product of term g's inner factors along the row segment [s0, s0 + seg)
    // for the offsets `offs` (taken at row position s0 + back).
    auto ensure_buffer = [&](int g, const i64* offs, i64 s0, i64 back) TJ_LAMBDA_INLINE -> const T* {
        T* buf = bufs + rp.bslot[g] * seg;
        const i64 len = std::min(seg, row - s0);
        bool same = blen[g] >= len;
        for (int q = rp.ibegin[g]; q < rp.ibegin[g + 1]; ++q) {
            const int f = rp.inner[q];
            const i64 key = offs[f] - back * p.fstride[f][last];
            same = same && bkey[f] == key;
            bkey[f] = key;
        }
        if (!same) {
            const int q0 = rp.ibegin[g], q1 = rp.ibegin[g + 1];
            const int f0 = rp.inner[q0];
            const T* a = p.fdata[f0] + bkey[f0];
            const i64 as = p.fstride[f0][last];
            std::uint64_t bits = 0;
            for (i64 t = 0; t < len; ++t) {
                const T v = a[t * as];
                bits |= nonfinite_bits(v);
                buf[t] = v;
            }
            if (rp.kscan[f0]) nonfinite |= bits;  // a transposed factor: checked where it is read
            for (int q = q0 + 1; q < q1; ++q) {
                const int f = rp.inner[q];
                const T* b = p.fdata[f] + bkey[f];
                const i64 bs = p.fstride[f][last];
                std::uint64_t fbits = 0;
                for (i64 t = 0; t < len; ++t) {
                    const T v = b[t * bs];
                    fbits |= nonfinite_bits(v);
                    buf[t] *= v;
                }
                if (rp.kscan[f]) nonfinite |= fbits;
            }
            blen[g] = len;
        }
        return buf;
    };

    // Scalars of rows (q, r), q < nq along qv, r < nr along pv, from the current
    // position: sv[g * kPanel + q * nr + r] = ((coef * o1) * o2) * ...
    auto scalars = [&](i64 nq, i64 nr) TJ_LAMBDA_INLINE {
        for (int g = 0; g < G; ++g) {
            T* s = sv + g * kPanel;
            const T c = p.coef[g];
            for (i64 e = 0; e < nq * nr; ++e) s[e] = c;
            for (int j = rp.obegin[g]; j < rp.obegin[g + 1]; ++j) {
                const int f = rp.outer[j];
                const T* a = p.fdata[f] + foff[f];
                const i64 ar = pv >= 0 ? p.fstride[f][pv] : 0;
                const i64 aq = qv >= 0 ? p.fstride[f][qv] : 0;
                for (i64 q = 0; q < nq; ++q)
                    for (i64 r = 0; r < nr; ++r) s[q * nr + r] *= a[q * aq + r * ar];
            }
        }
    };

    // Q x R rows of n elements from the current position (row position `start`);
    // nsq: rows of scalars along qv (Q, or 1 when they do not depend on it).
    auto emit = [&](i64 start, i64 n, i64 Q, i64 R, i64 nsq) TJ_LAMBDA_INLINE {
        scalars(nsq, R);
        Tile<T> k;
        k.out = out + ooff;
        k.os = os;
        k.oq = qv >= 0 ? p.ostride[qv] : 0;
        k.orr = pv >= 0 ? p.ostride[pv] : 0;
        k.n = n;
        k.Q = Q;
        k.R = R;
        k.sv = sv;
        k.svg = kPanel;
        k.svq = nsq > 1 ? R : 0;
        k.acc = 0;
        const T* src[kMaxFused];
        i64 pq[kMaxFused], pr[kMaxFused];
        std::uint64_t sm[kMaxFused];
        bool scan = false;
        for (int g = 0; g < G; ++g) {
            pq[g] = pr[g] = 0;
            sm[g] = 0;
            switch (rp.src[g]) {
                case Src::constant:
                    src[g] = ones;
                    break;
                case Src::direct: {
                    const int f = rp.inner[rp.ibegin[g]];
                    src[g] = p.fdata[f] + foff[f];
                    pr[g] = pv >= 0 ? p.fstride[f][pv] : 0;
                    pq[g] = qv >= 0 ? p.fstride[f][qv] : 0;
                    if (rp.kscan[f]) {
                        sm[g] = ~std::uint64_t(0);
                        scan = true;
                    }
                    break;
                }
                case Src::buffer: {
                    const i64 back = start % seg;
                    src[g] = ensure_buffer(g, foff.data(), start - back, back) + back;
                    break;
                }
            }
        }
        if (G == 1 && rp.src[0] == Src::constant) {
            K.tile[Acc](0, false, k);
            return;
        }
        if (G <= 4 && !(rp.buf_moves && R > 1)) {
            for (int g = 0; g < G; ++g) {
                k.src[g] = src[g];
                k.pq[g] = pq[g];
                k.pr[g] = pr[g];
                k.smask[g] = sm[g];
            }
            K.tile[Acc](G, scan, k);
            nonfinite |= k.acc;
            return;
        }
        // row by row (Q == 1): rebuild moving row buffers, and at most four terms per call
        Fixed<i64, kMaxPassFactors> offs(F, 0);
        for (i64 r = 0; r < R; ++r) {
            if (rp.buf_moves && r > 0) {
                for (int f = 0; f < F; ++f) offs[f] = foff[f] + r * p.fstride[f][pv];
                for (int g = 0; g < G; ++g)
                    if (rp.src[g] == Src::buffer) src[g] = ensure_buffer(g, offs.data(), 0, 0);
            }
            Tile<T> one = k;
            one.out = k.out + r * k.orr;
            one.Q = one.R = 1;
            one.svq = 0;
            for (int g0 = 0; g0 < G; g0 += 4) {
                const int m = std::min(4, G - g0);
                one.sv = sv + g0 * kPanel + r;
                for (int j = 0; j < m; ++j) {
                    one.src[j] = src[g0 + j] + (rp.src[g0 + j] == Src::buffer ? 0 : r * pr[g0 + j]);
                    one.pq[j] = one.pr[j] = 0;
                    one.smask[j] = sm[g0 + j];
                }
                one.acc = 0;
                K.tile[g0 == 0 ? Acc : true](m, scan, one);
                nonfinite |= one.acc;
            }
        }
    };

    // R whole rows of a transposed pass (RowPlan::transposed), in blocks of
    // seg columns: each block is read in the factor's order into R x seg
    // scratch (and checked for non-finite values), then written row by row.
    auto emit_transposed = [&](i64 R) TJ_LAMBDA_INLINE {
        scalars(1, R);
        std::uint64_t bits = 0;
        Tile<T> k;
        k.os = os;
        k.oq = 0;
        k.orr = p.ostride[pv];
        k.Q = 1;
        k.R = R;
        k.sv = sv;
        k.svg = kPanel;
        k.svq = 0;
        k.src[0] = bufs;
        k.pq[0] = 0;
        k.pr[0] = seg;
        k.smask[0] = 0;
        k.acc = 0;
        for (i64 c0 = 0; c0 < row; c0 += seg) {
            const i64 len = std::min(seg, row - c0);
            for (int q = rp.ibegin[0]; q < rp.ibegin[1]; ++q) {  // the row factors, in factor order
                const int f = rp.inner[q];
                const T* F = p.fdata[f] + foff[f];
                const i64 ft = p.fstride[f][last], fr = p.fstride[f][pv];
                for (i64 t = 0; t < len; ++t) {
                    const T* a = F + (c0 + t) * ft;
                    T* b = bufs + t;
                    if (q == 0)
                        for (i64 r = 0; r < R; ++r) {
                            const T v = a[r * fr];
                            bits |= nonfinite_bits(v);
                            b[r * seg] = v;
                        }
                    else
                        for (i64 r = 0; r < R; ++r) {
                            const T v = a[r * fr];
                            bits |= nonfinite_bits(v);
                            b[r * seg] *= v;
                        }
                }
            }
            k.out = out + ooff + c0 * os;
            k.n = len;
            K.tile[Acc](1, false, k);
        }
        nonfinite |= bits;
        blen[0] = 0;  // the scratch no longer holds a row buffer
    };

    // advances the odometer by `step` along variable v (< its remaining extent), then carries
    auto advance = [&](int v, i64 step) TJ_LAMBDA_INLINE {
        idx[v] += step;
        ooff += step * p.ostride[v];
        for (int f = 0; f < F; ++f) foff[f] += step * p.fstride[f][v];
        for (; v > 0 && idx[v] == p.size[v]; --v) {
            idx[v] = 0;
            ooff += p.ostride[v - 1] - p.size[v] * p.ostride[v];
            ++idx[v - 1];
            for (int f = 0; f < F; ++f) foff[f] += p.fstride[f][v - 1] - p.size[v] * p.fstride[f][v];
        }
    };

    const i64 prows = pv >= 0 ? p.size[pv] : 1;
    const i64 tile = prows * row;  // positions of one whole panel
    i64 pos = lo;
    while (pos < hi) {
        const i64 start = idx[last];
        const i64 left = hi - pos;
        if (rp.transposed && start == 0 && left >= 2 * row) {
            const i64 rleft = prows - idx[pv];
            const i64 R = std::min(left >= rleft * row ? rleft : left / row, kTransRows);
            emit_transposed(R);
            pos += R * row;
            advance(pv, R);
            continue;
        }
        if (start == 0 && pv >= 0 && row <= seg && left >= row) {
            if (rp.tiles && idx[pv] == 0 && left >= 2 * tile) {
                // Q whole panels along qv
                const i64 qleft = p.size[qv] - idx[qv];
                i64 Q = left >= qleft * tile ? qleft : left / tile;
                if (!rp.flat) Q = std::min(Q, kPanel / prows);
                if (Q >= 2) {
                    emit(0, row, Q, prows, rp.flat ? 1 : Q);
                    pos += Q * tile;
                    advance(qv, Q);
                    continue;
                }
            }
            // R rows along pv
            const i64 rleft = prows - idx[pv];
            i64 R = left >= rleft * row ? rleft : left / row;
            R = std::min(R, kPanel);
            emit(0, row, 1, R, 1);
            pos += R * row;
            advance(pv, R);
            continue;
        }
        // (part of) one row, within one segment
        const i64 n = std::min(std::min(row - start, left), seg - start % seg);
        emit(start, n, 1, 1, 1);
        pos += n;
        advance(last, n);
    }
    return nonfinite;
}

// Below this many positions a pass runs on the calling thread.  A second thread saves at
// most tens of microseconds there (2 MiB of doubles), while waking an idle OpenMP worker, or
// waiting for a core held by another thread pool's spinning worker (numpy's BLAS, XLA), costs
// 0.1-3 ms on a 2-core VM: tj.sandwich n=16 at 2 threads took 0.7-2.8 ms instead of 0.15 ms.
constexpr i64 kExpandParallelWork = i64(1) << 18;

// One pass; with `finite`, also clears it when a factor value it reads is not finite.
template <bool Acc, class T>
void run_pass(T* out, const Pass<T>& p, int nthreads, bool* finite) {
    if (p.total == 0) return;
    RowPlan<T> rp = plan_rows(p);
    const Kernels<T> K;
    if (finite) {
        std::uint64_t bits = 0;
        for (int f = 0; f < p.fdata.size(); ++f)
            if (!rp.kscan[f]) bits |= factor_bits(p, f, K.scan);
        if (bits >> 63) *finite = false;
    } else {
        for (int f = 0; f < p.fdata.size(); ++f) rp.kscan[f] = false;
    }
    std::atomic<bool> bad{false};
    parallel_blocks(p.total, p.total < kExpandParallelWork ? 1 : nthreads, 1, [&](i64 lo, i64 hi, int) {
        if (run_block<Acc, T>(p, rp, K, out, lo, hi) >> 63) bad.store(true, std::memory_order_relaxed);
    });
    if (finite && bad.load()) *finite = false;
}

// Runs terms[first, last) as consecutive passes (fused where they share their positions).
template <class T>
void run_terms(T* out, const std::vector<Term<T>>& terms, std::size_t first, std::size_t last, bool acc_first,
               int nthreads, i64 out_total, bool* finite) {
    std::size_t t = first;
    bool acc = acc_first;
    while (t < last) {
        const Fixed<int, kMaxVars> order = loop_order(terms[t]);
        std::size_t e = t + 1;
        int nf = static_cast<int>(terms[t].factors.size());
        Fixed<int, kMaxVars> map;
        while (e < last && static_cast<int>(e - t) < kMaxFused &&
               nf + static_cast<int>(terms[e].factors.size()) <= kMaxPassFactors &&
               same_positions(terms[t], order, terms[e], map)) {
            nf += static_cast<int>(terms[e].factors.size());
            ++e;
        }
        Pass<T> p = make_pass(terms, t, e, order);
        std::vector<std::vector<T>> copies;
        if (p.total > 0) {
            if (p.total >= kCopyRatio && out_total > 0) transpose_small_factors(p, copies);
            if (acc) run_pass<true>(out, p, nthreads, finite);
            else run_pass<false>(out, p, nthreads, finite);
        }
        acc = true;
        t = e;
    }
}

}  // namespace detail

// Number of output positions a term touches (product of its variable sizes).
template <class T>
std::int64_t term_extent(const Term<T>& t) {
    std::int64_t n = 1;
    for (auto s : t.size) n = checked_mul(n, s);
    return n;
}

// Fill a strided array (shape/strides in elements) with one value.
template <class T>
void fill(T* out, const std::vector<std::int64_t>& shape, const std::vector<std::int64_t>& strides,
          T value, int nthreads) {
    Term<T> t;
    t.coef = value;
    t.size = shape;
    t.out_stride = strides;
    for (std::size_t d = 0; d < shape.size(); ++d)
        if (shape[d] > 1 && strides[d] == 0) throw std::invalid_argument("fill: zero stride in output");
    if (detail::check_term(t) == 0) return;
    const std::vector<Term<T>> one{t};
    detail::run_terms(out, one, 0, 1, false, nthreads, 0, nullptr);
}

// How expand treats what is already in the output:
//   write      -- overwrite it: zero-fill first unless a leading term covers every element;
//   zeroed     -- the caller guarantees it is all zeros (e.g. fresh calloc'ed pages, which the OS
//                 maps lazily: a sparse Jacobian then never touches most of its memory);
//   accumulate -- add every term to the existing contents.
enum class ExpandMode { write, zeroed, accumulate };

// out = sum of terms (out += sum of terms in accumulate mode), evaluated in
// passes of fused like terms (see the top of this file).  A first term that
// covers every element (no deltas) writes the output in one pass; otherwise
// it is zero-filled first -- unless the second term covers every element (and
// does not fuse with the third), in which case the two are swapped (a + b ==
// b + a exactly).  Every term is checked before anything is written.
//
// With `finite`, *finite is set to whether every factor value the terms read
// is finite (large factors read in place are checked as the kernel reads
// them, the others before their pass): the package's non-finite policy
// without a separate pass over big factors.  Factors must not overlap `out`.
template <class T>
void expand(T* out, const std::vector<std::int64_t>& shape, const std::vector<std::int64_t>& strides,
            const std::vector<Term<T>>& terms, int nthreads, ExpandMode mode = ExpandMode::write,
            bool* finite = nullptr) {
    if (shape.size() != strides.size()) throw std::invalid_argument("expand: shape/strides length mismatch");
    std::int64_t total = 1;
    for (auto s : shape) total = checked_mul(total, s);
    for (const auto& t : terms) detail::check_term(t);
    if (finite) *finite = true;
    if (total == 0) return;
    const std::size_t nt = terms.size();
    if (mode == ExpandMode::accumulate) {
        detail::run_terms(out, terms, 0, nt, true, nthreads, total, finite);
        return;
    }
    const bool covers0 = nt > 0 && detail::check_term(terms[0]) == total;
    bool swap = mode == ExpandMode::write && !covers0 && nt >= 2 && detail::check_term(terms[1]) == total;
    if (swap && nt > 2) {  // not when the second term fuses with the third: keep that pass whole
        detail::Fixed<int, kMaxVars> map;
        swap = !detail::same_positions(terms[1], detail::loop_order(terms[1]), terms[2], map);
    }
    if (swap) {
        // the covering second term writes, the first adds to it, then the rest in order
        detail::run_terms(out, terms, 1, 2, false, nthreads, total, finite);
        detail::run_terms(out, terms, 0, 1, true, nthreads, total, finite);
        detail::run_terms(out, terms, 2, nt, true, nthreads, total, finite);
        return;
    }
    if (mode == ExpandMode::write && !covers0) fill(out, shape, strides, T(0), nthreads);
    detail::run_terms(out, terms, 0, nt, false, nthreads, total, finite);
}

// True when the first term alone writes every element (then no zero-fill is needed).
template <class T>
bool first_term_covers(const std::vector<std::int64_t>& shape, const std::vector<Term<T>>& terms) {
    std::int64_t total = 1;
    for (auto s : shape) total = checked_mul(total, s);
    return !terms.empty() && term_extent(terms[0]) == total;
}

}  // namespace tensorjac
