// Binding of the expand kernel (cpp/include/tensorjac/expand.hpp).
//
// Python builds an ExpandPlan once per (op, wrt, layout, shapes): the symbolic
// term list with every variable bound to (output dim, multiplier) pairs.  Each
// call then only resolves strides of the actual output and factor arrays.
#include "common.hpp"

#include <tuple>

#include "expand_instances.hpp"  // tensorjac/expand.hpp, its instantiations compiled in bind_expand_<dtype>.cpp

namespace tjb {
namespace {

struct Binding {
    int var;
    int dim;
    i64 mult;
};

struct FactorRef {
    int slot;
    std::vector<int> axis_var;  // the variable indexing each axis of the factor
};

struct TermSpec {
    c128 coef;
    std::vector<i64> size;
    std::vector<Binding> out;
    std::vector<FactorRef> factors;
};

// Per-dtype storage of a call's term list and factor handles, reused by the
// next call (no allocation per call once warm).  Only touched with the GIL
// held; a call made while another one's kernel runs (GIL released) uses its own.
template <class T>
struct Scratch {
    std::vector<py::array_t<T>> arrs;
    std::vector<tensorjac::Term<T>> terms;
    std::vector<i64> shape, ostr;
};

class ExpandPlan {
public:
    ExpandPlan(const py::list& terms, std::vector<i64> shape, int nslots, py::dtype dtype)
        : out_ndim_(static_cast<int>(shape.size())), nslots_(nslots), shape_(std::move(shape)),
          dtype_(std::move(dtype)) {
        const int out_ndim = out_ndim_;
        for (const auto& item : terms) {
            auto t = item.cast<py::tuple>();
            if (t.size() != 4) throw py::value_error("ExpandPlan: a term is (coef, sizes, bindings, factors)");
            TermSpec spec;
            spec.coef = t[0].cast<c128>();
            spec.size = t[1].cast<std::vector<i64>>();
            const int V = static_cast<int>(spec.size.size());
            i64 extent = 1;  // positions the term touches: must be countable
            for (i64 sz : spec.size) {
                if (sz < 0) throw py::value_error("ExpandPlan: negative variable size");
                extent = tensorjac::checked_mul(extent, sz);
            }
            for (const auto& b : t[2].cast<py::list>()) {
                auto bt = b.cast<std::tuple<int, int, i64>>();
                Binding bd{std::get<0>(bt), std::get<1>(bt), std::get<2>(bt)};
                if (bd.var < 0 || bd.var >= V || bd.dim < 0 || bd.dim >= out_ndim || bd.mult < 0)
                    throw py::value_error("ExpandPlan: binding out of range");
                spec.out.push_back(bd);
            }
            for (const auto& f : t[3].cast<py::list>()) {
                auto ft = f.cast<std::tuple<int, std::vector<int>>>();
                FactorRef fr{std::get<0>(ft), std::get<1>(ft)};
                if (fr.slot < 0 || fr.slot >= nslots) throw py::value_error("ExpandPlan: factor slot out of range");
                for (int v : fr.axis_var)
                    if (v < 0 || v >= V) throw py::value_error("ExpandPlan: factor variable out of range");
                spec.factors.push_back(std::move(fr));
            }
            // Every write must stay inside the output: per dim, sum of mult*(size-1) < extent is
            // checked against the actual array in run(); here we precompute the per-dim reach.
            std::vector<i64> reach(out_ndim, 0);
            for (const auto& bd : spec.out)
                if (spec.size[bd.var] > 0)
                    reach[bd.dim] = tensorjac::checked_add(
                        reach[bd.dim], tensorjac::checked_mul(bd.mult, spec.size[bd.var] - 1));
            reach_.push_back(std::move(reach));
            specs_.push_back(std::move(spec));
        }
        // Does the first term (or the second, which the kernel then runs first) write every element of
        // a result of shape_ (no zero-fill needed)?
        i64 total = 1;
        for (auto s : shape_) total = tensorjac::checked_mul(total, s);
        for (std::size_t t = 0; t < specs_.size() && t < 2 && !covers_; ++t) {
            i64 extent = 1;
            for (auto s : specs_[t].size) extent = tensorjac::checked_mul(extent, s);
            covers_ = extent == total;
        }
        nbytes_ = tensorjac::checked_mul(total, static_cast<i64>(dtype_.itemsize()));
    }

    // Writes the Jacobian into `out` (allocated here when None) and returns (it, whether every
    // factor value read was finite); with accumulate=True, adds it to the contents of `out` instead.
    py::tuple call(const py::object& out_obj, const py::sequence& factors, i64 num_threads,
                   bool accumulate) const {
        bool finite = true;
        py::array res = call_array(out_obj, factors, num_threads, accumulate, finite);
        return py::make_tuple(res, finite);
    }

    py::array call_array(const py::object& out_obj, const py::sequence& factors, i64 num_threads,
                         bool accumulate, bool& finite) const {
        if (out_obj.is_none()) {
            if (accumulate) throw py::value_error("accumulate=True needs an out array");
            // Lazily zeroed pages pay off for sparse results of moderate size; a large result is
            // zero-filled by the (threaded, interruptible) kernel instead, since the OS zeroes the pages
            // a scattered structure touches in page faults that Ctrl-C cannot stop.
            if (covers_ || nbytes_ > kLazyZeroMax) {
                py::array out(dtype_, shape_);
                finite = run(out, factors, num_threads, tensorjac::ExpandMode::write);
                return out;
            }
            // Sparse structure: numpy.zeros gives lazily zeroed pages, so untouched memory is never written.
            py::array out = py::module_::import("numpy").attr("zeros")(py::tuple(py::cast(shape_)), dtype_);
            finite = run(out, factors, num_threads, tensorjac::ExpandMode::zeroed);
            return out;
        }
        py::array out(out_obj);
        finite = run(out, factors, num_threads,
                     accumulate ? tensorjac::ExpandMode::accumulate : tensorjac::ExpandMode::write);
        return out;
    }

    // Returns whether every factor value the kernel read was finite.
    bool run(py::array out, const py::sequence& factors, i64 num_threads, tensorjac::ExpandMode mode) const {
        if (!out.writeable()) throw py::value_error("out: array is read-only");
        if (!element_strided(out)) {
            // e.g. a packed structured field: work on a contiguous twin, then let numpy copy.
            auto np = py::module_::import("numpy");
            py::array twin = mode == tensorjac::ExpandMode::accumulate ? py::array(np.attr("ascontiguousarray")(out))
                                                                       : py::array(out.dtype(), shape_of(out));
            const bool finite = run(twin, factors, num_threads,
                                    mode == tensorjac::ExpandMode::accumulate ? mode : tensorjac::ExpandMode::write);
            np.attr("copyto")(out, twin);
            return finite;
        }
        if (out.ndim() != out_ndim_)
            throw py::value_error("out: expected " + std::to_string(out_ndim_) + " dimensions, got " +
                                  std::to_string(out.ndim()));
        if (static_cast<int>(py::len(factors)) != nslots_)
            throw py::value_error("ExpandPlan.run: wrong number of factor arrays");
        return dispatch(out.dtype(), "out", [&](auto tag) {
            using T = decltype(tag);
            Scratch<T>& mine = std::get<Scratch<T>>(scratch_);
            if (busy_) {  // another call's kernel is running (it released the GIL): use fresh storage
                Scratch<T> own;
                return run_typed<T>(out, factors, num_threads, mode, own);
            }
            busy_ = true;
            struct Release {
                Scratch<T>& s;
                bool& busy;
                ~Release() {
                    s.arrs.clear();  // drop the references to this call's factors (the capacity stays)
                    busy = false;
                }
            } release{mine, busy_};
            return run_typed<T>(out, factors, num_threads, mode, mine);
        });
    }

    template <class T>
    bool run_typed(py::array& out, const py::sequence& factors, i64 num_threads, tensorjac::ExpandMode mode,
                   Scratch<T>& sc) const {
        const int nd = out_ndim_;
        sc.shape.assign(out.shape(), out.shape() + nd);
        sc.ostr.resize(nd);
        const i64 item = static_cast<i64>(out.itemsize());
        bool empty = false;
        i64 total = 1;
        for (int d = 0; d < nd; ++d) {
            sc.ostr[d] = out.strides(d) / item;
            empty |= (sc.shape[d] == 0);
            total = tensorjac::checked_mul(total, sc.shape[d]);
        }
        for (const auto& reach : reach_)
            for (int d = 0; d < nd && !empty; ++d)
                if (reach[d] >= sc.shape[d]) throw py::value_error("out: shape too small for this Jacobian");
        sc.arrs.clear();
        for (int s = 0; s < nslots_; ++s) sc.arrs.push_back(as_typed<T>(factors[s], "factor"));
        sc.terms.resize(specs_.size());
        for (std::size_t t = 0; t < specs_.size(); ++t) {
            const TermSpec& spec = specs_[t];
            tensorjac::Term<T>& term = sc.terms[t];
            if constexpr (std::is_floating_point_v<T>) term.coef = static_cast<T>(spec.coef.real());
            else term.coef = T(spec.coef);
            const std::size_t V = spec.size.size();
            term.size.assign(spec.size.begin(), spec.size.end());
            term.out_stride.assign(V, 0);
            for (const auto& bd : spec.out)
                term.out_stride[bd.var] = tensorjac::checked_add(
                    term.out_stride[bd.var], tensorjac::checked_mul(bd.mult, sc.ostr[bd.dim]));
            term.factors.resize(spec.factors.size());
            for (std::size_t k = 0; k < spec.factors.size(); ++k) {
                const FactorRef& fr = spec.factors[k];
                const auto& a = sc.arrs[fr.slot];
                if (a.ndim() != static_cast<py::ssize_t>(fr.axis_var.size()))
                    throw py::value_error("factor " + std::to_string(fr.slot) + ": expected " +
                                          std::to_string(fr.axis_var.size()) + " dimensions, got " +
                                          std::to_string(a.ndim()));
                tensorjac::Factor<T>& f = term.factors[k];
                f.data = a.data();
                f.stride.assign(V, 0);
                for (std::size_t ax = 0; ax < fr.axis_var.size(); ++ax) {
                    const int v = fr.axis_var[ax];
                    if (a.shape(ax) != spec.size[v])
                        throw py::value_error("factor " + std::to_string(fr.slot) + ": axis " + std::to_string(ax) +
                                              " has length " + std::to_string(a.shape(ax)) + ", expected " +
                                              std::to_string(spec.size[v]));
                    if (a.strides(ax) % static_cast<py::ssize_t>(sizeof(T)))
                        throw py::value_error("array strides are not a multiple of its itemsize");
                    f.stride[v] = tensorjac::checked_add(f.stride[v], a.strides(ax) / static_cast<i64>(sizeof(T)));
                }
            }
        }
        T* data = static_cast<T*>(out.mutable_data());
        const int nt = resolve_threads(num_threads);
        // The package's non-finite policy: report whether a factor value (hence, possibly, the
        // result) is not finite; the kernel checks what it reads (big factors as it reads them).
        bool finite = true;
        // Interruptible: on Ctrl-C `out` is left partly written (a fresh result is dropped).
        run_kernel(total, [&] { tensorjac::expand<T>(data, sc.shape, sc.ostr, sc.terms, nt, mode, &finite); });
        return finite;
    }

private:
    int out_ndim_;
    int nslots_;
    std::vector<i64> shape_;
    py::dtype dtype_;
    std::vector<TermSpec> specs_;
    std::vector<std::vector<i64>> reach_;
    bool covers_ = false;
    i64 nbytes_ = 0;
    static constexpr i64 kLazyZeroMax = i64(64) << 20;
    mutable std::tuple<Scratch<float>, Scratch<double>, Scratch<c64>, Scratch<c128>> scratch_;
    mutable bool busy_ = false;  // scratch_ in use by a running call (set and cleared with the GIL held)
};

}  // namespace

void bind_expand(py::module_& m) {
    m.def(
        "expand_simd",
        [](const py::object& level) {
            if (!level.is_none()) {
                const auto name = level.cast<std::string>();
                if (name != "baseline" && name != "auto")
                    throw py::value_error("expand_simd: expected 'baseline' or 'auto', got '" + name + "'");
                tensorjac::expand_force_baseline(name == "baseline");
            }
            return tensorjac::expand_simd() == tensorjac::Simd::avx2 ? "avx2" : "baseline";
        },
        py::arg("level") = py::none(),
        "The instruction set of the expand row kernels ('avx2' or 'baseline'); level='baseline' forces the "
        "baseline (SSE2 on x86-64), 'auto' restores the best the CPU has.  Both give the same bits.");
    py::class_<ExpandPlan>(m, "ExpandPlan")
        .def(py::init<const py::list&, std::vector<i64>, int, py::dtype>(), py::arg("terms"),
             py::arg("shape"), py::arg("nslots"), py::arg("dtype"))
        .def("__call__", &ExpandPlan::call, py::arg("out"), py::arg("factors"), py::arg("num_threads") = 0,
             py::arg("accumulate") = false,
             "Write the Jacobian into out (or a new array when out is None); accumulate=True adds it to "
             "out instead.  Returns (result, whether every factor value read was finite).");
}

}  // namespace tjb
