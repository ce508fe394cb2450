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
// Header-only, templated on the element type, no Python headers.
#pragma once
#include <algorithm>
#include <complex>
#include <cstdint>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "tensorjac/parallel.hpp"

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

namespace detail {

// A fixed-capacity vector on the stack: the kernel's bookkeeping makes no heap
// allocations, which matters for tiny Jacobians where call overhead dominates.
template <class T, int N>
class Fixed {
public:
    Fixed() = default;
    Fixed(int n, T v) { resize(n, v); }
    void push_back(T v) {
        if (n_ == N) throw std::length_error("expand: too many index variables or factors");
        a_[n_++] = v;
    }
    void resize(int n, T v) {
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
    T a_[N]{};
    int n_ = 0;
};

using VarInts = Fixed<std::int64_t, kMaxVars>;

// Longest innermost row whose factor product is cached in a per-thread buffer.
constexpr std::int64_t kRowBuffer = 4096;

template <bool Acc, class T>
inline void put(T* p, T v) {
    if constexpr (Acc) *p += v;
    else *p = v;
}

// The innermost run: n elements along one variable.  Specialised for the
// common factor counts so the contiguous cases vectorise.
template <bool Acc, class T>
inline void run_inner(T* o, std::int64_t os, std::int64_t n, T s, int nf,
                      const T* const* fp, const std::int64_t* fs) {
    switch (nf) {
        case 0:
            if (os == 1) {
                for (std::int64_t t = 0; t < n; ++t) put<Acc>(o + t, s);
            } else {
                for (std::int64_t t = 0; t < n; ++t) put<Acc>(o + t * os, s);
            }
            return;
        case 1: {
            const T* a = fp[0];
            const std::int64_t as = fs[0];
            if (os == 1 && as == 1) {
                for (std::int64_t t = 0; t < n; ++t) put<Acc>(o + t, s * a[t]);
            } else {
                for (std::int64_t t = 0; t < n; ++t) put<Acc>(o + t * os, s * a[t * as]);
            }
            return;
        }
        case 2: {
            const T* a = fp[0];
            const T* b = fp[1];
            const std::int64_t as = fs[0], bs = fs[1];
            for (std::int64_t t = 0; t < n; ++t) put<Acc>(o + t * os, s * a[t * as] * b[t * bs]);
            return;
        }
        default:
            for (std::int64_t t = 0; t < n; ++t) {
                T v = s;
                for (int f = 0; f < nf; ++f) v *= fp[f][t * fs[f]];
                put<Acc>(o + t * os, v);
            }
    }
}

// Normalised loop nest of one term: variables ordered by decreasing output
// stride (innermost = smallest), size-1 variables dropped, and neighbours
// merged where every stride allows it.
template <class T>
struct Nest {
    VarInts size, ostride;
    Fixed<VarInts, kMaxFactors> fstride;  // [factor][var]
    Fixed<const T*, kMaxFactors> fdata;
    std::int64_t total = 1;
};

// c == a * b, false (not undefined behaviour) when a * b overflows.
inline bool is_product(std::int64_t c, std::int64_t a, std::int64_t b) {
    return !mul_overflows(a, b) && c == a * b;
}

template <class T>
Nest<T> normalise(const Term<T>& term) {
    const std::size_t V = term.size.size();
    if (term.out_stride.size() != V) throw std::invalid_argument("expand: out_stride/size length mismatch");
    for (const auto& f : term.factors)
        if (f.stride.size() != V) throw std::invalid_argument("expand: factor stride length mismatch");
    if (V > static_cast<std::size_t>(kMaxVars) || term.factors.size() > static_cast<std::size_t>(kMaxFactors))
        throw std::length_error("expand: too many index variables or factors in a term");
    Fixed<int, kMaxVars> order;
    Nest<T> nest;
    for (std::size_t v = 0; v < V; ++v) {
        if (term.size[v] < 0) throw std::invalid_argument("expand: negative variable size");
        nest.total = checked_mul(nest.total, term.size[v]);
        if (term.size[v] == 1) continue;
        if (term.out_stride[v] == 0)
            throw std::invalid_argument("expand: a variable has zero output stride (writes would collide)");
        order.push_back(v);
    }
    if (nest.total == 0) return nest;
    auto mag = [](std::int64_t x) { return x < 0 ? -x : x; };
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
        return mag(term.out_stride[a]) > mag(term.out_stride[b]);
    });
    const int F = static_cast<int>(term.factors.size());
    nest.fstride.resize(F, VarInts{});
    for (int f = 0; f < F; ++f) nest.fdata.push_back(term.factors[f].data);
    for (int v : order) {
        const std::int64_t sz = term.size[v];
        bool merge = !nest.size.empty();
        if (merge) {
            // outer (previous) var merges with this inner one when outer stride == size * inner stride
            merge = is_product(nest.ostride.back(), sz, term.out_stride[v]);
            for (int f = 0; merge && f < F; ++f)
                merge = is_product(nest.fstride[f].back(), sz, term.factors[f].stride[v]);
        }
        if (merge) {
            nest.size.back() *= sz;
            nest.ostride.back() = term.out_stride[v];
            for (int f = 0; f < F; ++f) nest.fstride[f].back() = term.factors[f].stride[v];
        } else {
            nest.size.push_back(sz);
            nest.ostride.push_back(term.out_stride[v]);
            for (int f = 0; f < F; ++f) nest.fstride[f].push_back(term.factors[f].stride[v]);
        }
    }
    return nest;
}

template <bool Acc, class T>
void run_term(T* out, const Term<T>& term, int nthreads) {
    const Nest<T> nest = normalise(term);
    if (nest.total == 0) return;
    const int V = static_cast<int>(nest.size.size());
    const int F = static_cast<int>(nest.fdata.size());
    if (V == 0) {  // a single element
        T v = term.coef;
        for (int f = 0; f < F; ++f) v *= nest.fdata[f][0];
        put<Acc>(out, v);
        return;
    }
    const int last = V - 1;
    // Factors constant along the innermost variable are folded into the scalar.
    Fixed<int, kMaxFactors> inner_f, outer_f;
    for (int f = 0; f < F; ++f) (nest.fstride[f][last] ? inner_f : outer_f).push_back(f);
    const int nin = static_cast<int>(inner_f.size());

    // When the factors that vary along the innermost variable are strided or
    // several, their product along that row is gathered once into a small
    // contiguous buffer and reused while the outer odometer leaves their
    // offsets unchanged (e.g. B[:, j] for every (i, k) of A[i,k] B[l,j]); the
    // innermost loop is then a contiguous, vectorisable scale-and-store.
    const std::int64_t row = nest.size[last];
    bool use_row = false;
    for (int q = 0; q < nin; ++q) use_row |= nest.fstride[inner_f[q]][last] != 1;
    use_row = (use_row || nin > 1) && row <= kRowBuffer;
    // Whole rows along the second-innermost variable form a panel handled by a
    // tight loop without odometer bookkeeping.
    const int pv = last - 1;  // panel variable (-1 when there is none)
    bool panel_keeps_buf = use_row;
    for (int q = 0; q < nin && pv >= 0; ++q) panel_keeps_buf &= nest.fstride[inner_f[q]][pv] == 0;

    parallel_blocks(nest.total, nthreads, 1, [&](std::int64_t lo, std::int64_t hi, int) {
        VarInts idx(V, 0);
        Fixed<std::int64_t, kMaxFactors> foff(F, 0);
        std::int64_t ooff = 0;
        std::int64_t rem = lo;
        for (int v = last; v >= 0; --v) {
            idx[v] = rem % nest.size[v];
            rem /= nest.size[v];
            ooff += idx[v] * nest.ostride[v];
            for (int f = 0; f < F; ++f) foff[f] += idx[v] * nest.fstride[f][v];
        }
        Fixed<const T*, kMaxFactors> ip(nin, nullptr);
        Fixed<std::int64_t, kMaxFactors> is(nin, 0), ps(F, 0);
        for (int q = 0; q < nin; ++q) is[q] = nest.fstride[inner_f[q]][last];
        if (pv >= 0)
            for (int f = 0; f < F; ++f) ps[f] = nest.fstride[f][pv];
        const std::int64_t os = nest.ostride[last];
        const std::int64_t pos_stride = pv >= 0 ? nest.ostride[pv] : 0;
        std::vector<T> buf(use_row ? row : 0);
        Fixed<std::int64_t, kMaxFactors> buf_key(nin, -1);  // row-start offsets the buffer was built for
        bool buf_valid = false;
        const std::int64_t one = 1;
        const T* bufp = buf.data();
        // Points ip at the inner factors' rows, or at the (re)built row buffer.
        auto prepare_row = [&](const std::int64_t* offs, std::int64_t start) -> int {
            if (!use_row) {
                for (int q = 0; q < nin; ++q) ip[q] = nest.fdata[inner_f[q]] + offs[inner_f[q]];
                return nin;
            }
            bool same = buf_valid;
            for (int q = 0; q < nin; ++q) {
                const std::int64_t key = offs[inner_f[q]] - start * is[q];
                same = same && buf_key[q] == key;
                buf_key[q] = key;
            }
            if (!same) {
                for (std::int64_t t = 0; t < row; ++t) {
                    T v = nest.fdata[inner_f[0]][buf_key[0] + t * is[0]];
                    for (int q = 1; q < nin; ++q) v *= nest.fdata[inner_f[q]][buf_key[q] + t * is[q]];
                    buf[t] = v;
                }
                buf_valid = true;
            }
            ip[0] = bufp + start;
            return 1;
        };
        std::int64_t pos = lo;
        while (pos < hi) {
            std::int64_t n = std::min(row - idx[last], hi - pos);
            const std::int64_t panel =
                (pv >= 0 && idx[last] == 0) ? std::min(nest.size[pv] - idx[pv], (hi - pos) / row) : 0;
            if (panel > 1) {
                // `panel` whole rows along pv: only offsets move, nothing carries.
                auto& po = foff;
                for (std::int64_t r = 0; r < panel; ++r) {
                    T s = term.coef;
                    for (int f : outer_f) s *= nest.fdata[f][po[f]];
                    const int nf = (r == 0 || !panel_keeps_buf) ? prepare_row(po.data(), 0) : (use_row ? 1 : nin);
                    run_inner<Acc>(out + ooff, os, row, s, nf, ip.data(), use_row ? &one : is.data());
                    ooff += pos_stride;
                    for (int f = 0; f < F; ++f) po[f] += ps[f];
                }
                ooff -= pos_stride;  // leave the odometer on the panel's last row, fully done
                for (int f = 0; f < F; ++f) po[f] -= ps[f];
                idx[pv] += panel - 1;
                n = row;
                pos += (panel - 1) * row;
            } else {
                T s = term.coef;
                for (int f : outer_f) s *= nest.fdata[f][foff[f]];
                const int nf = prepare_row(foff.data(), idx[last]);
                run_inner<Acc>(out + ooff, os, n, s, nf, ip.data(), use_row ? &one : is.data());
            }
            pos += n;
            // advance the odometer by n along the innermost variable, then carry
            idx[last] += n;
            ooff += n * os;
            for (int q = 0; q < nin; ++q) foff[inner_f[q]] += n * is[q];
            for (int v = last; v > 0 && idx[v] == nest.size[v]; --v) {
                idx[v] = 0;
                ooff -= nest.size[v] * nest.ostride[v];
                ooff += nest.ostride[v - 1];
                ++idx[v - 1];
                for (int f = 0; f < F; ++f)
                    foff[f] += nest.fstride[f][v - 1] - nest.size[v] * nest.fstride[f][v];
            }
        }
    });
}

}  // namespace detail

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
    detail::run_term<false>(out, t, nthreads);
}

// Number of output positions a term touches (product of its variable sizes).
template <class T>
std::int64_t term_extent(const Term<T>& t) {
    std::int64_t n = 1;
    for (auto s : t.size) n = checked_mul(n, s);
    return n;
}

// out = sum of terms.  A first term that covers every element (no deltas)
// writes the output in one pass; otherwise it is zero-filled first.
// Later terms accumulate in a fixed order, so results do not depend on the
// thread count.
// How expand treats what is already in the output:
//   write      -- overwrite it: zero-fill first unless the first term covers every element;
//   zeroed     -- the caller guarantees it is all zeros (e.g. fresh calloc'ed pages, which the OS
//                 maps lazily: a sparse Jacobian then never touches most of its memory);
//   accumulate -- add every term to the existing contents.
enum class ExpandMode { write, zeroed, accumulate };

template <class T>
void expand(T* out, const std::vector<std::int64_t>& shape, const std::vector<std::int64_t>& strides,
            const std::vector<Term<T>>& terms, int nthreads, ExpandMode mode = ExpandMode::write) {
    if (shape.size() != strides.size()) throw std::invalid_argument("expand: shape/strides length mismatch");
    std::int64_t total = 1;
    for (auto s : shape) total = checked_mul(total, s);
    if (total == 0) return;
    if (mode == ExpandMode::write && (terms.empty() || term_extent(terms[0]) != total))
        fill(out, shape, strides, T(0), nthreads);
    for (std::size_t t = 0; t < terms.size(); ++t) {
        if (t == 0 && mode != ExpandMode::accumulate) detail::run_term<false>(out, terms[t], nthreads);
        else detail::run_term<true>(out, terms[t], nthreads);
    }
}

// True when the first term alone writes every element (then no zero-fill is needed).
template <class T>
bool first_term_covers(const std::vector<std::int64_t>& shape, const std::vector<Term<T>>& terms) {
    std::int64_t total = 1;
    for (auto s : shape) total = checked_mul(total, s);
    return !terms.empty() && term_extent(terms[0]) == total;
}

}  // namespace tensorjac
