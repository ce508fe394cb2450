// Binding of the finite-difference kernels (cpp/include/tensorjac/fd.hpp).
//
// Private API for tensorjac.fd: the Python side validates user input with the
// GIL held and prepares C-contiguous buffers; here we re-check shapes, dtypes
// and offset bounds cheaply (a bad call raises, it never writes out of
// bounds) and release the GIL around the kernels.
#include <algorithm>

#include "common.hpp"
#include "tensorjac/fd.hpp"

namespace tjb {
namespace {

std::string shape_str(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t d = 0; d < a.ndim(); ++d) s += (d ? ", " : "") + std::to_string(a.shape(d));
    return s + (a.ndim() == 1 ? ",)" : ")");
}

void need_c_contiguous(const py::array& a, const char* what, py::ssize_t ndim) {
    if (a.ndim() != ndim)
        throw py::value_error(std::string(what) + ": expected " + std::to_string(ndim) + " dimension(s), got shape " +
                              shape_str(a));
    if (!(a.flags() & py::array::c_style)) throw py::value_error(std::string(what) + ": must be C-contiguous");
}

template <class T>
py::array_t<T> need_typed(const py::array& a, const char* what, py::ssize_t ndim) {
    if (!py::isinstance<py::array_t<T>>(a))
        throw py::type_error(std::string(what) + ": unexpected dtype " + py::str(a.dtype()).cast<std::string>());
    need_c_contiguous(a, what, ndim);
    return py::reinterpret_borrow<py::array_t<T>>(a);
}

void need_len(const py::array& a, const char* what, i64 n) {
    if (a.ndim() != 1 || a.shape(0) != n)
        throw py::value_error(std::string(what) + ": expected length " + std::to_string(n) + ", got shape " +
                              shape_str(a));
}

void build_stack(const py::array& x, const py::array& h, const py::array& sigma, i64 n0, i64 n1, bool imag,
                 py::array out, int num_threads) {
    if (!out.writeable()) throw py::value_error("out: array is read-only");
    need_c_contiguous(out, "out", 2);
    const i64 N = out.shape(1);
    auto hh = need_typed<double>(h, "h", 1);
    auto ss = need_typed<double>(sigma, "sigma", 1);
    need_len(h, "h", N);
    const i64 K = ss.shape(0);
    if (K < 1) throw py::value_error("sigma: need at least one perturbation");
    if (n0 < 0 || n1 < n0 || n1 > N)
        throw py::value_error("entry range [" + std::to_string(n0) + ", " + std::to_string(n1) + ") is outside [0, " +
                              std::to_string(N) + ")");
    if (out.shape(0) != tensorjac::checked_mul(n1 - n0, K))
        throw py::value_error("out: expected " + std::to_string((n1 - n0) * K) + " rows, got " +
                              std::to_string(out.shape(0)));
    dispatch(out.dtype(), "out", [&](auto tag) {
        using T = decltype(tag);
        auto xx = need_typed<T>(x, "x", 1);
        need_len(x, "x", N);
        if (imag && !tensorjac::fd::is_complex_v<T>)
            throw py::type_error("an imaginary step needs a complex stack dtype");
        T* o = static_cast<T*>(out.mutable_data());
        const int nt = resolve_threads(num_threads);
        run_kernel(out.shape(0) * N,
                   [&] { tensorjac::fd::build_stack<T>(xx.data(), N, hh.data(), ss.data(), K, n0, n1, imag, o, nt); });
    });
}

double* stats_ptr(const py::object& stats, i64 entries) {
    if (stats.is_none()) return nullptr;
    auto sa = py::cast<py::array>(stats);
    auto st = need_typed<double>(sa, "stats", 2);
    if (!sa.writeable()) throw py::value_error("stats: array is read-only");
    if (sa.shape(0) != entries || sa.shape(1) != tensorjac::fd::kStats)
        throw py::value_error("stats: expected shape (" + std::to_string(entries) + ", " +
                              std::to_string(tensorjac::fd::kStats) + "), got " + shape_str(sa));
    return static_cast<double*>(sa.mutable_data());
}

template <class ER>
ER* err_ptr(const py::object& err, const py::array& J) {
    if (err.is_none()) return nullptr;
    auto ea = py::cast<py::array>(err);
    need_typed<ER>(ea, "err", ea.ndim());
    if (!ea.writeable()) throw py::value_error("err: array is read-only");
    if (ea.size() != J.size()) throw py::value_error("err: must have as many elements as J");
    return static_cast<ER*>(ea.mutable_data());
}

template <class Y, bool Imag>
void run_combine(const py::array& ys, const py::array& y0, i64 M, i64 n0, i64 n1, const double* h,
                 const tensorjac::fd::Rule& rule, const i64* moff, const i64* noff, py::array J,
                 const py::object& err, double* st, int nt) {
    using JT = tensorjac::fd::jac_t<Y, Imag>;
    using ER = tensorjac::fd::real_t<JT>;
    auto yy = need_typed<Y>(ys, "ys", 2);
    auto y00 = need_typed<Y>(y0, "y0", 1);
    need_len(y0, "y0", M);
    need_typed<JT>(J, "J", J.ndim());
    ER* e = err_ptr<ER>(err, J);
    JT* j = static_cast<JT*>(J.mutable_data());
    run_kernel(tensorjac::checked_mul(tensorjac::checked_mul(n1 - n0, M), rule.K), [&] {
        tensorjac::fd::combine<Y, Imag>(yy.data(), y00.data(), M, n0, n1, h, rule, moff, noff, j, e, st, nt);
    });
}

struct Common {
    i64 N = 0, M = 0;
    py::array_t<double> h;
    py::array_t<i64> mo, no;
};

// Shared validation of combine and combine_richardson: offsets inside J, ys of (n1 - n0) * K rows.
Common validate(const py::array& ys, const py::array& h, const py::array& moff, const py::array& noff, i64 K,
                i64 n0, i64 n1, const py::array& J) {
    if (!J.writeable()) throw py::value_error("J: array is read-only");
    Common c;
    c.h = need_typed<double>(h, "h", 1);
    c.mo = need_typed<i64>(moff, "moff", 1);
    c.no = need_typed<i64>(noff, "noff", 1);
    c.N = c.no.shape(0);
    c.M = c.mo.shape(0);
    need_len(h, "h", c.N);
    if (n0 < 0 || n1 < n0 || n1 > c.N)
        throw py::value_error("entry range [" + std::to_string(n0) + ", " + std::to_string(n1) + ") is outside [0, " +
                              std::to_string(c.N) + ")");
    need_c_contiguous(ys, "ys", 2);
    if (ys.shape(0) != tensorjac::checked_mul(n1 - n0, K) || ys.shape(1) != c.M)
        throw py::value_error("ys: expected shape (" + std::to_string((n1 - n0) * K) + ", " + std::to_string(c.M) +
                              "), got " + shape_str(ys));
    if (!(J.flags() & py::array::c_style)) throw py::value_error("J: must be C-contiguous");
    if (c.M > 0 && n1 > n0) {
        const i64* mp = c.mo.data();
        const i64* np_ = c.no.data();
        const auto [mlo, mhi] = std::minmax_element(mp, mp + c.M);
        const auto [nlo, nhi] = std::minmax_element(np_ + n0, np_ + n1);
        if (*mlo < 0 || *nlo < 0 || tensorjac::checked_add(*mhi, *nhi) >= static_cast<i64>(J.size()))
            throw py::value_error("moff/noff: offsets fall outside J");
    }
    return c;
}

void combine(const py::array& ys, const py::array& y0, const py::array& h, const py::array& c, double c0,
             const py::object& d, double d0, const py::object& sigma, double eps, double tiny,
             const py::array& moff, const py::array& noff, i64 n0, i64 n1, bool imag, py::array J,
             const py::object& err, const py::object& stats, int num_threads) {
    auto cc = need_typed<double>(c, "c", 1);
    const i64 K = cc.shape(0);
    if (K < 1) throw py::value_error("c: need at least one weight");
    Common cm = validate(ys, h, moff, noff, K, n0, n1, J);
    tensorjac::fd::Rule rule;
    rule.K = K;
    rule.c = cc.data();
    rule.c0 = c0;
    rule.d0 = d0;
    rule.eps = eps;
    rule.tiny = tiny;
    py::array_t<double> dd, ss;
    if (!d.is_none()) {
        dd = need_typed<double>(py::cast<py::array>(d), "d", 1);
        need_len(dd, "d", K);
        rule.d = dd.data();
    }
    if (!sigma.is_none()) {
        ss = need_typed<double>(py::cast<py::array>(sigma), "sigma", 1);
        need_len(ss, "sigma", K);
        rule.sigma = ss.data();
    }
    double* st = stats_ptr(stats, n1 - n0);
    const int nt = resolve_threads(num_threads);
    dispatch(ys.dtype(), "ys", [&](auto tag) {
        using Y = decltype(tag);
        if (imag) {
            if constexpr (tensorjac::fd::is_complex_v<Y>)
                run_combine<Y, true>(ys, y0, cm.M, n0, n1, cm.h.data(), rule, cm.mo.data(), cm.no.data(), J, err, st, nt);
            else
                throw py::type_error("the complex step needs complex outputs");
        } else {
            run_combine<Y, false>(ys, y0, cm.M, n0, n1, cm.h.data(), rule, cm.mo.data(), cm.no.data(), J, err, st, nt);
        }
    });
}

void combine_richardson(const py::array& ys, const py::array& y0, const py::array& h, int levels, double ratio,
                        double eps, double tiny, const py::array& moff, const py::array& noff, i64 n0, i64 n1,
                        py::array J, const py::object& err, const py::object& stats, int num_threads) {
    if (levels < 2 || levels > tensorjac::fd::kMaxLevels)
        throw py::value_error("levels: expected 2.." + std::to_string(tensorjac::fd::kMaxLevels));
    if (!(ratio > 1.0)) throw py::value_error("ratio: must be > 1");
    Common cm = validate(ys, h, moff, noff, 2 * static_cast<i64>(levels), n0, n1, J);
    double* st = stats_ptr(stats, n1 - n0);
    const int nt = resolve_threads(num_threads);
    dispatch(ys.dtype(), "ys", [&](auto tag) {
        using Y = decltype(tag);
        using ER = tensorjac::fd::real_t<Y>;
        auto yy = need_typed<Y>(ys, "ys", 2);
        auto y00 = need_typed<Y>(y0, "y0", 1);
        need_len(y0, "y0", cm.M);
        need_typed<Y>(J, "J", J.ndim());
        ER* e = err_ptr<ER>(err, J);
        Y* j = static_cast<Y*>(J.mutable_data());
        run_kernel(tensorjac::checked_mul(tensorjac::checked_mul(n1 - n0, cm.M), 2 * levels), [&] {
            tensorjac::fd::combine_richardson<Y>(yy.data(), y00.data(), cm.M, n0, n1, cm.h.data(), levels, ratio, eps,
                                                 tiny, cm.mo.data(), cm.no.data(), j, e, st, nt);
        });
    });
}

}  // namespace

void bind_fd(py::module_& m) {
    m.def("fd_build_stack", &build_stack, py::arg("x"), py::arg("h"), py::arg("sigma"), py::arg("n0"),
          py::arg("n1"), py::arg("imag"), py::arg("out"), py::arg("num_threads") = 0,
          "Rows of perturbed inputs for entries [n0, n1) (private; see tensorjac.fd).");
    m.def("fd_combine", &combine, py::arg("ys"), py::arg("y0"), py::arg("h"), py::arg("c"), py::arg("c0"),
          py::arg("d"), py::arg("d0"), py::arg("sigma"), py::arg("eps"), py::arg("tiny"), py::arg("moff"),
          py::arg("noff"), py::arg("n0"), py::arg("n1"), py::arg("imag"), py::arg("J"), py::arg("err"),
          py::arg("stats"), py::arg("num_threads") = 0,
          "Finite-difference combination into a strided Jacobian (private; see tensorjac.fd).");
    m.def("fd_combine_richardson", &combine_richardson, py::arg("ys"), py::arg("y0"), py::arg("h"),
          py::arg("levels"), py::arg("ratio"), py::arg("eps"), py::arg("tiny"), py::arg("moff"), py::arg("noff"),
          py::arg("n0"), py::arg("n1"), py::arg("J"), py::arg("err"), py::arg("stats"), py::arg("num_threads") = 0,
          "Adaptive Richardson extrapolation into a strided Jacobian (private; see tensorjac.fd).");
}

}  // namespace tjb
