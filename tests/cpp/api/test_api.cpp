// Unit tests of the documented C++ API (<tensorjac/tensorjac.hpp>, api.hpp):
// layouts, JacobianTerms / expand_into, kron_matvec and fd::jacobian, against
// naive loops and closed forms written independently of the implementation
// (positions from the formulas of docs/layouts.md, Kronecker products formed
// entry by entry, analytic derivatives).  No framework: CHECK records a
// failure and carries on; the exit code is nonzero when any check failed.
//
// Built against the *installed* CMake package (find_package(tensorjac)), with
// and without OpenMP, by tests/test_cpp_package.py.
#include <algorithm>
#include <cmath>
#include <complex>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <tensorjac/tensorjac.hpp>

#include "../check.hpp"

#ifndef TENSORJAC_CPP_API
#error "the umbrella header does not define TENSORJAC_CPP_API"
#endif

namespace tj = tensorjac;
using i64 = std::int64_t;
using Shape = std::vector<i64>;

// CHECK_THROWS(Type, expr, "fragment"): expr throws Type (or derived) whose message contains fragment.
#define CHECK_THROWS(Type, expr, fragment)                                                                          \
    do {                                                                                                            \
        std::string msg_ = "<no exception>";                                                                        \
        bool caught_ = false;                                                                                       \
        try {                                                                                                       \
            expr;                                                                                                   \
        } catch (const Type& e_) {                                                                                  \
            caught_ = true;                                                                                         \
            msg_ = e_.what();                                                                                       \
        } catch (const std::exception& e_) {                                                                        \
            msg_ = std::string("other exception: ") + e_.what();                                                    \
        }                                                                                                           \
        ++g_checks;                                                                                                 \
        if (!caught_ || msg_.find(fragment) == std::string::npos) {                                                 \
            ++g_failures;                                                                                           \
            std::printf("  FAIL %s:%d: %s should throw %s containing \"%s\"; got: %s\n", __FILE__, __LINE__, #expr, \
                        #Type, fragment, msg_.c_str());                                                             \
        }                                                                                                           \
    } while (0)

// ----------------------------------------------------------------------------- helpers

static i64 prod(const Shape& s) {
    i64 p = 1;
    for (i64 x : s) p *= x;
    return p;
}

// multi-index of flat C-order index e in shape
static Shape unravel_c(i64 e, const Shape& shape) {
    Shape idx(shape.size());
    for (std::size_t d = shape.size(); d-- > 0;) {
        idx[d] = e % shape[d];
        e /= shape[d];
    }
    return idx;
}

static i64 ravel_c(const Shape& idx, const Shape& shape) {
    i64 e = 0;
    for (std::size_t d = 0; d < shape.size(); ++d) e = e * shape[d] + idx[d];
    return e;
}

static i64 ravel_f(const Shape& idx, const Shape& shape) {
    i64 e = 0;
    for (std::size_t d = shape.size(); d-- > 0;) e = e * shape[d] + idx[d];
    return e;
}

static Shape cat(Shape a, const Shape& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

static Shape reversed(Shape a) {
    std::reverse(a.begin(), a.end());
    return a;
}

const tj::Layout kLayouts[] = {tj::Layout::tensor, tj::Layout::gradient, tj::Layout::numerator, tj::Layout::matrix,
                               tj::Layout::vec};

// Expected shape and flat position of T[mi, ni] in a C-contiguous Jacobian, from the table of docs/layouts.md.
static Shape ref_shape(tj::Layout l, const Shape& out, const Shape& in) {
    switch (l) {
        case tj::Layout::tensor: return cat(out, in);
        case tj::Layout::gradient: return cat(in, out);
        case tj::Layout::numerator: return cat(out, reversed(in));
        default: return {prod(out), prod(in)};
    }
}

static i64 ref_pos(tj::Layout l, const Shape& out, const Shape& in, const Shape& mi, const Shape& ni) {
    switch (l) {
        case tj::Layout::tensor: return ravel_c(cat(mi, ni), cat(out, in));
        case tj::Layout::gradient: return ravel_c(cat(ni, mi), cat(in, out));
        case tj::Layout::numerator: return ravel_c(cat(mi, reversed(ni)), cat(out, reversed(in)));
        case tj::Layout::matrix: return ravel_c(mi, out) * prod(in) + ravel_c(ni, in);
        case tj::Layout::vec: return ravel_f(mi, out) * prod(in) + ravel_f(ni, in);
    }
    return -1;
}

// The expected Jacobian: T(mi, ni) placed by ref_pos.
template <class T>
static std::vector<T> ref_jacobian(tj::Layout l, const Shape& out, const Shape& in,
                                   const std::function<T(const Shape&, const Shape&)>& entry) {
    std::vector<T> J(static_cast<std::size_t>(prod(out) * prod(in)));
    for (i64 m = 0; m < prod(out); ++m)
        for (i64 n = 0; n < prod(in); ++n) {
            const Shape mi = unravel_c(m, out), ni = unravel_c(n, in);
            J[static_cast<std::size_t>(ref_pos(l, out, in, mi, ni))] = entry(mi, ni);
        }
    return J;
}

template <class T>
static double max_abs_diff(const std::vector<T>& a, const std::vector<T>& b) {
    if (a.size() != b.size()) return INFINITY;
    double w = 0;
    for (std::size_t i = 0; i < a.size(); ++i) w = std::max(w, static_cast<double>(std::abs(a[i] - b[i])));
    return w;
}

template <class T>
static bool bitwise_equal(const std::vector<T>& a, const std::vector<T>& b) {
    return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

// ----------------------------------------------------------------------------- layouts

static void test_layouts() {
    const std::vector<std::pair<Shape, Shape>> cases = {{{2, 3}, {4, 5, 2}}, {{}, {3}},     {{3}, {}},    {{}, {}},
                                                        {{2, 1, 3}, {3, 2}}, {{0, 2}, {3}}, {{2}, {3, 0}}};
    for (const auto& c : cases) {
        const Shape& out = c.first;
        const Shape& in = c.second;
        for (tj::Layout l : kLayouts) {
            CHECK(tj::jacobian_shape(l, out, in) == ref_shape(l, out, in));
            const tj::JacobianOffsets off = tj::jacobian_offsets(l, out, in);
            CHECK(off.shape == ref_shape(l, out, in));
            CHECK(static_cast<i64>(off.out.size()) == prod(out) && static_cast<i64>(off.in.size()) == prod(in));
            // Fortran-order strides of the result: the offsets follow
            const Shape shape = ref_shape(l, out, in);
            Shape fst(shape.size());
            i64 s = 1;
            for (std::size_t d = 0; d < shape.size(); ++d) {
                fst[d] = s;
                s *= std::max<i64>(shape[d], 1);
            }
            const tj::JacobianOffsets foff = tj::jacobian_offsets(l, out, in, fst);
            bool ok = true, fok = true;
            for (i64 m = 0; m < prod(out); ++m)
                for (i64 n = 0; n < prod(in); ++n) {
                    const Shape mi = unravel_c(m, out), ni = unravel_c(n, in);
                    const i64 pos = ref_pos(l, out, in, mi, ni);
                    ok = ok && off.out[m] + off.in[n] == pos;
                    const Shape ri = unravel_c(pos, shape);
                    fok = fok && foff.out[m] + foff.in[n] == ravel_f(ri, shape);
                }
            CHECK(ok);
            CHECK(fok);
        }
    }
    for (tj::Layout l : kLayouts) CHECK(tj::layout_from_name(tj::layout_name(l)) == l);
    CHECK_THROWS(std::invalid_argument, tj::layout_from_name("diagonal"), "expected one of tensor, gradient");
    CHECK_THROWS(std::invalid_argument, tj::jacobian_shape(tj::Layout::tensor, {2, -1}, {3}), "(2, -1)");
    CHECK_THROWS(std::invalid_argument, tj::jacobian_offsets(tj::Layout::tensor, {2}, {3}, {1}),
                 "strides (1,) do not match the result's shape (2, 3)");
    CHECK_THROWS(std::overflow_error, tj::jacobian_shape(tj::Layout::matrix, {i64(1) << 40}, {i64(1) << 40}),
                 "overflows");
}

// ----------------------------------------------------------------------------- JacobianTerms / expand_into

// d(A X B)/dX = A[i, k] B[l, j] in every layout, against loops; also a coefficient and float/complex types.
template <class T>
static void sandwich_case(double tol, double coef_tol) {
    const i64 m = 3, n = 4, p = 5, q = 2;
    const auto A = random_vec<T>(m * n, 1), B = random_vec<T>(p * q, 2);
    tj::JacobianTerms<T> d("ij", "kl", {{'i', m}, {'j', q}, {'k', n}, {'l', p}});
    d.add(T(1), {{A.data(), "ik"}, {B.data(), "lj"}});
    CHECK(d.out_shape() == (Shape{m, q}) && d.in_shape() == (Shape{n, p}));
    CHECK(d.terms().size() == 1);
    for (tj::Layout l : kLayouts) {
        const auto want = ref_jacobian<T>(l, {m, q}, {n, p}, [&](const Shape& mi, const Shape& ni) {
            return A[mi[0] * n + ni[0]] * B[ni[1] * q + mi[1]];
        });
        CHECK(d.shape(l) == ref_shape(l, {m, q}, {n, p}));
        CHECK(d.size(l) == m * q * n * p);
        const std::vector<T> got = d.evaluate(l);
        CHECK(max_abs_diff(got, want) <= tol);
        // write mode into garbage: every entry written
        std::vector<T> J(want.size(), T(7));
        d.write(J.data(), l);
        CHECK(max_abs_diff(J, want) <= tol);
    }
    // a coefficient
    tj::JacobianTerms<T> d2("ij", "kl", {{'i', m}, {'j', q}, {'k', n}, {'l', p}});
    d2.add(T(-2.5), {{A.data(), "ik"}, {B.data(), "lj"}});
    const auto want2 = ref_jacobian<T>(tj::Layout::vec, {m, q}, {n, p}, [&](const Shape& mi, const Shape& ni) {
        return T(-2.5) * A[mi[0] * n + ni[0]] * B[ni[1] * q + mi[1]];
    });
    // (coef * A) * B or (coef * B) * A: the kernel's order depends on the loop nest
    CHECK(max_abs_diff(d2.evaluate(tj::Layout::vec), want2) <= coef_tol);
}

static void test_sandwich() {
    sandwich_case<double>(0.0, 1e-15);  // one product per entry: exact
    sandwich_case<float>(0.0, 1e-6);
    sandwich_case<std::complex<double>>(1e-15, 1e-14);
    sandwich_case<std::complex<float>>(1e-6, 1e-5);
    // the vec layout is the Magnus-Neudecker kron(B^T, A)
    const i64 m = 2, n = 3, p = 2, q = 3;
    const auto A = random_vec<double>(m * n, 3), B = random_vec<double>(p * q, 4);
    tj::JacobianTerms<double> d("ij", "kl", {{'i', m}, {'j', q}, {'k', n}, {'l', p}});
    d.add(1.0, {{A.data(), "ik"}, {B.data(), "lj"}});
    const auto J = d.evaluate(tj::Layout::vec);
    bool ok = true;
    for (i64 r = 0; r < m * q; ++r)
        for (i64 c = 0; c < n * p; ++c) {  // kron(Bt, A)[r, c] = Bt[r / m, c / n] A[r % m, c % n]
            const double want = B[(c / n) * q + r / m] * A[(r % m) * n + c % n];
            ok = ok && J[static_cast<std::size_t>(r * n * p + c)] == want;
        }
    CHECK(ok);
}

// Fused axes and deltas: d kron(A, B)/dA = delta(i,i') delta(j,j') B[k, l], "(ik)(jl)" wrt "ij".
static void test_fused_axes_and_deltas() {
    const i64 m = 2, n = 3, p = 3, q = 2;
    const auto B = random_vec<double>(p * q, 5);
    tj::JacobianTerms<double> d("(ik)(jl)", "ij", {{'i', m}, {'j', n}, {'k', p}, {'l', q}});
    d.add(1.0, {{B.data(), "kl"}});
    CHECK(d.out_shape() == (Shape{m * p, n * q}) && d.in_shape() == (Shape{m, n}));
    for (tj::Layout l : kLayouts) {
        const auto want = ref_jacobian<double>(l, {m * p, n * q}, {m, n}, [&](const Shape& mi, const Shape& ni) {
            const i64 i = mi[0] / p, k = mi[0] % p, j = mi[1] / q, ll = mi[1] % q;
            return (i == ni[0] && j == ni[1]) ? B[k * q + ll] : 0.0;
        });
        std::vector<double> J(want.size(), std::numeric_limits<double>::quiet_NaN());  // write mode zero-fills
        d.write(J.data(), l);
        CHECK(max_abs_diff(J, want) == 0.0);
    }
    // X * W with respect to X: a diagonal; accumulate and zeroed modes
    const i64 r = 3, c = 4;
    const auto W = random_vec<double>(r * c, 6);
    tj::JacobianTerms<double> e("ij", "ij", {{'i', r}, {'j', c}});
    e.add(1.0, {{W.data(), "ij"}});
    const auto diag = ref_jacobian<double>(tj::Layout::matrix, {r, c}, {r, c}, [&](const Shape& mi, const Shape& ni) {
        return mi == ni ? W[mi[0] * c + mi[1]] : 0.0;
    });
    CHECK(max_abs_diff(e.evaluate(tj::Layout::matrix), diag) == 0.0);
    std::vector<double> acc(diag.size());
    for (std::size_t t = 0; t < acc.size(); ++t) acc[t] = 0.5 * static_cast<double>(t);
    tj::ExpandOptions o;
    o.mode = tj::ExpandMode::accumulate;
    e.write(acc.data(), tj::Layout::matrix, o);
    bool ok = true;
    for (std::size_t t = 0; t < acc.size(); ++t) ok = ok && acc[t] == 0.5 * static_cast<double>(t) + diag[t];
    CHECK(ok);
    // a factor read on its diagonal: "ii" of a square matrix S, out "i", in "j": T[i, j] = S[i, i]
    const auto S = random_vec<double>(r * r, 7);
    tj::JacobianTerms<double> g("i", "j", {{'i', r}, {'j', 2}});
    g.add(1.0, {{S.data(), "ii"}});
    const auto G = g.evaluate(tj::Layout::tensor);
    ok = true;
    for (i64 i = 0; i < r; ++i)
        for (i64 j = 0; j < 2; ++j) ok = ok && G[static_cast<std::size_t>(i * 2 + j)] == S[i * r + i];
    CHECK(ok);
}

// Two like terms (fused into one pass by the kernel) and a delta term: d(A X B + X)/dX for square X.
static void test_several_terms() {
    const i64 n = 4;
    const auto A = random_vec<double>(n * n, 8), B = random_vec<double>(n * n, 9);
    const auto C = random_vec<double>(n * n, 10), D = random_vec<double>(n * n, 11);
    tj::JacobianTerms<double> d("ij", "kl", {{'i', n}, {'j', n}, {'k', n}, {'l', n}});
    d.add(1.0, {{A.data(), "ik"}, {B.data(), "lj"}}).add(-1.0, {{C.data(), "ik"}, {D.data(), "lj"}});
    tj::JacobianTerms<double> delta("ij", "ij", {{'i', n}, {'j', n}});
    delta.add(3.0, {});
    for (tj::Layout l : kLayouts) {
        const auto want = ref_jacobian<double>(l, {n, n}, {n, n}, [&](const Shape& mi, const Shape& ni) {
            return A[mi[0] * n + ni[0]] * B[ni[1] * n + mi[1]] - C[mi[0] * n + ni[0]] * D[ni[1] * n + mi[1]];
        });
        CHECK(max_abs_diff(d.evaluate(l), want) <= 1e-15);
        const auto eye3 = ref_jacobian<double>(l, {n, n}, {n, n},
                                               [&](const Shape& mi, const Shape& ni) { return mi == ni ? 3.0 : 0.0; });
        CHECK(max_abs_diff(delta.evaluate(l), eye3) == 0.0);
    }
}

// Strided factors (column-major, negative strides), strided results, expand_into.
static void test_strides() {
    const i64 m = 3, n = 4, p = 2, q = 5;
    const auto A = random_vec<double>(m * n, 12), B = random_vec<double>(p * q, 13);
    std::vector<double> Af(m * n), Brev(p * q);  // A column-major; B reversed in both axes
    for (i64 i = 0; i < m; ++i)
        for (i64 k = 0; k < n; ++k) Af[k * m + i] = A[i * n + k];
    for (i64 e = 0; e < p * q; ++e) Brev[p * q - 1 - e] = B[e];
    const tj::LetterSizes sz{{'i', m}, {'j', q}, {'k', n}, {'l', p}};
    tj::JacobianTerms<double> ref("ij", "kl", sz), strided("ij", "kl", sz);
    ref.add(1.0, {{A.data(), "ik"}, {B.data(), "lj"}});
    // Brev's last element is B[0, 0]: B[l, j] = Brev[(p q - 1) - (l q + j)]
    strided.add(1.0, {{Af.data(), "ik", {1, m}}, {Brev.data() + (p * q - 1), "lj", {-q, -1}}});
    for (tj::Layout l : kLayouts) CHECK(bitwise_equal(strided.evaluate(l), ref.evaluate(l)));
    // a Fortran-order result: entry (a, b, c, d) of the tensor layout at a + m (b + q (c + n d))
    const auto C = ref.evaluate(tj::Layout::tensor);
    std::vector<double> F(C.size(), -1.0);
    strided.write(F.data(), tj::Layout::tensor, Shape{1, m, m * q, m * q * n});
    bool ok = true;
    for (i64 e = 0; e < m * q * n * p; ++e) {
        const Shape idx = unravel_c(e, {m, q, n, p});
        ok = ok && F[static_cast<std::size_t>(ravel_f(idx, {m, q, n, p}))] == C[static_cast<std::size_t>(e)];
    }
    CHECK(ok);
    // expand_into: the same tensor with axes "ijkl", and the matrix layout as two fused axes "(ij)(kl)"
    std::vector<double> E(C.size()), M2(C.size());
    tj::expand_into<double>(E.data(), "ijkl", {}, sz, {{1.0, {{A.data(), "ik"}, {B.data(), "lj"}}}});
    CHECK(bitwise_equal(E, C));
    tj::expand_into<double>(M2.data(), "(ij)(kl)", {}, sz, {{1.0, {{A.data(), "ik"}, {B.data(), "lj"}}}});
    CHECK(bitwise_equal(M2, ref.evaluate(tj::Layout::matrix)));
    // a block of a bigger array: J into columns [2, 2 + n p) of a (m q) x (n p + 3) matrix
    const i64 ld = n * p + 3;
    std::vector<double> big(static_cast<std::size_t>(m * q * ld), 9.0);
    ref.write(big.data() + 2, tj::Layout::matrix, Shape{ld, 1});
    const auto Mx = ref.evaluate(tj::Layout::matrix);
    ok = true;
    for (i64 r = 0; r < m * q; ++r)
        for (i64 c = 0; c < ld; ++c) {
            const double v = big[static_cast<std::size_t>(r * ld + c)];
            ok = ok && (c < 2 || c >= 2 + n * p ? v == 9.0 : v == Mx[static_cast<std::size_t>(r * n * p + c - 2)]);
        }
    CHECK(ok);
}

static void test_threads_and_finite() {
    const i64 s = 16;  // 65536 entries: parallel with OpenMP
    const auto A = random_vec<double>(s * s, 14), B = random_vec<double>(s * s, 15);
    tj::JacobianTerms<double> d("ij", "kl", {{'i', s}, {'j', s}, {'k', s}, {'l', s}});
    d.add(1.0, {{A.data(), "ik"}, {B.data(), "lj"}}).add(0.5, {{B.data(), "ik"}, {A.data(), "lj"}});
    for (tj::Layout l : kLayouts) {
        const auto one = d.evaluate(l, 1);
        CHECK(bitwise_equal(one, d.evaluate(l, 2)));
        CHECK(bitwise_equal(one, d.evaluate(l, 0)));
        CHECK(bitwise_equal(one, d.evaluate(l, 1000)));
    }
    bool finite = false;
    tj::ExpandOptions o;
    o.finite = &finite;
    std::vector<double> J(static_cast<std::size_t>(d.size(tj::Layout::tensor)));
    d.write(J.data(), tj::Layout::tensor, o);
    CHECK(finite);
    auto An = A;
    An[17] = std::numeric_limits<double>::quiet_NaN();
    tj::JacobianTerms<double> dn("ij", "kl", {{'i', s}, {'j', s}, {'k', s}, {'l', s}});
    dn.add(1.0, {{An.data(), "ik"}, {B.data(), "lj"}});
    dn.write(J.data(), tj::Layout::vec, o);
    CHECK(!finite);
}

static void test_zero_size() {
    tj::JacobianTerms<double> d("ij", "k", {{'i', 0}, {'j', 3}, {'k', 2}});
    d.add(1.0, {{nullptr, "ik"}});
    for (tj::Layout l : kLayouts) {
        CHECK(d.size(l) == 0);
        CHECK(d.evaluate(l).empty());
        d.write(nullptr, l);  // nothing to write: null is fine
    }
    tj::JacobianTerms<double> s("", "", {});  // scalar by scalar: one entry
    const double c = 4.0;
    s.add(2.0, {{&c, ""}});
    CHECK(s.evaluate(tj::Layout::tensor) == std::vector<double>{8.0});
}

static void test_expand_errors() {
    const i64 m = 2, n = 3;
    const auto A = random_vec<double>(m * n, 16);
    std::vector<double> J(36, 5.0);
    const auto untouched = J;
    using E = std::invalid_argument;
    CHECK_THROWS(E, (tj::JacobianTerms<double>("i(j", "k", {{'i', 2}, {'j', 2}, {'k', 2}})), "unbalanced '('");
    CHECK_THROWS(E, (tj::JacobianTerms<double>("i()", "k", {{'i', 2}, {'k', 2}})), "empty parentheses");
    CHECK_THROWS(E, (tj::JacobianTerms<double>("i,j", "k", {{'i', 2}, {'j', 2}, {'k', 2}})),
                 "unexpected character ','");
    CHECK_THROWS(E, (tj::JacobianTerms<double>("ij", "k", {{'i', 2}, {'k', 2}})), "letter 'j' has no size");
    CHECK_THROWS(E, (tj::JacobianTerms<double>("ij", "k", {{'i', 2}, {'j', -1}, {'k', 2}})), "negative size -1");
    tj::JacobianTerms<double> d("ij", "k", {{'i', m}, {'j', n}, {'k', 2}, {'z', 2}});
    d.add(1.0, {{A.data(), "iz"}});
    CHECK_THROWS(E, d.write(J.data(), tj::Layout::tensor), "letter 'z' is on no axis of the result");
    tj::JacobianTerms<double> d2("ij", "k", {{'i', m}, {'j', n}, {'k', 2}});
    d2.add(1.0, {{A.data(), "ij", {3}}});
    CHECK_THROWS(E, d2.write(J.data(), tj::Layout::tensor), "term 0, factor 0 (\"ij\"): 1 strides (3,) for 2 letters");
    tj::JacobianTerms<double> d3("ij", "k", {{'i', m}, {'j', n}, {'k', 2}});
    d3.add(1.0, {{A.data(), "ij"}}).add(1.0, {{nullptr, "ij"}});
    CHECK_THROWS(E, d3.write(J.data(), tj::Layout::tensor), "term 1, factor 0 (\"ij\"): data is null");
    tj::JacobianTerms<double> d4("ij", "k", {{'i', m}, {'j', n}, {'k', 2}});
    d4.add(1.0, {{J.data() + 3, "ij"}});
    CHECK_THROWS(E, d4.write(J.data(), tj::Layout::tensor), "overlaps the result in memory");
    tj::JacobianTerms<double> d5("ij", "k", {{'i', m}, {'j', n}, {'k', 2}});
    d5.add(1.0, std::vector<tj::Operand<double>>(9, tj::Operand<double>(A.data(), "ij")));
    CHECK_THROWS(std::length_error, d5.write(J.data(), tj::Layout::tensor),
                 "has 9 factors; the kernel takes at most 8");
    tj::JacobianTerms<double> d6("ij", "k", {{'i', m}, {'j', n}, {'k', 2}});
    d6.add(1.0, {{A.data(), "ij"}});
    CHECK_THROWS(E, d6.write(nullptr, tj::Layout::tensor),
                 "the result pointer is null for a result of shape (2, 3, 2)");
    CHECK_THROWS(E, d6.write(J.data(), tj::Layout::matrix, Shape{1, 2, 3}), "do not match the result's shape (6, 2)");
    CHECK(J == untouched);  // nothing written by a refused call
    CHECK_THROWS(E, tj::expand_into<double>(J.data(), "ij", {1}, {{'i', 2}, {'j', 2}}, {}), "strides (1,)");
}

// ----------------------------------------------------------------------------- kron_matvec

// The Kronecker product formed entry by entry: K[row, col] = prod_t A_t[row_t, col_t], rows and
// columns split in mixed radix (the first factor most significant).
template <class T>
static std::vector<T> kron_dense(const std::vector<std::vector<T>>& mats, const std::vector<std::pair<i64, i64>>& shp,
                                 i64& R, i64& C) {
    R = 1;
    C = 1;
    for (auto& s : shp) R *= s.first, C *= s.second;
    std::vector<T> K(static_cast<std::size_t>(R * C));
    for (i64 r = 0; r < R; ++r)
        for (i64 c = 0; c < C; ++c) {
            T v = T(1);
            i64 rr = r, cc = c;
            for (std::size_t t = shp.size(); t-- > 0;) {
                const i64 ri = rr % shp[t].first, ci = cc % shp[t].second;
                rr /= shp[t].first;
                cc /= shp[t].second;
                v *= mats[t][static_cast<std::size_t>(ri * shp[t].second + ci)];
            }
            K[static_cast<std::size_t>(r * C + c)] = v;
        }
    return K;
}

template <class T>
static void kron_case(const std::vector<std::pair<i64, i64>>& shp, i64 nb, unsigned seed, double tol) {
    std::vector<std::vector<T>> mats;
    std::vector<tj::MatrixRef<T>> refs;
    for (std::size_t t = 0; t < shp.size(); ++t)
        mats.push_back(random_vec<T>(shp[t].first * shp[t].second, seed + static_cast<unsigned>(t)));
    for (std::size_t t = 0; t < shp.size(); ++t) refs.emplace_back(mats[t].data(), shp[t].first, shp[t].second);
    i64 R, C;
    const auto K = kron_dense(mats, shp, R, C);
    const auto x = random_vec<T>(nb * C, seed + 100);
    std::vector<T> want(static_cast<std::size_t>(nb * R), T(0));
    for (i64 b = 0; b < nb; ++b)
        for (i64 r = 0; r < R; ++r) {
            T s = T(0);
            for (i64 c = 0; c < C; ++c)
                s += K[static_cast<std::size_t>(r * C + c)] * x[static_cast<std::size_t>(b * C + c)];
            want[static_cast<std::size_t>(b * R + r)] = s;
        }
    std::vector<T> y(want.size(), T(3));
    tj::kron_matvec<T>(refs, x.data(), nb, y.data());
    const bool ok = max_abs_diff(y, want) <= tol;
    CHECK(ok);
    if (!ok)
        std::printf("    kron case with %zu factors, nb %lld: error %g\n", shp.size(), (long long)nb,
                    max_abs_diff(y, want));
    // a caller's workspace gives the same bits
    std::vector<T> work(static_cast<std::size_t>(tj::kron_matvec_workspace(refs, nb)) + 1), y2(want.size());
    tj::kron_matvec<T>(refs, x.data(), nb, y2.data(), 1, work.data());
    CHECK(bitwise_equal(y, y2));
}

static void test_kron_matvec() {
    const std::vector<std::pair<i64, i64>> pool = {{2, 3}, {1, 4}, {3, 1}, {2, 2}, {4, 3}, {1, 1}};
    unsigned seed = 20;
    for (std::size_t k = 1; k <= 4; ++k)
        for (std::size_t start = 0; start < pool.size(); ++start)
            for (i64 nb : {0, 1, 3}) {
                std::vector<std::pair<i64, i64>> shp;
                for (std::size_t t = 0; t < k; ++t) shp.push_back(pool[(start + 2 * t) % pool.size()]);
                kron_case<double>(shp, nb, seed++, 1e-13);
            }
    kron_case<float>({{3, 2}, {2, 4}, {2, 2}}, 2, 40, 1e-5);
    kron_case<std::complex<double>>({{3, 2}, {2, 4}, {2, 3}}, 2, 41, 1e-13);
    // zero extents: an empty product (zero output columns) or zero rows
    kron_case<double>({{2, 0}, {3, 2}}, 2, 42, 0.0);
    kron_case<double>({{2, 3}, {3, 0}, {2, 2}}, 2, 43, 0.0);
    kron_case<double>({{0, 3}, {3, 2}}, 2, 44, 0.0);
    // workspace sizes: none for one factor, one intermediate for two, two for more
    const std::vector<double> a(12, 1.0);
    CHECK(tj::kron_matvec_workspace<double>({{a.data(), 3, 4}}, 5) == 0);
    CHECK(tj::kron_matvec_workspace<double>({{a.data(), 3, 4}, {a.data(), 2, 6}}, 5) == 5 * 4 * 2);
    CHECK(tj::kron_matvec_workspace<double>({{a.data(), 3, 4}, {a.data(), 2, 6}, {a.data(), 1, 2}}, 1) ==
          2 * std::max<i64>(4 * 6 * 1, 4 * 2 * 1));
    // column-major and strided factors
    const i64 m = 3, n = 2, p = 2, q = 4;
    const auto A = random_vec<double>(m * n, 50), B = random_vec<double>(p * q, 51), x = random_vec<double>(n * q, 52);
    std::vector<double> Af(m * n), Bpad(p * 2 * q), y1(m * p), y2(m * p);
    for (i64 i = 0; i < m; ++i)
        for (i64 j = 0; j < n; ++j) Af[j * m + i] = A[i * n + j];
    for (i64 i = 0; i < p; ++i)
        for (i64 j = 0; j < q; ++j) Bpad[i * 2 * q + 2 * j] = B[i * q + j];  // every other element
    tj::kron_matvec<double>({{A.data(), m, n}, {B.data(), p, q}}, x.data(), 1, y1.data());
    tj::kron_matvec<double>({tj::MatrixRef<double>::col_major(Af.data(), m, n), {Bpad.data(), p, q, 2 * q, 2}},
                            x.data(), 1, y2.data());
    CHECK(bitwise_equal(y1, y2));
    // thread invariance: 2^20 multiply-adds per mode
    const i64 s = 64, nb = 4;
    const auto F = random_vec<double>(s * s, 53), G = random_vec<double>(s * s, 54),
               X = random_vec<double>(nb * s * s, 55);
    std::vector<double> t1(nb * s * s), t2(nb * s * s);
    tj::kron_matvec<double>({{F.data(), s, s}, {G.data(), s, s}}, X.data(), nb, t1.data(), 1);
    tj::kron_matvec<double>({{F.data(), s, s}, {G.data(), s, s}}, X.data(), nb, t2.data(), 2);
    CHECK(bitwise_equal(t1, t2));
    // errors
    using E = std::invalid_argument;
    std::vector<double> yy(6);
    CHECK_THROWS(E, tj::kron_matvec<double>({}, x.data(), 1, yy.data()), "factors is empty");
    CHECK_THROWS(E, tj::kron_matvec<double>({{A.data(), m, n}}, x.data(), -1, yy.data()), "negative batch size");
    CHECK_THROWS(E, tj::kron_matvec<double>({{A.data(), -3, n}}, x.data(), 1, yy.data()),
                 "factors[0] has negative shape (-3, 2)");
    CHECK_THROWS(E, tj::kron_matvec<double>({{A.data(), m, n}}, yy.data() + 1, 1, yy.data()), "y overlaps x");
    CHECK_THROWS(E, tj::kron_matvec<double>({{yy.data() + 2, 1, 1}, {A.data(), m, n}}, x.data(), 1, yy.data()),
                 "y overlaps factors[0]");
    CHECK_THROWS(E, tj::kron_matvec<double>({{A.data(), m, n}}, nullptr, 1, yy.data()), "x is null");
    std::vector<double> w3(64);
    CHECK_THROWS(E,
                 tj::kron_matvec<double>({{w3.data(), 2, 2}, {A.data(), m, n}, {B.data(), p, q}}, x.data(), 1,
                                         yy.data(), 1, w3.data() + 2),
                 "work overlaps x, y or a factor");
    CHECK_THROWS(E, tj::kron_matvec<double>({{nullptr, m, n}}, x.data(), 1, yy.data()), "factors[0].data is null");
}

// ----------------------------------------------------------------------------- finite differences

// f: R^3 -> R^4 and its Jacobian
template <class T>
static void f4(const T* x, T* y) {
    y[0] = x[0] * x[0] * x[1];
    y[1] = std::sin(x[2]);
    y[2] = std::exp(x[0]) + x[1] * x[2];
    y[3] = x[0] * x[1] * x[2];
}

static std::vector<double> f4_jacobian(const double* x) {  // (4, 3), C order
    return {2 * x[0] * x[1], x[0] * x[0], 0.0,  0.0,         0.0,         std::cos(x[2]),
            std::exp(x[0]),  x[2],        x[1], x[1] * x[2], x[0] * x[2], x[0] * x[1]};
}

static void test_stencils() {
    for (tj::fd::Method mth : {tj::fd::Method::forward, tj::fd::Method::backward, tj::fd::Method::central})
        for (bool with_error : {false, true}) {
            const tj::fd::Stencil s = tj::fd::stencil(mth, with_error);
            double c_sum = s.c0, c_slope = 0, d_sum = s.d0, d_slope = 0;
            for (i64 k = 0; k < s.K(); ++k) {
                c_sum += s.c[k];
                c_slope += s.c[k] * s.sigma[k];
                if (!s.d.empty()) d_sum += s.d[k], d_slope += s.d[k] * s.sigma[k];
            }
            // a derivative formula: zero on constants, 1 on the identity; an error estimate: 0 on both
            CHECK(std::fabs(c_sum) < 1e-15 && std::fabs(c_slope - 1) < 1e-15);
            CHECK(std::fabs(d_sum) < 1e-15 && std::fabs(d_slope) < 1e-15);
            CHECK(s.d.empty() != with_error);
            CHECK(s.levels == 0);
        }
    const tj::fd::Stencil r = tj::fd::stencil(tj::fd::Method::richardson);
    CHECK(r.levels == 6 && r.K() == 12 && r.sigma[0] == 1.0 && r.sigma[1] == -1.0 && r.sigma[11] == -1.0 / 32);
    // default steps: powers of two near eps^p |x|, a floor at x == 0
    const double x[] = {0.0, 4.0, 0.25, 0.0, -3e-300};
    const double p = 1.0 / 3.0, ep = std::pow(std::numeric_limits<double>::epsilon(), p);
    const auto h = tj::fd::default_steps(x, 5, p);
    bool ok = true;
    for (int n = 0; n < 5; ++n) {
        int e;
        ok = ok && std::frexp(h[n], &e) == 0.5;
    }
    CHECK(ok);
    CHECK(h[1] / (ep * 4.0) > 0.7 && h[1] / (ep * 4.0) < 1.42);
    CHECK(h[2] / (ep * 0.25) > 0.7 && h[2] / (ep * 0.25) < 1.42);
    CHECK(h[0] == h[3] && h[0] == h[2]);  // zeros take min(median |x| of the nonzeros, 1) = 0.25
    CHECK(h[4] >= std::numeric_limits<double>::min() * std::ldexp(1.0, 19));  // 1/h far from overflow
}

static void test_fd_jacobian() {
    const double x[] = {0.7, -1.3, 0.4};
    const auto exact = f4_jacobian(x);
    struct Case {
        tj::fd::Method method;
        i64 K_err, K_plain;
        double tol;
    };
    const Case cases[] = {{tj::fd::Method::forward, 2, 1, 1e-6},
                          {tj::fd::Method::backward, 2, 1, 1e-6},
                          {tj::fd::Method::central, 4, 2, 1e-9},
                          {tj::fd::Method::richardson, 12, 12, 1e-12}};
    for (const Case& c : cases) {
        tj::fd::Options o;
        o.method = c.method;
        std::vector<double> J(12), err(12), J2(12);
        const auto res = tj::fd::jacobian(f4<double>, x, 3, 4, J.data(), err.data(), o);
        CHECK(res.evaluations == 1 + 3 * c.K_err);
        CHECK(res.nonfinite == 0);
        CHECK(max_abs_diff(J, exact) <= c.tol);
        bool bounded = true;  // the error estimate bounds the true error
        for (int e = 0; e < 12; ++e) bounded = bounded && std::fabs(J[e] - exact[e]) <= err[e];
        CHECK(bounded);
        const auto res2 = tj::fd::jacobian(f4<double>, x, 3, 4, J2.data(), nullptr, o);
        CHECK(res2.evaluations == 1 + 3 * c.K_plain);
        CHECK(max_abs_diff(J2, exact) <= c.tol);
        // the same bits in blocks of one entry and on two threads
        tj::fd::Options ob = o;
        ob.block = 1;
        ob.num_threads = 2;
        std::vector<double> J3(12), err3(12);
        tj::fd::jacobian(f4<double>, x, 3, 4, J3.data(), err3.data(), ob);
        CHECK(bitwise_equal(J, J3) && bitwise_equal(err, err3));
    }
    // layouts: F's 4 outputs as a (2, 2) array, x as (3,)
    for (tj::Layout l : kLayouts) {
        tj::fd::Options o;
        o.layout = l;
        o.out_shape = {2, 2};
        std::vector<double> J(12);
        tj::fd::jacobian(f4<double>, x, 3, 4, J.data(), nullptr, o);
        const auto want = ref_jacobian<double>(l, {2, 2}, {3}, [&](const Shape& mi, const Shape& ni) {
            return exact[static_cast<std::size_t>((mi[0] * 2 + mi[1]) * 3 + ni[0])];
        });
        CHECK(max_abs_diff(J, want) <= 1e-9);
    }
    // float and complex (holomorphic f)
    const float xf[] = {0.7f, -1.3f, 0.4f};
    std::vector<float> Jf(12);
    tj::fd::jacobian(f4<float>, xf, 3, 4, Jf.data());
    double worst = 0;
    for (int e = 0; e < 12; ++e) worst = std::max(worst, std::fabs(Jf[e] - exact[e]));
    CHECK(worst < 2e-3);
    using Z = std::complex<double>;
    const Z xz[] = {Z(0.7, 0.1), Z(-1.3, 0.0), Z(0.4, -0.2)};
    std::vector<Z> Jz(12);
    std::vector<double> errz(12);
    tj::fd::jacobian(f4<Z>, xz, 3, 4, Jz.data(), errz.data());
    const std::vector<Z> exz = {2.0 * xz[0] * xz[1], xz[0] * xz[0],   0.0,   0.0,   0.0,
                                std::cos(xz[2]),     std::exp(xz[0]), xz[2], xz[1], xz[1] * xz[2],
                                xz[0] * xz[2],       xz[0] * xz[1]};
    CHECK(max_abs_diff(Jz, exz) <= 1e-9);
    // user steps; a step too small for x; bad steps
    const double big[] = {1e10, 1.0, 1.0};
    const double steps[] = {1e-10, 1e-5, 1e-5};
    tj::fd::Options o;
    o.step = steps;
    std::vector<double> J(12);
    CHECK_THROWS(std::invalid_argument, tj::fd::jacobian(f4<double>, big, 3, 4, J.data(), nullptr, o),
                 "is too small for x[0]");
    const double neg[] = {1e-5, -1.0, 1e-5};
    o.step = neg;
    CHECK_THROWS(std::invalid_argument, tj::fd::jacobian(f4<double>, x, 3, 4, J.data(), nullptr, o),
                 "step[1] = -1.000000 must be positive and finite");
    const double good[] = {1e-6, 1e-6, 1e-6};
    o.step = good;
    tj::fd::jacobian(f4<double>, x, 3, 4, J.data(), nullptr, o);
    CHECK(max_abs_diff(J, exact) <= 1e-8);
    tj::fd::Options so;
    so.out_shape = {5};
    CHECK_THROWS(std::invalid_argument, tj::fd::jacobian(f4<double>, x, 3, 4, J.data(), nullptr, so),
                 "out_shape (5,) must have N = 3 and M = 4 entries");
    CHECK_THROWS(std::invalid_argument, tj::fd::jacobian(f4<double>, J.data() + 1, 3, 4, J.data()), "J overlaps x");
    // a stencil leaving f's domain: sqrt at 0 (central: f(-h) is NaN) is counted, not hidden
    auto sq = [](const double* in, double* out) {
        out[0] = std::sqrt(in[0]);
        out[1] = in[0];
    };
    const double z[] = {0.0};
    std::vector<double> Jq(2);
    const auto rq = tj::fd::jacobian(sq, z, 1, 2, Jq.data());
    CHECK(rq.nonfinite == 1 && std::isnan(Jq[0]) && std::fabs(Jq[1] - 1.0) < 1e-12);
    // zero-size
    auto no_outputs = [](const double*, double*) {};
    std::vector<double> none;
    CHECK(tj::fd::jacobian(no_outputs, z, 1, 0, none.data()).evaluations == 1);
}

// ----------------------------------------------------------------------------- cancellation

static void test_cancellation() {
    tj::CancelFlag flag{true};
    const std::vector<double> a(16, 1.0), x(16, 1.0);
    std::vector<double> y(16), J(256);
    {
        tj::ScopedCancel scope(&flag);
        CHECK_THROWS(tj::Interrupted,
                     tj::kron_matvec<double>({{a.data(), 4, 4}, {a.data(), 4, 4}}, x.data(), 1, y.data()),
                     "interrupted");
        tj::JacobianTerms<double> d("ij", "kl", {{'i', 4}, {'j', 4}, {'k', 4}, {'l', 4}});
        d.add(1.0, {{a.data(), "ik"}, {a.data(), "lj"}});
        CHECK_THROWS(tj::Interrupted, d.write(J.data(), tj::Layout::tensor), "interrupted");
    }
    tj::kron_matvec<double>({{a.data(), 4, 4}, {a.data(), 4, 4}}, x.data(), 1, y.data());  // the scope is gone
    CHECK(y[0] == 16.0);
}

int main() {
    std::printf("tensorjac C++ API tests: openmp %s, thread cap %d\n", tj::openmp_enabled() ? "yes" : "no",
                tj::thread_cap());
    run("layouts: shapes and offsets", test_layouts);
    run("JacobianTerms: d(AXB)/dX in every layout and dtype", test_sandwich);
    run("JacobianTerms: fused axes, deltas, modes", test_fused_axes_and_deltas);
    run("JacobianTerms: several terms", test_several_terms);
    run("strided factors and results, expand_into", test_strides);
    run("thread invariance and the non-finite flag", test_threads_and_finite);
    run("zero-size and scalar Jacobians", test_zero_size);
    run("expand argument errors", test_expand_errors);
    run("kron_matvec", test_kron_matvec);
    run("fd stencils and default steps", test_stencils);
    run("fd::jacobian", test_fd_jacobian);
    run("cancellation", test_cancellation);
    std::printf("%d checks, %d failed\n", g_checks, g_failures);
    return g_failures == 0 ? 0 : 1;
}
