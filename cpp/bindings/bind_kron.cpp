// Bindings of the Kronecker-product VJP/JVP kernels and the batched
// elementwise product (cpp/include/tensorjac/kron.hpp).
//
// The Python layer (tensorjac._ad) validates shapes with messages that name
// the user's arguments and hands over C-contiguous arrays of one native dtype;
// these functions re-check that cheaply, allocate the result with the GIL
// held, and release the GIL around the kernel (interruptible by Ctrl-C: the
// partly written result is then dropped).
#include "common.hpp"
#include "tensorjac/kron.hpp"

namespace tjb {
namespace {

void require(const py::array& a, const char* name, py::ssize_t ndim, const py::dtype& dt) {
    if (a.ndim() != ndim)
        throw py::value_error(std::string(name) + ": expected " + std::to_string(ndim) + " dimensions, got " +
                              std::to_string(a.ndim()));
    if (!(a.flags() & py::array::c_style)) throw py::value_error(std::string(name) + ": must be C-contiguous");
    if (!a.dtype().equal(dt))
        throw py::type_error(std::string(name) + ": dtype " + py::str(a.dtype()).cast<std::string>() +
                             " does not match " + py::str(dt).cast<std::string>());
}

std::string shape_str(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t d = 0; d < a.ndim(); ++d) s += (d ? ", " : "") + std::to_string(a.shape(d));
    return s + (a.ndim() == 1 ? ",)" : ")");
}

template <class T>
const T* cdata(const py::array& a) {
    return static_cast<const T*>(a.data());
}

// which = 0: F is B (p, q), result dA (nb, m, n); which = 1: F is A (m, n), result dB (nb, p, q).
py::array kron_vjp(const py::array& G, const py::array& F, int which, i64 num_threads) {
    return dispatch(G.dtype(), "kron_vjp", [&](auto tag) -> py::array {
        using T = decltype(tag);
        const auto dt = py::dtype::of<T>();
        require(G, "G", 5, dt);
        require(F, "factor", 2, dt);
        const i64 nb = G.shape(0), m = G.shape(1), p = G.shape(2), n = G.shape(3), q = G.shape(4);
        if (which != 0 && which != 1) throw py::value_error("kron_vjp: which must be 0 (A) or 1 (B)");
        const i64 fr = which == 0 ? p : m, fc = which == 0 ? q : n;
        if (F.shape(0) != fr || F.shape(1) != fc)
            throw py::value_error("kron_vjp: factor has shape " + shape_str(F) + ", expected (" +
                                  std::to_string(fr) + ", " + std::to_string(fc) + ") for G of shape " +
                                  shape_str(G));
        py::array_t<T> out(which == 0 ? std::vector<i64>{nb, m, n} : std::vector<i64>{nb, p, q});
        T* o = out.mutable_data();
        const T* g = cdata<T>(G);
        const T* f = cdata<T>(F);
        const int nt = resolve_threads(num_threads);
        run_kernel(static_cast<i64>(G.size()), [&] {
            if (which == 0) tensorjac::kron_vjp_a<T>(g, nb, m, p, n, q, f, o, nt);
            else tensorjac::kron_vjp_b<T>(g, nb, m, p, n, q, f, o, nt);
        });
        return out;
    });
}

py::array kron_batched(const py::array& X, const py::array& Y, i64 num_threads) {
    return dispatch(X.dtype(), "kron_batched", [&](auto tag) -> py::array {
        using T = decltype(tag);
        const auto dt = py::dtype::of<T>();
        require(X, "X", 3, dt);
        require(Y, "Y", 3, dt);
        const i64 nbx = X.shape(0), nby = Y.shape(0);
        const i64 nb = nbx == 1 ? nby : nbx;
        if ((nbx != 1 && nbx != nb) || (nby != 1 && nby != nb))
            throw py::value_error("kron_batched: batch sizes of X " + shape_str(X) + " and Y " + shape_str(Y) +
                                  " do not broadcast");
        const i64 m = X.shape(1), n = X.shape(2), p = Y.shape(1), q = Y.shape(2);
        const i64 rows = tensorjac::checked_mul(m, p), cols = tensorjac::checked_mul(n, q);
        // the result's element and byte counts must be representable before numpy is asked for it
        (void)tensorjac::checked_mul(tensorjac::checked_mul(tensorjac::checked_mul(nb, rows), cols),
                                     static_cast<i64>(sizeof(T)));
        py::array_t<T> out(std::vector<i64>{nb, rows, cols});
        T* o = out.mutable_data();
        const int nt = resolve_threads(num_threads);
        run_kernel(static_cast<i64>(out.size()),
                   [&] { tensorjac::kron_batched<T>(cdata<T>(X), nbx, m, n, cdata<T>(Y), nby, p, q, nb, o, nt); });
        return out;
    });
}

py::array mul_rows(const py::array& G, const py::array& d, i64 num_threads) {
    return dispatch(G.dtype(), "mul_rows", [&](auto tag) -> py::array {
        using T = decltype(tag);
        const auto dt = py::dtype::of<T>();
        require(G, "G", 2, dt);
        require(d, "d", 1, dt);
        if (d.shape(0) != G.shape(1))
            throw py::value_error("mul_rows: d has shape " + shape_str(d) + ", G has shape " + shape_str(G));
        py::array_t<T> out(std::vector<i64>{G.shape(0), G.shape(1)});
        T* o = out.mutable_data();
        const int nt = resolve_threads(num_threads);
        run_kernel(static_cast<i64>(G.size()),
                   [&] { tensorjac::mul_rows<T>(cdata<T>(G), G.shape(0), G.shape(1), cdata<T>(d), o, nt); });
        return out;
    });
}

}  // namespace

void bind_kron(py::module_& m) {
    m.def("kron_vjp", &kron_vjp, py::arg("G"), py::arg("factor"), py::arg("which"), py::arg("num_threads") = 0,
          "VJP of kron(A, B): G (nb, m, p, n, q); which=0 -> dA (nb, m, n) from B, which=1 -> dB (nb, p, q) "
          "from A.");
    m.def("kron_batched", &kron_batched, py::arg("X"), py::arg("Y"), py::arg("num_threads") = 0,
          "Batched Kronecker product: X (1|nb, m, n), Y (1|nb, p, q) -> (nb, m*p, n*q).");
    m.def("mul_rows", &mul_rows, py::arg("G"), py::arg("d"), py::arg("num_threads") = 0,
          "G (nb, N) * d (N,) row by row.");
}

}  // namespace tjb
