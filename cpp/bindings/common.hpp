// Include-first header for every binding translation unit: pybind11, the
// project-wide aliases, dtype dispatch and the thread-count setting.
#pragma once
#include <pybind11/complex.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <complex>
#include <cstdint>
#include <string>
#include <vector>

#include "tensorjac/parallel.hpp"

namespace py = pybind11;
using i64 = std::int64_t;
using c64 = std::complex<float>;
using c128 = std::complex<double>;

namespace tjb {

// Package-wide default thread count (already capped); 0 in a call means "use
// the default".  Python validates and caps num_threads before calling; the
// kernels' team size is capped again here (any int64, even absurd, is safe).
int& default_threads();
inline int resolve_threads(i64 requested) {
    return requested > 0 ? tensorjac::clamp_threads(requested) : default_threads();
}

// Calls f(T{}) with T the C++ type of dt; TypeError for anything else.
template <class F>
decltype(auto) dispatch(const py::dtype& dt, const char* what, F&& f) {
    switch (dt.num()) {
        case py::detail::npy_api::NPY_FLOAT_: return f(float{});
        case py::detail::npy_api::NPY_DOUBLE_: return f(double{});
        case py::detail::npy_api::NPY_CFLOAT_: return f(c64{});
        case py::detail::npy_api::NPY_CDOUBLE_: return f(c128{});
        default:
            throw py::type_error(std::string(what) + ": unsupported dtype " + py::str(dt).cast<std::string>() +
                                 " (expected float32, float64, complex64 or complex128)");
    }
}

inline std::vector<i64> shape_of(const py::array& a) {
    return std::vector<i64>(a.shape(), a.shape() + a.ndim());
}

// Strides in elements (numpy gives bytes); every array we touch is aligned.
inline std::vector<i64> elem_strides(const py::array& a) {
    std::vector<i64> s(a.ndim());
    const i64 item = static_cast<i64>(a.itemsize());
    for (py::ssize_t d = 0; d < a.ndim(); ++d) {
        if (a.strides(d) % item) throw py::value_error("array strides are not a multiple of its itemsize");
        s[d] = a.strides(d) / item;
    }
    return s;
}

// True when every stride is a whole number of elements (packed structured
// fields, e.g. an f8 field with a 12-byte stride, are not).
inline bool element_strided(const py::array& a) {
    for (py::ssize_t d = 0; d < a.ndim(); ++d)
        if (a.strides(d) % static_cast<py::ssize_t>(a.itemsize())) return false;
    return true;
}

// An input array of exactly dtype T, addressable with element strides: the
// array itself when possible, otherwise a converted or contiguous copy.
template <class T>
py::array_t<T> as_typed(const py::handle& obj, const char* what) {
    if (py::isinstance<py::array_t<T>>(obj)) {
        auto arr = py::reinterpret_borrow<py::array_t<T>>(obj);
        if (element_strided(arr)) return arr;
    }
    auto arr = py::array_t<T, py::array::forcecast>::ensure(obj);
    if (!arr) throw py::type_error(std::string(what) + ": cannot convert to the output dtype");
    if (!element_strided(arr)) arr = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(arr);
    return arr;
}

// Releasing the GIL costs more than tiny kernels do; below this many
// elements of work the call keeps it (still pure C++, never re-entering Python).
constexpr i64 kReleaseGilWork = i64(1) << 14;

// Releases the GIL for the lifetime of the guard when the work is large enough.
class MaybeRelease {
public:
    explicit MaybeRelease(i64 work) {
        if (work >= kReleaseGilWork) state_ = PyEval_SaveThread();
    }
    ~MaybeRelease() {
        if (state_) PyEval_RestoreThread(state_);
    }
    MaybeRelease(const MaybeRelease&) = delete;
    MaybeRelease& operator=(const MaybeRelease&) = delete;

private:
    PyThreadState* state_ = nullptr;
};

void bind_expand(py::module_& m);
void bind_kron(py::module_& m);
void bind_fd(py::module_& m);

}  // namespace tjb
