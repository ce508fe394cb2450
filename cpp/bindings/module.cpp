#include "common.hpp"

namespace tjb {
void bind_sparse(py::module_& m);  // bind_sparse.cpp

int& default_threads() {
    static int n = tensorjac::default_threads();
    return n;
}
}  // namespace tjb

PYBIND11_MODULE(_core, m) {
    m.doc() = "tensorjac compiled kernels (private; use the tensorjac package)";
    m.attr("__version__") = TJ_VERSION;
    m.attr("compiler") = TJ_COMPILER;
    m.attr("openmp") = tensorjac::openmp_enabled();
    m.def("thread_cap", &tensorjac::thread_cap,
          "Largest team a kernel uses: the CPUs available to the process (affinity mask), "
          "limited by OMP_THREAD_LIMIT; 1 without OpenMP.");
    // The effective default: 1 in a forked child, where kernels run serially.
    m.def("get_num_threads", [] { return tensorjac::in_forked_child() ? 1 : tjb::default_threads(); });
    m.def(
        "set_num_threads",
        [](i64 n) {
            if (n < 1) throw py::value_error("num_threads must be a positive integer, got " + std::to_string(n));
            tjb::default_threads() = tensorjac::clamp_threads(n);
        },
        py::arg("n"));
    m.def(
        "_interrupt_stats",
        [] {
            py::dict d;
            d["interrupted"] = tjb::sigint::interrupted_kernels().load();
            d["running"] = tjb::sigint::kernel_running().load();
            return d;
        },
        "Diagnostics for tests: kernels stopped early by SIGINT so far, and whether an "
        "interruptible kernel is running now.");
    tjb::bind_expand(m);
    tjb::bind_kron(m);
    tjb::bind_fd(m);
    tjb::bind_hessian(m);
    tjb::bind_sparse(m);
}
