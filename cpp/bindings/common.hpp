// Include-first header for every binding translation unit: pybind11, the
// project-wide aliases, dtype dispatch and the thread-count setting.
#pragma once
#include <pybind11/complex.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <complex>
#include <cstring>
#include <cstdint>
#include <string>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <signal.h>
#include <unistd.h>
#define TJ_HAVE_SIGACTION 1
#endif
#if defined(__linux__)
#include <sys/syscall.h>
#endif

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

// ----------------------------------------------------------------------------- Ctrl-C
//
// Kernels run with the GIL released, so Python's SIGINT handler cannot run
// until they return.  For large kernels called from the main thread,
// run_kernel installs a C-level SIGINT handler for the kernel's duration; it
// sets an atomic flag that parallel_blocks polls (tensorjac::ScopedCancel),
// and chains to the handler it replaced (Python's, which records the signal
// for the interpreter exactly as if it had run itself).  The kernel then
// stops within a poll interval and throws tensorjac::Interrupted; back with
// the GIL, run_kernel restores Python's handler and runs PyErr_CheckSignals,
// which raises KeyboardInterrupt (or whatever the Python-level handler
// raises).  A handler that does not raise lets run_kernel start the kernel
// again from scratch.  SIG_IGN / SIG_DFL dispositions are left alone.

// Below this much work a kernel is not worth the two sigaction calls: it
// finishes within milliseconds and Python handles the signal on return.
constexpr i64 kInterruptibleWork = i64(1) << 20;

namespace sigint {

inline tensorjac::CancelFlag& flag() {
    static tensorjac::CancelFlag f{false};
    return f;
}

// Diagnostics for tests: kernels that stopped early because of a signal, and
// whether an interruptible kernel is running right now.
inline std::atomic<long long>& interrupted_kernels() {
    static std::atomic<long long> n{0};
    return n;
}
inline std::atomic<bool>& kernel_running() {
    static std::atomic<bool> running{false};
    return running;
}
struct RunningMark {
    RunningMark() { kernel_running().store(true); }
    ~RunningMark() { kernel_running().store(false); }
};

// The Python main thread (CPython runs signal handlers only there).
inline bool on_main_thread() {
#if defined(__linux__)
    return static_cast<long>(syscall(SYS_gettid)) == static_cast<long>(getpid());
#elif defined(__APPLE__)
    return pthread_main_np() != 0;
#else
    return false;
#endif
}

#ifdef TJ_HAVE_SIGACTION
inline struct sigaction& previous() {
    static struct sigaction prev;
    return prev;
}

extern "C" inline void tj_on_sigint(int sig, siginfo_t* info, void* ctx) {
    flag().store(true, std::memory_order_relaxed);
    const struct sigaction& p = previous();
    if (p.sa_flags & SA_SIGINFO) {
        if (p.sa_sigaction) p.sa_sigaction(sig, info, ctx);
    } else if (p.sa_handler != SIG_DFL && p.sa_handler != SIG_IGN && p.sa_handler != nullptr) {
        p.sa_handler(sig);
    }
}
#endif

// Installs tj_on_sigint while alive, when SIGINT has a handler function
// (Python's) to chain to.  Main thread and GIL only: nothing else changes
// SIGINT's disposition meanwhile, and scopes do not nest.
class Scope {
public:
    Scope() {
#ifdef TJ_HAVE_SIGACTION
        struct sigaction cur;
        if (sigaction(SIGINT, nullptr, &cur) != 0) return;
        if (cur.sa_flags & SA_SIGINFO) {
            if (cur.sa_sigaction == &tj_on_sigint) return;  // already ours
        } else if (cur.sa_handler == SIG_DFL || cur.sa_handler == SIG_IGN) {
            return;
        }
        previous() = cur;
        flag().store(false, std::memory_order_relaxed);
        struct sigaction ours;
        std::memset(&ours, 0, sizeof(ours));
        sigemptyset(&ours.sa_mask);
        ours.sa_sigaction = &tj_on_sigint;
        ours.sa_flags = SA_SIGINFO | (cur.sa_flags & (SA_ONSTACK | SA_RESTART));
        active_ = sigaction(SIGINT, &ours, nullptr) == 0;
#endif
    }
    ~Scope() {
#ifdef TJ_HAVE_SIGACTION
        if (active_) sigaction(SIGINT, &previous(), nullptr);
#endif
    }
    bool active() const { return active_; }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

private:
    bool active_ = false;
};

}  // namespace sigint

// Runs kernel() -- pure C++ that never touches Python objects -- with the GIL
// released when `work` (about the elements it reads or writes) is large
// enough, and interruptible by Ctrl-C when it is larger still and called
// from the main thread (see above).  On an interrupt the error propagates as
// the KeyboardInterrupt set by Python's handler; the output is partly
// written, so callers must not hand it out.  Use it for every kernel call:
//     run_kernel(work, [&] { tensorjac::some_kernel<T>(...); });
template <class F>
void run_kernel(i64 work, F&& kernel) {
    if (work < kInterruptibleWork || !sigint::on_main_thread()) {
        MaybeRelease release(work);
        kernel();
        return;
    }
    for (;;) {
        bool interrupted = false;
        {
            sigint::Scope scope;
            if (!scope.active()) {
                py::gil_scoped_release nogil;
                kernel();
                return;
            }
            // A signal that arrived before the handler was swapped in.
            if (PyErr_CheckSignals() != 0) throw py::error_already_set();
            tensorjac::ScopedCancel cancel(&sigint::flag());
            py::gil_scoped_release nogil;
            sigint::RunningMark mark;
            try {
                kernel();
            } catch (const tensorjac::Interrupted&) {
                interrupted = true;
            }
        }
        if (!interrupted) return;
        sigint::interrupted_kernels().fetch_add(1, std::memory_order_relaxed);
        if (PyErr_CheckSignals() != 0) throw py::error_already_set();
        // The Python-level handler returned normally: run the kernel again.
    }
}

void bind_expand(py::module_& m);
void bind_kron(py::module_& m);
void bind_fd(py::module_& m);
void bind_hessian(py::module_& m);

}  // namespace tjb
