// Bindings of the sparse-Jacobian kernels (cpp/include/tensorjac/sparse.hpp).
//
// tensorjac._sparse computes the grid (the term's letters in sorted order),
// the multipliers and the factors' element strides, and hands over freshly
// allocated output arrays; these functions re-check that every read and write
// stays inside its array, then release the GIL around the kernel
// (interruptible by Ctrl-C: the caller then drops the partly written arrays).
#include "common.hpp"
#include "tensorjac/sparse.hpp"

namespace tjb {
namespace {

std::vector<i64> int64_vector(const py::array& a, const char* name) {
    auto v = py::array_t<i64, py::array::c_style | py::array::forcecast>::ensure(a);
    if (!v || v.ndim() != 1) throw py::value_error(std::string(name) + ": expected a 1-D integer array");
    return std::vector<i64>(v.data(), v.data() + v.size());
}

// The grid: nd >= 1 sizes, each >= 1, and its number of entries.
i64 grid_size(const std::vector<i64>& sizes) {
    if (sizes.empty()) throw py::value_error("sparse kernels: the grid needs at least one dimension");
    i64 n = 1;
    for (i64 s : sizes) {
        if (s < 1) throw py::value_error("sparse kernels: grid sizes must be >= 1");
        n = tensorjac::checked_mul(n, s);
    }
    return n;
}

void require_out(const py::array& out, i64 n, const char* name) {
    if (out.ndim() != 1 || out.shape(0) != n)
        throw py::value_error(std::string(name) + ": expected a 1-D array of " + std::to_string(n) + " entries");
    if (!(out.flags() & py::array::c_style)) throw py::value_error(std::string(name) + ": must be C-contiguous");
    if (!out.writeable()) throw py::value_error(std::string(name) + ": must be writeable");
}

void sparse_index(py::array out, const py::array& sizes_a, const py::array& mults_a, i64 num_threads) {
    const auto sizes = int64_vector(sizes_a, "sizes"), mults = int64_vector(mults_a, "mults");
    if (mults.size() != sizes.size()) throw py::value_error("sparse_index: sizes and mults differ in length");
    const i64 n = grid_size(sizes);
    require_out(out, n, "sparse_index: out");
    // the largest coordinate must fit the index dtype (negative multipliers are never produced)
    i64 top = 0;
    for (std::size_t k = 0; k < sizes.size(); ++k) {
        if (mults[k] < 0) throw py::value_error("sparse_index: multipliers must be >= 0");
        top = tensorjac::checked_add(top, tensorjac::checked_mul(sizes[k] - 1, mults[k]));
    }
    const int nd = static_cast<int>(sizes.size());
    const int nt = resolve_threads(num_threads);
    const int num = out.dtype().num();
    if (num == py::dtype::of<std::int32_t>().num() && out.itemsize() == 4) {
        if (top > INT32_MAX) throw py::value_error("sparse_index: coordinates do not fit in int32");
        auto* o = static_cast<std::int32_t*>(out.mutable_data());
        run_kernel(n, [&] { tensorjac::grid_index<std::int32_t>(o, nd, sizes.data(), mults.data(), nt); });
    } else if (out.dtype().kind() == 'i' && out.itemsize() == 8) {
        auto* o = static_cast<std::int64_t*>(out.mutable_data());
        run_kernel(n, [&] { tensorjac::grid_index<std::int64_t>(o, nd, sizes.data(), mults.data(), nt); });
    } else {
        throw py::type_error("sparse_index: out must be int32 or int64");
    }
}

bool sparse_values(py::array out, const py::list& factors, const py::array& strides_a, const py::array& sizes_a,
                   i64 num_threads) {
    const auto sizes = int64_vector(sizes_a, "sizes");
    const i64 n = grid_size(sizes);
    require_out(out, n, "sparse_values: out");
    const int nd = static_cast<int>(sizes.size());
    const auto nf = static_cast<int>(factors.size());
    if (nf < 1) throw py::value_error("sparse_values: needs at least one factor");
    auto strides = int64_vector(strides_a, "strides");
    if (strides.size() != static_cast<std::size_t>(nf) * sizes.size())
        throw py::value_error("sparse_values: strides must hold one stride per factor and grid dimension");
    std::vector<py::array> keep;
    keep.reserve(static_cast<std::size_t>(nf));
    for (int f = 0; f < nf; ++f) {
        auto a = py::reinterpret_borrow<py::array>(factors[static_cast<std::size_t>(f)]);
        if (!a.dtype().equal(out.dtype())) throw py::type_error("sparse_values: factors must have out's dtype");
        // every element the grid reads lies inside the factor's memory span
        const i64 item = static_cast<i64>(a.itemsize());
        i64 lo_a = 0, hi_a = 0, lo_g = 0, hi_g = 0;
        for (py::ssize_t d = 0; d < a.ndim(); ++d) {
            if (a.shape(d) == 0) throw py::value_error("sparse_values: empty factor");
            if (a.strides(d) % item) throw py::value_error("sparse_values: strides not a multiple of the itemsize");
            const i64 span = (a.shape(d) - 1) * (a.strides(d) / item);
            (span < 0 ? lo_a : hi_a) += span;
        }
        for (int k = 0; k < nd; ++k) {
            const i64 span = tensorjac::checked_mul(sizes[k] - 1, strides[static_cast<std::size_t>(f * nd + k)]);
            (span < 0 ? lo_g : hi_g) = tensorjac::checked_add(span < 0 ? lo_g : hi_g, span);
        }
        if (lo_g < lo_a || hi_g > hi_a) throw py::value_error("sparse_values: a factor's strides leave its memory");
        keep.push_back(a);
    }
    bool finite = true;
    dispatch(out.dtype(), "sparse_values", [&](auto tag) {
        using T = decltype(tag);
        std::vector<const T*> ptrs;
        for (auto& a : keep) ptrs.push_back(static_cast<const T*>(a.data()));
        T* o = static_cast<T*>(out.mutable_data());
        const int nt = resolve_threads(num_threads);
        run_kernel(tensorjac::checked_mul(n, nf + 1), [&] {
            finite = tensorjac::grid_values<T>(o, nd, sizes.data(), nf, ptrs.data(), strides.data(), nt);
        });
    });
    return finite;
}

bool all_finite(const py::array& a, i64 num_threads) {
    if (!(a.flags() & py::array::c_style)) throw py::value_error("all_finite: must be C-contiguous");
    return dispatch(a.dtype(), "all_finite", [&](auto tag) {
        using T = decltype(tag);
        const T* p = static_cast<const T*>(a.data());
        const i64 n = static_cast<i64>(a.size());
        const int nt = resolve_threads(num_threads);
        bool finite = true;
        run_kernel(n, [&] { finite = tensorjac::all_finite<T>(p, n, nt); });
        return finite;
    });
}

}  // namespace

void bind_sparse(py::module_& m) {
    m.def("sparse_index", &sparse_index, py::arg("out"), py::arg("sizes"), py::arg("mults"),
          py::arg("num_threads") = 0,
          "out[g] = sum_k g_k * mults[k] over the row-major grid `sizes` (out: 1-D int32/int64).");
    m.def("sparse_values", &sparse_values, py::arg("out"), py::arg("factors"), py::arg("strides"), py::arg("sizes"),
          py::arg("num_threads") = 0,
          "out[g] = prod_f factors[f][g . strides[f]] over the grid; returns whether all values are finite.");
    m.def("all_finite", &all_finite, py::arg("a"), py::arg("num_threads") = 0,
          "Whether every value of the C-contiguous array a is finite.");
}

}  // namespace tjb
