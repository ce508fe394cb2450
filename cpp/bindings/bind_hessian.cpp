// Binding of the in-place symmetrization of stacked square matrices (cpp/include/tensorjac/symmetrize.hpp),
// used by tj.hessian.  Python passes a C-contiguous array it owns.
#include "common.hpp"
#include "tensorjac/symmetrize.hpp"

namespace tjb {
namespace {

void symmetrize(py::array a, i64 m, i64 n, i64 num_threads) {
    if (!a.writeable()) throw py::value_error("symmetrize: array is read-only");
    if (!(a.flags() & py::array::c_style)) throw py::value_error("symmetrize: array must be C-contiguous");
    if (m < 0 || n < 0 || tensorjac::checked_mul(tensorjac::checked_mul(m, n), n) != static_cast<i64>(a.size()))
        throw py::value_error("symmetrize: m * n * n must equal the array's size");
    dispatch(a.dtype(), "symmetrize", [&](auto tag) {
        using T = decltype(tag);
        T* data = static_cast<T*>(a.mutable_data());
        const int nt = resolve_threads(num_threads);
        run_kernel(tensorjac::checked_mul(m, tensorjac::checked_mul(n, n)),
                   [&] { tensorjac::symmetrize<T>(data, m, n, nt); });
    });
}

}  // namespace

void bind_hessian(py::module_& m) {
    m.def("symmetrize", &symmetrize, py::arg("a"), py::arg("m"), py::arg("n"), py::arg("num_threads") = 0,
          "In place: a (m, n, n) C-contiguous becomes exactly symmetric in its last two axes (the mean).");
}

}  // namespace tjb
