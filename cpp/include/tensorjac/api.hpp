// The documented C++ API of tensorjac: a thin, Python-free convenience layer
// over the header-only kernels (expand.hpp, kron.hpp, fd.hpp).  Include it
// through the umbrella header <tensorjac/tensorjac.hpp>; docs/cpp.md is its
// user guide.
//
//   Layout, jacobian_shape, jacobian_offsets
//       the five general Jacobian layouts of the Python package (docs/layouts.md)
//       and where entry T[m, n] of the derivative tensor lands in each.
//   Operand, IndexTerm, expand_into, JacobianTerms
//       a sum of index-expression terms  coef * A[letters] * B[letters] * ...
//       written by the expand kernel into any strided array, or into a Jacobian
//       in any layout (the notation of tensorjac.Deriv: "ij", "(ik)(jl)").
//   MatrixRef, kron_matvec, kron_matvec_workspace
//       (A1 kron A2 kron ... kron Ak) x for a batch of vectors, never forming
//       the Kronecker product.
//   fd::Method, fd::Stencil, fd::stencil, fd::default_steps, fd::jacobian
//       finite-difference Jacobians of any C++ callable, written in any layout,
//       with a per-entry error estimate.
//
// Conventions.  Sizes, strides and offsets are std::int64_t counts of elements
// (not bytes); size arithmetic is checked (std::overflow_error).  Bad arguments
// throw std::invalid_argument (std::length_error past a kernel limit) naming
// the argument and the shapes, before anything is written.  num_threads = 0
// means tensorjac::default_threads() (OMP_NUM_THREADS, capped at the CPUs of
// the process); every count is capped at thread_cap(), which is 1 without
// OpenMP.  Results are bitwise identical for any thread count.  Outputs must
// not overlap any input (checked on the address ranges).  Kernels stop
// promptly, throwing tensorjac::Interrupted, when a CancelFlag installed with
// tensorjac::ScopedCancel on the calling thread is set.
//
// Element types: float, double, std::complex<float>, std::complex<double>.
// Header-only, no Python headers, works with and without OpenMP.
#pragma once
#include <algorithm>
#include <cmath>
#include <complex>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "tensorjac/expand.hpp"
#include "tensorjac/fd.hpp"
#include "tensorjac/kron.hpp"
#include "tensorjac/parallel.hpp"

namespace tensorjac {

// Shapes and strides, in elements.
using Shape = std::vector<std::int64_t>;

namespace detail {

inline std::string shape_str(const Shape& s) {
    std::string r = "(";
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (i) r += ", ";
        r += std::to_string(s[i]);
    }
    if (s.size() == 1) r += ",";
    return r + ")";
}

[[noreturn]] inline void fail_arg(const std::string& what, const std::string& msg) {
    throw std::invalid_argument("tensorjac::" + what + ": " + msg);
}

// Product of non-negative extents, checked.
inline std::int64_t extent(const Shape& shape, const std::string& what, const char* name) {
    std::int64_t p = 1;
    for (auto s : shape) {
        if (s < 0) fail_arg(what, std::string(name) + " " + shape_str(shape) + " has a negative extent");
        p = checked_mul(p, s);
    }
    return p;
}

// C-order strides of a shape (elements).
inline Shape c_strides(const Shape& shape) {
    Shape st(shape.size(), 1);
    std::int64_t s = 1;
    for (std::size_t d = shape.size(); d-- > 0;) {
        st[d] = s;
        s = checked_mul(s, shape[d] > 0 ? shape[d] : 1);
    }
    return st;
}

inline int threads(int num_threads) { return num_threads == 0 ? default_threads() : clamp_threads(num_threads); }

// Byte range [lo, hi) touched by a strided array (empty when it has no element).
struct Range {
    std::uintptr_t lo = 0, hi = 0;
    bool empty() const { return hi <= lo; }
};

template <class T>
Range range_of(const T* p, const Shape& shape, const Shape& strides) {
    Range r;
    if (!p) return r;
    std::int64_t lo = 0, hi = 0;
    for (std::size_t d = 0; d < shape.size(); ++d) {
        if (shape[d] == 0) return r;
        const std::int64_t span = checked_mul(shape[d] - 1, strides[d]);
        (span < 0 ? lo : hi) = checked_add(span < 0 ? lo : hi, span);
    }
    const auto base = reinterpret_cast<std::uintptr_t>(p);
    r.lo = base - static_cast<std::uintptr_t>(-lo) * sizeof(T);
    r.hi = base + (static_cast<std::uintptr_t>(hi) + 1) * sizeof(T);
    return r;
}

inline bool overlap(const Range& a, const Range& b) { return !a.empty() && !b.empty() && a.lo < b.hi && b.lo < a.hi; }

}  // namespace detail

// ============================================================================ layouts

// The five general layouts of a Jacobian (docs/layouts.md).  For F of shape
// out = (M1..MP) and X of shape in = (N1..NR), with the derivative tensor
// T[m, n] = dF[m] / dX[n]:
//   tensor     out + in              J[m, n] = T[m, n]
//   gradient   in + out              J[n, m] = T[m, n]
//   numerator  out + reversed(in)    J[m, nR, ..., n1] = T[m, n1, ..., nR]
//   matrix     (prod(out), prod(in)) J[ravel_C(m), ravel_C(n)] = T[m, n]
//   vec        (prod(out), prod(in)) J[ravel_F(m), ravel_F(n)] = T[m, n]  (Magnus-Neudecker)
enum class Layout { tensor, gradient, numerator, matrix, vec };

inline const char* layout_name(Layout layout) {
    switch (layout) {
        case Layout::tensor: return "tensor";
        case Layout::gradient: return "gradient";
        case Layout::numerator: return "numerator";
        case Layout::matrix: return "matrix";
        case Layout::vec: return "vec";
    }
    return "?";
}

// The layout called `name` ("tensor", "gradient", "numerator", "matrix", "vec").
inline Layout layout_from_name(const std::string& name) {
    for (Layout l : {Layout::tensor, Layout::gradient, Layout::numerator, Layout::matrix, Layout::vec})
        if (name == layout_name(l)) return l;
    detail::fail_arg("layout_from_name",
                     "unknown layout '" + name + "'; expected one of tensor, gradient, numerator, matrix, vec");
}

namespace detail {

// Where each axis of F and of X lands in a layout: (result dimension, multiplier).
struct Place {
    std::size_t dim = 0;
    std::int64_t mult = 1;
};
struct Placement {
    Shape shape;
    std::vector<Place> out, in;
};

inline Placement placement(Layout layout, const Shape& out, const Shape& in, const std::string& what) {
    const std::int64_t M = extent(out, what, "out_shape"), N = extent(in, what, "in_shape");
    (void)checked_mul(M, N);  // the result must be addressable
    const std::size_t P = out.size(), R = in.size();
    Placement pl;
    pl.out.resize(P);
    pl.in.resize(R);
    switch (layout) {
        case Layout::tensor:
        case Layout::gradient:
        case Layout::numerator: {
            const bool grad = layout == Layout::gradient;
            if (grad) {  // in + out
                pl.shape = in;
                pl.shape.insert(pl.shape.end(), out.begin(), out.end());
            } else if (layout == Layout::tensor) {  // out + in
                pl.shape = out;
                pl.shape.insert(pl.shape.end(), in.begin(), in.end());
            } else {  // out + reversed(in)
                pl.shape = out;
                pl.shape.insert(pl.shape.end(), in.rbegin(), in.rend());
            }
            for (std::size_t p = 0; p < P; ++p) pl.out[p].dim = grad ? R + p : p;
            for (std::size_t r = 0; r < R; ++r) {
                if (grad)
                    pl.in[r].dim = r;
                else if (layout == Layout::tensor)
                    pl.in[r].dim = P + r;
                else
                    pl.in[r].dim = P + R - 1 - r;
            }
            break;
        }
        case Layout::matrix:
        case Layout::vec: {
            pl.shape = {M, N};
            const bool c = layout == Layout::matrix;
            std::int64_t mult = 1;
            for (std::size_t i = 0; i < P; ++i) {  // C order: later axes vary fastest
                const std::size_t p = c ? P - 1 - i : i;
                pl.out[p] = {0, mult};
                mult *= out[p];  // no overflow: a factor of M
            }
            mult = 1;
            for (std::size_t i = 0; i < R; ++i) {
                const std::size_t r = c ? R - 1 - i : i;
                pl.in[r] = {1, mult};
                mult *= in[r];
            }
            break;
        }
        default: fail_arg(what, "unknown layout " + std::to_string(static_cast<int>(layout)));
    }
    return pl;
}

// Element strides of a result of `shape`: `strides`, or C order when empty.
inline Shape result_strides(const Shape& shape, const Shape& strides, const std::string& what) {
    if (strides.empty()) return c_strides(shape);
    if (strides.size() != shape.size())
        fail_arg(what, "strides " + shape_str(strides) + " do not match the result's shape " + shape_str(shape));
    return strides;
}

}  // namespace detail

// Shape of the Jacobian of F (shape out_shape) with respect to X (shape in_shape) in `layout`.
inline Shape jacobian_shape(Layout layout, const Shape& out_shape, const Shape& in_shape) {
    return detail::placement(layout, out_shape, in_shape, "jacobian_shape").shape;
}

// Offsets of the entries of a Jacobian: T[m, n] (m, n the flat C-order indices
// of F's and X's entries) is stored at J[out[m] + in[n]], J being C-contiguous
// of `shape` -- or having element `strides` when given (one per dimension of
// jacobian_shape(layout, ...)).
struct JacobianOffsets {
    Shape shape;
    std::vector<std::int64_t> out, in;
};

inline JacobianOffsets jacobian_offsets(Layout layout, const Shape& out_shape, const Shape& in_shape,
                                        const Shape& strides = {}) {
    const std::string what = "jacobian_offsets";
    const detail::Placement pl = detail::placement(layout, out_shape, in_shape, what);
    const Shape st = detail::result_strides(pl.shape, strides, what);
    JacobianOffsets r;
    r.shape = pl.shape;
    auto offsets = [&](const Shape& sub, const std::vector<detail::Place>& places) {
        const std::int64_t n = detail::extent(sub, what, "shape");
        std::vector<std::int64_t> off(static_cast<std::size_t>(n), 0);
        Shape step(sub.size());
        for (std::size_t a = 0; a < sub.size(); ++a) step[a] = checked_mul(places[a].mult, st[places[a].dim]);
        Shape idx(sub.size(), 0);
        std::int64_t cur = 0;
        for (std::int64_t e = 0; e < n; ++e) {  // odometer in C order
            off[static_cast<std::size_t>(e)] = cur;
            for (std::size_t a = sub.size(); a-- > 0;) {
                cur += step[a];
                if (++idx[a] < sub[a]) break;
                cur -= checked_mul(step[a], sub[a]);
                idx[a] = 0;
            }
        }
        return off;
    };
    r.out = offsets(out_shape, pl.out);
    r.in = offsets(in_shape, pl.in);
    return r;
}

// ============================================================================ index expressions

// Extent of each index letter.
using LetterSizes = std::map<char, std::int64_t>;

// One factor of a term: an array whose axes are labelled by letters ("ik":
// axis 0 is i, axis 1 is k), at `strides` elements apart per axis (empty: C
// order for the letters' sizes).  A letter repeated in one operand reads its
// diagonal.  Every letter must be on an axis of the result: the kernel writes
// products, it never contracts (sum over a letter before calling).
template <class T>
struct Operand {
    const T* data = nullptr;
    std::string letters;
    Shape strides;

    Operand() = default;
    Operand(const T* d, std::string l, Shape s = {}) : data(d), letters(std::move(l)), strides(std::move(s)) {}
};

// coef * factors[0] * factors[1] * ...  (at most kMaxFactors factors).
template <class T>
struct IndexTerm {
    T coef = T(1);
    std::vector<Operand<T>> factors;
};

// How expand_into and JacobianTerms::write run.
struct ExpandOptions {
    int num_threads = 0;                  // 0: default_threads()
    ExpandMode mode = ExpandMode::write;  // write (overwrite), zeroed (output known to be 0), accumulate (+=)
    bool* finite = nullptr;               // if set: whether every factor value read was finite
};

namespace detail {

inline bool is_letter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

// "ij" -> {"i", "j"}; "(ik)(jl)" -> {"ik", "jl"} (a fused axis lists its letters in C order).
inline std::vector<std::string> parse_axes(const std::string& spec, const std::string& what, const char* name) {
    std::vector<std::string> axes;
    auto fail = [&](const std::string& why) {
        fail_arg(what, std::string(name) + " \"" + spec + "\": " + why +
                           " (one letter per axis, a fused axis as its letters in parentheses, e.g. \"i(jk)\")");
    };
    for (std::size_t i = 0; i < spec.size(); ++i) {
        const char c = spec[i];
        if (c == '(') {
            const std::size_t close = spec.find(')', i + 1);
            if (close == std::string::npos) fail("unbalanced '('");
            const std::string group = spec.substr(i + 1, close - i - 1);
            if (group.empty()) fail("empty parentheses");
            for (char g : group)
                if (!is_letter(g)) fail(std::string("'") + g + "' inside parentheses is not a letter");
            axes.push_back(group);
            i = close;
        } else if (is_letter(c)) {
            axes.emplace_back(1, c);
        } else {
            fail(std::string("unexpected character '") + c + "'");
        }
    }
    return axes;
}

inline std::int64_t letter_size(const LetterSizes& sizes, char c, const std::string& what) {
    auto it = sizes.find(c);
    if (it == sizes.end()) fail_arg(what, std::string("letter '") + c + "' has no size in sizes");
    if (it->second < 0)
        fail_arg(what, std::string("letter '") + c + "' has negative size " + std::to_string(it->second));
    return it->second;
}

inline std::int64_t group_size(const std::string& group, const LetterSizes& sizes, const std::string& what) {
    std::int64_t n = 1;
    for (char c : group) n = checked_mul(n, letter_size(sizes, c, what));
    return n;
}

// An axis of the output: its letters and its element stride.
struct BoundAxis {
    std::string letters;
    std::int64_t stride;
};

// sum(terms) into `out` (of `shape` / `strides`, whose axes are the bound axes
// `axes`, possibly split into letters differently): the kernel's terms, one
// variable per letter on an axis, each with the sum of its strides.
template <class T>
void expand_bound(T* out, const Shape& shape, const Shape& strides, const std::vector<BoundAxis>& axes,
                  const LetterSizes& sizes, const std::vector<IndexTerm<T>>& terms, const ExpandOptions& opt,
                  const std::string& what) {
    // the letters on the axes, in order of first appearance, and each one's output stride
    std::string letters;
    Shape ostride;
    for (const auto& ax : axes) {
        std::int64_t mult = ax.stride;
        for (std::size_t i = ax.letters.size(); i-- > 0;) {  // C order inside a fused axis
            const char c = ax.letters[i];
            const std::int64_t sz = letter_size(sizes, c, what);
            std::size_t v = letters.find(c);
            if (v == std::string::npos) {
                v = letters.size();
                letters.push_back(c);
                ostride.push_back(0);
            }
            ostride[v] = checked_add(ostride[v], mult);
            mult = checked_mul(mult, sz > 0 ? sz : 1);
        }
    }
    const std::size_t V = letters.size();
    if (V > static_cast<std::size_t>(kMaxVars))
        throw std::length_error("tensorjac::" + what + ": " + std::to_string(V) + " letters on the result's axes (\"" +
                                letters + "\"); the kernel takes at most " + std::to_string(kMaxVars));
    Shape vsize(V);
    std::int64_t total = 1;
    for (std::size_t v = 0; v < V; ++v) total = checked_mul(total, vsize[v] = letter_size(sizes, letters[v], what));
    if (extent(shape, what, "result shape") > 0 && !out)
        fail_arg(what, "the result pointer is null for a result of shape " + shape_str(shape));
    const Range out_range = range_of(out, shape, strides);

    std::vector<Term<T>> kterms;
    kterms.reserve(terms.size());
    for (std::size_t t = 0; t < terms.size(); ++t) {
        const IndexTerm<T>& it = terms[t];
        const std::string tname = "term " + std::to_string(t);
        if (it.factors.size() > static_cast<std::size_t>(kMaxFactors))
            throw std::length_error("tensorjac::" + what + ": " + tname + " has " + std::to_string(it.factors.size()) +
                                    " factors; the kernel takes at most " + std::to_string(kMaxFactors) +
                                    " (multiply some of them first)");
        Term<T> k;
        k.coef = it.coef;
        k.size = vsize;
        k.out_stride = ostride;
        for (std::size_t f = 0; f < it.factors.size(); ++f) {
            const Operand<T>& op = it.factors[f];
            const std::string fname = tname + ", factor " + std::to_string(f) + " (\"" + op.letters + "\")";
            Shape fshape;
            for (char c : op.letters) {
                if (letters.find(c) == std::string::npos)
                    fail_arg(what, fname + ": letter '" + std::string(1, c) + "' is on no axis of the result (\"" +
                                       letters + "\"); contract it before expanding");
                fshape.push_back(letter_size(sizes, c, what));
            }
            Shape fst = op.strides.empty() ? c_strides(fshape) : op.strides;
            if (fst.size() != op.letters.size())
                fail_arg(what, fname + ": " + std::to_string(op.strides.size()) + " strides " + shape_str(op.strides) +
                                   " for " + std::to_string(op.letters.size()) + " letters");
            if (!op.data && total > 0) fail_arg(what, fname + ": data is null");
            if (total > 0 && overlap(out_range, range_of(op.data, fshape, fst)))
                fail_arg(what, fname + " overlaps the result in memory");
            Factor<T> kf;
            kf.data = op.data;
            kf.stride.assign(V, 0);
            for (std::size_t a = 0; a < op.letters.size(); ++a) {
                const std::size_t v = letters.find(op.letters[a]);
                kf.stride[v] = checked_add(kf.stride[v], fst[a]);
            }
            k.factors.push_back(std::move(kf));
        }
        kterms.push_back(std::move(k));
    }
    expand(out, shape, strides, kterms, threads(opt.num_threads), opt.mode, opt.finite);
}

}  // namespace detail

// Writes sum(terms) into `out`, an array whose axes are labelled by `axes`
// (one letter per axis, a fused axis as "(ik)": its letters in C order) with
// element `strides` (one per axis; empty: C order).  The shape is given by the
// letters' sizes; the strides must address distinct elements (not checked,
// beyond a zero stride).  A letter on several axes is a Kronecker delta
// between them (only its diagonal is written; the rest is zero in write
// mode).  Example,
// the Jacobian of A X B with respect to X in the tensor layout,
// J[i, j, k, l] = A[i, k] B[l, j]:
//
//   tensorjac::expand_into<double>(J, "ijkl", {}, {{'i', m}, {'j', q}, {'k', n}, {'l', p}},
//                                  {{1.0, {{A, "ik"}, {B, "lj"}}}});
template <class T>
void expand_into(T* out, const std::string& axes, const Shape& strides, const LetterSizes& sizes,
                 const std::vector<IndexTerm<T>>& terms, const ExpandOptions& options = {}) {
    const std::string what = "expand_into";
    const std::vector<std::string> groups = detail::parse_axes(axes, what, "axes");
    Shape shape;
    for (const auto& g : groups) shape.push_back(detail::group_size(g, sizes, what));
    const Shape st = detail::result_strides(shape, strides, what);
    std::vector<detail::BoundAxis> bound;
    for (std::size_t a = 0; a < groups.size(); ++a) bound.push_back({groups[a], st[a]});
    detail::expand_bound(out, shape, st, bound, sizes, terms, options, what);
}

// The Jacobian of F with respect to X as a sum of index-expression terms, in
// the notation of tensorjac.Deriv: F's axes and X's axes are letter strings
// ("ij", "(ik)(jl)"), a letter shared by an axis of F and one of X is a
// Kronecker delta, and each term is coef times factors indexed by letters.
// write() produces any layout directly, without a temporary.
//
//   // d(A X B)/dX: T[i, j, k, l] = A[i, k] B[l, j], A (m x n), X (n x p), B (p x q)
//   tensorjac::JacobianTerms<double> d("ij", "kl", {{'i', m}, {'j', q}, {'k', n}, {'l', p}});
//   d.add(1.0, {{A, "ik"}, {B, "lj"}});
//   std::vector<double> J(d.size(tensorjac::Layout::vec));
//   d.write(J.data(), tensorjac::Layout::vec);      // (m q) x (n p): kron(B^T, A)
template <class T>
class JacobianTerms {
public:
    JacobianTerms(const std::string& out_axes, const std::string& in_axes, LetterSizes sizes)
        : sizes_(std::move(sizes)) {
        const std::string what = "JacobianTerms";
        out_ = detail::parse_axes(out_axes, what, "out_axes");
        in_ = detail::parse_axes(in_axes, what, "in_axes");
        for (const auto& g : out_) out_shape_.push_back(detail::group_size(g, sizes_, what));
        for (const auto& g : in_) in_shape_.push_back(detail::group_size(g, sizes_, what));
        (void)checked_mul(detail::extent(out_shape_, what, "out_shape"), detail::extent(in_shape_, what, "in_shape"));
    }

    // Adds the term coef * factors[0] * factors[1] * ... (checked when written).
    JacobianTerms& add(T coef, std::vector<Operand<T>> factors) {
        terms_.push_back({coef, std::move(factors)});
        return *this;
    }

    const std::vector<IndexTerm<T>>& terms() const { return terms_; }
    const Shape& out_shape() const { return out_shape_; }  // F's shape
    const Shape& in_shape() const { return in_shape_; }    // X's shape
    Shape shape(Layout layout) const { return jacobian_shape(layout, out_shape_, in_shape_); }
    std::int64_t size(Layout layout) const { return detail::extent(shape(layout), "JacobianTerms::size", "shape"); }

    // J = sum of the terms (mode accumulate: J += ...), J of shape(layout),
    // C-contiguous or with element `strides` (one per dimension).
    void write(T* J, Layout layout, const Shape& strides, const ExpandOptions& options = {}) const {
        const std::string what = "JacobianTerms::write";
        const detail::Placement pl = detail::placement(layout, out_shape_, in_shape_, what);
        const Shape st = detail::result_strides(pl.shape, strides, what);
        std::vector<detail::BoundAxis> bound;
        for (std::size_t p = 0; p < out_.size(); ++p)
            bound.push_back({out_[p], checked_mul(pl.out[p].mult, st[pl.out[p].dim])});
        for (std::size_t r = 0; r < in_.size(); ++r)
            bound.push_back({in_[r], checked_mul(pl.in[r].mult, st[pl.in[r].dim])});
        detail::expand_bound(J, pl.shape, st, bound, sizes_, terms_, options, what);
    }
    void write(T* J, Layout layout, const ExpandOptions& options = {}) const { write(J, layout, Shape{}, options); }

    // A fresh C-contiguous Jacobian in `layout`.
    std::vector<T> evaluate(Layout layout, int num_threads = 0) const {
        std::vector<T> J(static_cast<std::size_t>(size(layout)));
        ExpandOptions o;
        o.num_threads = num_threads;
        o.mode = ExpandMode::zeroed;  // value-initialised
        write(J.data(), layout, o);
        return J;
    }

private:
    LetterSizes sizes_;
    std::vector<std::string> out_, in_;
    Shape out_shape_, in_shape_;
    std::vector<IndexTerm<T>> terms_;
};

// ============================================================================ Kronecker matvec

// A read-only matrix view: element (i, j) at data[i * row_stride + j * col_stride].
template <class T>
struct MatrixRef {
    const T* data = nullptr;
    std::int64_t rows = 0, cols = 0;
    std::int64_t row_stride = 0, col_stride = 1;

    MatrixRef() = default;
    // A C-contiguous (row-major) rows x cols matrix.
    MatrixRef(const T* d, std::int64_t r, std::int64_t c) : data(d), rows(r), cols(c), row_stride(c), col_stride(1) {}
    MatrixRef(const T* d, std::int64_t r, std::int64_t c, std::int64_t rs, std::int64_t cs)
        : data(d), rows(r), cols(c), row_stride(rs), col_stride(cs) {}
    // A column-major (Fortran, Eigen's default) rows x cols matrix.
    static MatrixRef col_major(const T* d, std::int64_t r, std::int64_t c) { return MatrixRef(d, r, c, 1, r); }
};

namespace detail {

struct KronSizes {
    std::int64_t R = 1, C = 1, work = 0;  // prod rows, prod cols, workspace elements
};

template <class T>
KronSizes kron_sizes(const std::vector<MatrixRef<T>>& factors, std::int64_t nb, const std::string& what) {
    if (factors.empty()) fail_arg(what, "factors is empty; give at least one matrix");
    if (nb < 0) fail_arg(what, "negative batch size nb = " + std::to_string(nb));
    KronSizes s;
    const std::size_t k = factors.size();
    for (std::size_t t = 0; t < k; ++t) {
        const MatrixRef<T>& a = factors[t];
        if (a.rows < 0 || a.cols < 0)
            fail_arg(what, "factors[" + std::to_string(t) + "] has negative shape " + shape_str({a.rows, a.cols}));
        s.R = checked_mul(s.R, a.rows);
        s.C = checked_mul(s.C, a.cols);
    }
    (void)checked_mul(nb, s.R);
    (void)checked_mul(nb, s.C);
    // after mode t (t = k-1 .. 1) the intermediate is (nb, c_0..c_{t-1}, r_t..r_{k-1})
    std::int64_t biggest = 0;
    for (std::size_t t = k; t-- > 1;) {
        std::int64_t n = nb;
        for (std::size_t u = 0; u < t; ++u) n = checked_mul(n, factors[u].cols);
        for (std::size_t u = t; u < k; ++u) n = checked_mul(n, factors[u].rows);
        biggest = std::max(biggest, n);
    }
    s.work = k >= 3 ? checked_mul(biggest, 2) : (k == 2 ? biggest : 0);
    return s;
}

// out[p, a, s] = sum_b A[a, b] in[p, b, s] for p < P, a < A.rows, s < S (b in order).
template <class T>
void kron_mode(const T* in, T* out, std::int64_t P, std::int64_t S, const MatrixRef<T>& A, int nthreads) {
    const std::int64_t r = A.rows, c = A.cols;
    const std::int64_t rows = checked_mul(P, r);
    const std::int64_t cs = A.col_stride;
    const std::int64_t work = std::max<std::int64_t>(1, checked_mul(c, S));  // per output row
    parallel_blocks(rows, nthreads, work, [&](std::int64_t lo, std::int64_t hi, int) {
        for (std::int64_t q = lo; q < hi; ++q) {
            const std::int64_t p = q / r, a = q - p * r;
            const T* x = in + p * c * S;
            const T* w = A.data + a * A.row_stride;
            T* o = out + q * S;
            if (S == 1) {  // a dot product: four partial sums, combined in a fixed order
                T s0{}, s1{}, s2{}, s3{};
                std::int64_t b = 0;
                for (; b + 4 <= c; b += 4) {
                    s0 += w[b * cs] * x[b];
                    s1 += w[(b + 1) * cs] * x[b + 1];
                    s2 += w[(b + 2) * cs] * x[b + 2];
                    s3 += w[(b + 3) * cs] * x[b + 3];
                }
                T tail{};
                for (; b < c; ++b) tail += w[b * cs] * x[b];
                o[0] = ((s0 + s1) + (s2 + s3)) + tail;
            } else {
                for (std::int64_t s = 0; s < S; ++s) o[s] = T(0);
                for (std::int64_t b = 0; b < c; ++b) {
                    const T wb = w[b * cs];
                    const T* xb = x + b * S;
                    for (std::int64_t s = 0; s < S; ++s) o[s] += wb * xb[s];
                }
            }
        }
    });
}

}  // namespace detail

// Elements of scratch kron_matvec needs for these factors and nb vectors:
// none for one factor, one intermediate result for two, two for more.
template <class T>
std::int64_t kron_matvec_workspace(const std::vector<MatrixRef<T>>& factors, std::int64_t nb) {
    return detail::kron_sizes(factors, nb, "kron_matvec_workspace").work;
}

// y[b] = (A1 kron A2 kron ... kron Ak) x[b] for b < nb, never forming the
// Kronecker product: x holds nb contiguous vectors of C = prod(cols) elements,
// y receives nb vectors of R = prod(rows) (so y = x @ kron(A1, ..., Ak).T, as
// tensorjac.kron_matvec).  One mode at a time, the last first (the vec
// trick): about nb * sum_t (intermediate size * cols_t) multiply-adds.  Every
// output element is a sum over the column index in a fixed order (the same
// for any thread count).  `work`: kron_matvec_workspace(factors, nb) elements
// of scratch, or nullptr to allocate it here.  y must not overlap x, the
// factors or work.
template <class T>
void kron_matvec(const std::vector<MatrixRef<T>>& factors, const T* x, std::int64_t nb, T* y, int num_threads = 0,
                 T* work = nullptr) {
    const std::string what = "kron_matvec";
    const detail::KronSizes s = detail::kron_sizes(factors, nb, what);
    const std::int64_t ylen = checked_mul(nb, s.R), xlen = checked_mul(nb, s.C);
    if (ylen == 0) return;
    if (!y) detail::fail_arg(what, "y is null for " + std::to_string(nb) + " vectors of " + std::to_string(s.R));
    if (xlen > 0 && !x)
        detail::fail_arg(what, "x is null for " + std::to_string(nb) + " vectors of " + std::to_string(s.C));
    const detail::Range yr = detail::range_of(y, {ylen}, {1});
    if (detail::overlap(yr, detail::range_of(x, {xlen}, {1}))) detail::fail_arg(what, "y overlaps x in memory");
    for (std::size_t t = 0; t < factors.size(); ++t) {
        const MatrixRef<T>& a = factors[t];
        if (!a.data && a.rows > 0 && a.cols > 0)
            detail::fail_arg(what, "factors[" + std::to_string(t) + "].data is null");
        if (detail::overlap(yr, detail::range_of(a.data, {a.rows, a.cols}, {a.row_stride, a.col_stride})))
            detail::fail_arg(what, "y overlaps factors[" + std::to_string(t) + "] in memory");
    }
    std::vector<T> owned;
    if (s.work > 0) {
        if (!work) {
            owned.assign(static_cast<std::size_t>(s.work), T(0));
            work = owned.data();
        } else {
            const detail::Range wr = detail::range_of(work, {s.work}, {1});
            bool clash = detail::overlap(wr, yr) || detail::overlap(wr, detail::range_of(x, {xlen}, {1}));
            for (const MatrixRef<T>& a : factors)
                clash = clash ||
                        detail::overlap(wr, detail::range_of(a.data, {a.rows, a.cols}, {a.row_stride, a.col_stride}));
            if (clash) detail::fail_arg(what, "work overlaps x, y or a factor in memory");
        }
    }
    const int nt = detail::threads(num_threads);
    const std::size_t k = factors.size();
    const std::int64_t half = k >= 3 ? s.work / 2 : s.work;
    // mode t reads (P, c_t, S) and writes (P, r_t, S), P = nb c_0..c_{t-1}, S = r_{t+1}..r_{k-1};
    // a zero extent empties the intermediates after it, and its own mode writes zeros
    std::int64_t S = 1;
    const T* src = x;
    for (std::size_t t = k; t-- > 0;) {
        std::int64_t P = nb;
        for (std::size_t u = 0; u < t; ++u) P *= factors[u].cols;  // no overflow: a factor of nb * C
        T* dst = t == 0 ? y : work + static_cast<std::int64_t>((k - 1 - t) % 2) * half;
        detail::kron_mode(src, dst, P, S, factors[t], nt);
        S *= factors[t].rows;
        src = dst;
    }
}

// ============================================================================ finite differences

namespace fd {

// The finite-difference formulas of tensorjac.fd.jacobian(method=...).
enum class Method {
    forward,    // (f(x + h e_n) - f(x)) / h, error O(h)
    backward,   // (f(x) - f(x - h e_n)) / h, error O(h)
    central,    // (f(x + h e_n) - f(x - h e_n)) / 2h, error O(h^2)
    richardson  // adaptive Richardson extrapolation of central differences at h 2^-l, l < 6
};

// A linear stencil (see fd.hpp): row k of entry n evaluates f at
// x + sigma[k] h[n] e_n, and J[:, n] = (sum_k c[k] f_k + c0 f(x)) / h[n], with
// the truncation estimate |sum_k d[k] f_k + d0 f(x)| / h[n] when d is given.
// For Method::richardson, `levels` > 0 and the kernel picks the best
// extrapolation per entry (c, d unused).  Default steps are
// eps^step_power * |x[n]| rounded to a power of two (default_steps).
struct Stencil {
    std::vector<double> sigma, c, d;
    double c0 = 0, d0 = 0;
    double step_power = 0.5;
    int levels = 0;      // > 0: adaptive Richardson over this many central differences
    double ratio = 2.0;  // step ratio between Richardson levels
    std::int64_t K() const { return static_cast<std::int64_t>(sigma.size()); }
};

// The stencil of `method`; with_error adds the evaluations of an empirical
// truncation estimate (forward and backward: D(2h) - D(h); central: (D(2h) -
// D(h)) / 3), the same formulas as the Python package.
inline Stencil stencil(Method method, bool with_error = true) {
    Stencil s;
    switch (method) {
        case Method::forward:
        case Method::backward: {
            const double g = method == Method::forward ? 1.0 : -1.0;
            s.step_power = 0.5;
            if (with_error) {
                s.sigma = {g, 2 * g};
                s.c = {g, 0.0};
                s.c0 = -g;
                s.d = {-g, 0.5 * g};
                s.d0 = 0.5 * g;
            } else {
                s.sigma = {g};
                s.c = {g};
                s.c0 = -g;
            }
            return s;
        }
        case Method::central:
            s.step_power = 1.0 / 3.0;
            if (with_error) {
                s.sigma = {1.0, -1.0, 2.0, -2.0};
                s.c = {0.5, -0.5, 0.0, 0.0};
                s.d = {-0.5 / 3.0, 0.5 / 3.0, 0.25 / 3.0, -0.25 / 3.0};
            } else {
                s.sigma = {1.0, -1.0};
                s.c = {0.5, -0.5};
            }
            return s;
        case Method::richardson: {
            s.levels = 6;
            s.ratio = 2.0;
            s.step_power = 1.0 / (2 * s.levels + 1);
            double f = 1.0;
            for (int l = 0; l < s.levels; ++l, f /= s.ratio) {
                s.sigma.push_back(f);
                s.sigma.push_back(-f);
            }
            s.c.assign(s.sigma.size(), 0.0);
            return s;
        }
    }
    tensorjac::detail::fail_arg("fd::stencil", "unknown method " + std::to_string(static_cast<int>(method)));
}

// The default steps of tensorjac.fd: h[n] = eps^p * s[n] rounded to a power of
// two (x + h is exact), s[n] = |x[n]|, or min(median of the nonzero |x|, 1)
// where x[n] == 0, and at least 2^20 tiny / eps^p (1/h stays far from
// overflow); eps and tiny are the epsilon and the smallest normal of T's real type.
template <class T>
std::vector<double> default_steps(const T* x, std::int64_t N, double step_power) {
    using R = real_t<T>;
    if (N < 0) tensorjac::detail::fail_arg("fd::default_steps", "negative N = " + std::to_string(N));
    if (N > 0 && !x) tensorjac::detail::fail_arg("fd::default_steps", "x is null");
    const double eps = std::numeric_limits<R>::epsilon();
    const double ep = std::pow(eps, step_power);
    const double lo = static_cast<double>(std::numeric_limits<R>::min()) * std::ldexp(1.0, 20) / ep;
    std::vector<double> a(static_cast<std::size_t>(N)), nz;
    for (std::int64_t n = 0; n < N; ++n) {
        a[static_cast<std::size_t>(n)] = static_cast<double>(std::abs(x[n]));
        if (a[static_cast<std::size_t>(n)] > 0) nz.push_back(a[static_cast<std::size_t>(n)]);
    }
    double floor = 1.0;
    if (!nz.empty()) {  // numpy's median: the mean of the two middle values for an even count
        std::sort(nz.begin(), nz.end());
        const std::size_t h = nz.size() / 2;
        const double med = nz.size() % 2 ? nz[h] : (nz[h - 1] + nz[h]) / 2;
        floor = std::min(med, 1.0);
    }
    std::vector<double> steps(static_cast<std::size_t>(N));
    for (std::size_t n = 0; n < steps.size(); ++n) {
        const double s = std::max(a[n] > 0 ? a[n] : floor, lo);
        steps[n] = std::exp2(std::nearbyint(std::log2(ep * s)));
    }
    return steps;
}

// How fd::jacobian runs.
struct Options {
    Method method = Method::central;
    const double* step = nullptr;  // N positive steps, or nullptr for default_steps
    Layout layout = Layout::matrix;
    Shape out_shape, in_shape;  // F's and x's shapes for the layout (empty: {M} and {N})
    std::int64_t block = 0;     // entries perturbed per block (0: stack and outputs of ~2^22 elements)
    int num_threads = 0;        // threads of the kernels (f itself is called on the calling thread)
};

// What fd::jacobian did.
struct Result {
    std::int64_t evaluations = 0;  // calls of f
    std::int64_t nonfinite = 0;    // entries J[m, n] not finite although f(x)[m] is
};

// The Jacobian of f: T^N -> T^M at x by finite differences, written into J
// (in opts.layout; C-contiguous of jacobian_shape(layout, out_shape,
// in_shape)), and, if err is not null, a per-entry error estimate into err
// (same shape): the truncation estimate of the stencil plus the rounding
// error of its function values, plus eps * max_m |J[m, n]|.  f is any callable
// `void(const T* x, T* y)` that writes f(x)'s M values; it is called on the
// calling thread, 1 + N * K times (K evaluations per entry), on perturbed
// copies of x.  T: float, double or a complex type (holomorphic f).
// Unlike tensorjac.fd.jacobian, steps are not adapted where the stencil
// leaves f's domain: such entries come out non-finite and are counted.
template <class T, class F>
Result jacobian(F&& f, const T* x, std::int64_t N, std::int64_t M, T* J, real_t<T>* err = nullptr,
                const Options& opts = {}) {
    using tensorjac::detail::fail_arg;
    using tensorjac::detail::overlap;
    using tensorjac::detail::range_of;
    using tensorjac::detail::shape_str;
    using Rl = real_t<T>;
    const std::string what = "fd::jacobian";
    if (N < 0 || M < 0) fail_arg(what, "negative sizes N = " + std::to_string(N) + ", M = " + std::to_string(M));
    const Shape in_shape = opts.in_shape.empty() ? Shape{N} : opts.in_shape;
    const Shape out_shape = opts.out_shape.empty() ? Shape{M} : opts.out_shape;
    if (tensorjac::detail::extent(in_shape, what, "in_shape") != N ||
        tensorjac::detail::extent(out_shape, what, "out_shape") != M)
        fail_arg(what, "in_shape " + shape_str(in_shape) + " and out_shape " + shape_str(out_shape) +
                           " must have N = " + std::to_string(N) + " and M = " + std::to_string(M) + " entries");
    const JacobianOffsets off = jacobian_offsets(opts.layout, out_shape, in_shape);
    const std::int64_t total = checked_mul(N, M);
    if (N > 0 && !x) fail_arg(what, "x is null");
    if (total > 0 && !J) fail_arg(what, "J is null");
    const tensorjac::detail::Range jr = range_of(J, {total}, {1});
    if (overlap(jr, range_of(x, {N}, {1}))) fail_arg(what, "J overlaps x in memory");
    if (err && overlap(range_of(err, {total}, {1}), jr)) fail_arg(what, "err overlaps J in memory");

    const Stencil st = stencil(opts.method, err != nullptr);
    const std::int64_t K = st.K();
    std::vector<double> h;
    if (opts.step) {
        h.assign(opts.step, opts.step + N);
        for (std::int64_t n = 0; n < N; ++n)
            if (!(std::isfinite(h[n]) && h[n] > 0))
                fail_arg(what,
                         "step[" + std::to_string(n) + "] = " + std::to_string(h[n]) + " must be positive and finite");
    } else {
        h = default_steps(x, N, st.step_power);
    }
    double smallest = std::abs(st.sigma[0]);
    for (double s : st.sigma) smallest = std::min(smallest, std::abs(s));
    for (std::int64_t n = 0; n < N; ++n) {
        const T moved = x[n] + static_cast<Rl>(smallest * h[n]);
        if (moved == x[n])
            fail_arg(what, "step " + std::to_string(smallest * h[n]) + " is too small for x[" + std::to_string(n) +
                               "]: x + h == x; use a larger step");
    }

    Result res;
    std::vector<T> y0(static_cast<std::size_t>(M));
    f(x, y0.data());
    res.evaluations = 1;
    if (N == 0 || M == 0) return res;

    const int nt = tensorjac::detail::threads(opts.num_threads);
    const std::int64_t per_entry = checked_mul(K, checked_add(N, M));
    std::int64_t B = opts.block > 0 ? opts.block : std::max<std::int64_t>(1, (std::int64_t(1) << 22) / per_entry);
    B = std::min(B, N);
    std::vector<T> stack(static_cast<std::size_t>(checked_mul(checked_mul(B, K), N)));
    std::vector<T> ys(static_cast<std::size_t>(checked_mul(checked_mul(B, K), M)));
    std::vector<double> stats(static_cast<std::size_t>(checked_mul(B, kStats)));
    const double eps = std::numeric_limits<Rl>::epsilon();
    const double tiny = std::numeric_limits<Rl>::denorm_min();
    Rule rule;
    rule.K = K;
    rule.c = st.c.data();
    rule.c0 = st.c0;
    rule.d = st.d.empty() ? nullptr : st.d.data();
    rule.d0 = st.d0;
    rule.sigma = st.sigma.data();
    rule.eps = eps;
    rule.tiny = tiny;
    for (std::int64_t n0 = 0; n0 < N; n0 += B) {
        const std::int64_t n1 = std::min(N, n0 + B);
        build_stack(x, N, h.data(), st.sigma.data(), K, n0, n1, false, stack.data(), nt);
        for (std::int64_t r = 0; r < (n1 - n0) * K; ++r) f(stack.data() + r * N, ys.data() + r * M);
        res.evaluations += (n1 - n0) * K;
        if (st.levels > 0)
            combine_richardson<T>(ys.data(), y0.data(), M, n0, n1, h.data(), st.levels, st.ratio, eps, tiny,
                                  off.out.data(), off.in.data(), J, err, stats.data(), nt);
        else
            combine<T, false>(ys.data(), y0.data(), M, n0, n1, h.data(), rule, off.out.data(), off.in.data(), J, err,
                              stats.data(), nt);
        for (std::int64_t b = 0; b < n1 - n0; ++b) {
            const double* sb = stats.data() + b * kStats;
            res.nonfinite += static_cast<std::int64_t>(sb[3]);
            if (err) {  // the rounding error of the largest entry of the column
                const std::int64_t n = n0 + b;
                const Rl add = static_cast<Rl>(eps * sb[0]);
                for (std::int64_t m = 0; m < M; ++m) err[off.out[m] + off.in[n]] += add;
            }
        }
    }
    return res;
}

}  // namespace fd

}  // namespace tensorjac
