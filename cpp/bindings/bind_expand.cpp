// Binding of the expand kernel (cpp/include/tensorjac/expand.hpp).
//
// Python builds an ExpandPlan once per (op, wrt, layout, shapes): the symbolic
// term list with every variable bound to (output dim, multiplier) pairs.  Each
// call then only resolves strides of the actual output and factor arrays.
#include "common.hpp"

#include <cmath>
#include "tensorjac/expand.hpp"

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

template <class T>
bool finite_value(T v) {
    if constexpr (std::is_floating_point_v<T>) return std::isfinite(v);
    else return std::isfinite(v.real()) && std::isfinite(v.imag());
}

// True when every element of a (strided) factor array is finite.
template <class T>
bool all_finite(const py::array_t<T>& a) {
    const auto nd = a.ndim();
    const T* base = a.data();
    if (a.size() == 0) return true;
    std::vector<i64> idx(nd, 0);
    const auto str = elem_strides(a);
    i64 off = 0;
    for (i64 n = 0, total = a.size(); n < total; ++n) {
        if (!finite_value(base[off])) return false;
        for (auto d = nd - 1; d >= 0; --d) {  // odometer
            off += str[d];
            if (++idx[d] < a.shape(d)) break;
            off -= str[d] * a.shape(d);
            idx[d] = 0;
        }
    }
    return true;
}

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
        // Does the first term write every element of a result of shape_ (no zero-fill needed)?
        i64 total = 1, first = 1;
        for (auto s : shape_) total = tensorjac::checked_mul(total, s);
        if (!specs_.empty())
            for (auto s : specs_[0].size) first = tensorjac::checked_mul(first, s);
        covers_ = !specs_.empty() && first == total;
        nbytes_ = tensorjac::checked_mul(total, static_cast<i64>(dtype_.itemsize()));
    }

    // Writes the Jacobian into `out` (allocated here when None) and returns it; with
    // accumulate=True, adds it to the contents of `out` instead.
    py::tuple call(const py::object& out_obj, const py::sequence& factors, i64 num_threads,
                   bool accumulate) const {
        py::array res = call_array(out_obj, factors, num_threads, accumulate);
        return py::make_tuple(res, finite_);
    }

    py::array call_array(const py::object& out_obj, const py::sequence& factors, i64 num_threads,
                         bool accumulate) const {
        if (out_obj.is_none()) {
            if (accumulate) throw py::value_error("accumulate=True needs an out array");
            // Lazily zeroed pages pay off for sparse results of moderate size; a large result is
            // zero-filled by the (threaded, interruptible) kernel instead, since the OS zeroes the pages
            // a scattered structure touches in page faults that Ctrl-C cannot stop.
            if (covers_ || nbytes_ > kLazyZeroMax) {
                py::array out(dtype_, shape_);
                run(out, factors, num_threads, tensorjac::ExpandMode::write);
                return out;
            }
            // Sparse structure: numpy.zeros gives lazily zeroed pages, so untouched memory is never written.
            py::array out = py::module_::import("numpy").attr("zeros")(py::tuple(py::cast(shape_)), dtype_);
            run(out, factors, num_threads, tensorjac::ExpandMode::zeroed);
            return out;
        }
        py::array out(out_obj);
        run(out, factors, num_threads, accumulate ? tensorjac::ExpandMode::accumulate : tensorjac::ExpandMode::write);
        return out;
    }

    void run(py::array out, const py::sequence& factors, i64 num_threads, tensorjac::ExpandMode mode) const {
        if (!out.writeable()) throw py::value_error("out: array is read-only");
        if (!element_strided(out)) {
            // e.g. a packed structured field: work on a contiguous twin, then let numpy copy.
            auto np = py::module_::import("numpy");
            py::array twin = mode == tensorjac::ExpandMode::accumulate ? py::array(np.attr("ascontiguousarray")(out))
                                                                       : py::array(out.dtype(), shape_of(out));
            run(twin, factors, num_threads,
                mode == tensorjac::ExpandMode::accumulate ? mode : tensorjac::ExpandMode::write);
            np.attr("copyto")(out, twin);
            return;
        }
        if (out.ndim() != out_ndim_)
            throw py::value_error("out: expected " + std::to_string(out_ndim_) + " dimensions, got " +
                                  std::to_string(out.ndim()));
        if (static_cast<int>(py::len(factors)) != nslots_)
            throw py::value_error("ExpandPlan.run: wrong number of factor arrays");
        const auto shape = shape_of(out);
        bool empty = false;
        i64 total = 1;
        for (auto s : shape) {
            empty |= (s == 0);
            total = tensorjac::checked_mul(total, s);
        }
        for (const auto& reach : reach_)
            for (int d = 0; d < out_ndim_ && !empty; ++d)
                if (reach[d] >= shape[d]) throw py::value_error("out: shape too small for this Jacobian");
        dispatch(out.dtype(), "out", [&](auto tag) {
            using T = decltype(tag);
            std::vector<py::array_t<T>> arrs;
            arrs.reserve(nslots_);
            for (int s = 0; s < nslots_; ++s) arrs.push_back(as_typed<T>(factors[s], "factor"));
            const auto ostr = elem_strides(out);
            std::vector<tensorjac::Term<T>> terms;
            terms.reserve(specs_.size());
            for (const auto& spec : specs_) {
                tensorjac::Term<T> term;
                if constexpr (std::is_floating_point_v<T>) term.coef = static_cast<T>(spec.coef.real());
                else term.coef = T(spec.coef);
                term.size = spec.size;
                term.out_stride.assign(spec.size.size(), 0);
                for (const auto& bd : spec.out)
                    term.out_stride[bd.var] = tensorjac::checked_add(
                        term.out_stride[bd.var], tensorjac::checked_mul(bd.mult, ostr[bd.dim]));
                for (const auto& fr : spec.factors) {
                    const auto& a = arrs[fr.slot];
                    if (a.ndim() != static_cast<py::ssize_t>(fr.axis_var.size()))
                        throw py::value_error("factor " + std::to_string(fr.slot) + ": expected " +
                                              std::to_string(fr.axis_var.size()) + " dimensions, got " +
                                              std::to_string(a.ndim()));
                    tensorjac::Factor<T> f;
                    f.data = a.data();
                    f.stride.assign(spec.size.size(), 0);
                    const auto fstr = elem_strides(a);
                    for (std::size_t ax = 0; ax < fr.axis_var.size(); ++ax) {
                        const int v = fr.axis_var[ax];
                        if (a.shape(ax) != spec.size[v])
                            throw py::value_error("factor " + std::to_string(fr.slot) + ": axis " +
                                                  std::to_string(ax) + " has length " +
                                                  std::to_string(a.shape(ax)) + ", expected " +
                                                  std::to_string(spec.size[v]));
                        f.stride[v] = tensorjac::checked_add(f.stride[v], fstr[ax]);
                    }
                    term.factors.push_back(std::move(f));
                }
                terms.push_back(std::move(term));
            }
            // The package's non-finite policy: warn when a factor (hence, possibly, the result) is not
            // finite.  Factors are small next to the result, so the scan is cheap.
            bool finite = true;
            for (const auto& a : arrs) {
                finite = all_finite<T>(a);
                if (!finite) break;
            }
            finite_ = finite;
            T* data = static_cast<T*>(out.mutable_data());
            const int nt = resolve_threads(num_threads);
            // Interruptible: on Ctrl-C `out` is left partly written (a fresh result is dropped).
            run_kernel(total, [&] { tensorjac::expand<T>(data, shape, ostr, terms, nt, mode); });
        });
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
    mutable bool finite_ = true;  // were the factors of the last call all finite? (read right after it, GIL held)
};

}  // namespace

void bind_expand(py::module_& m) {
    py::class_<ExpandPlan>(m, "ExpandPlan")
        .def(py::init<const py::list&, std::vector<i64>, int, py::dtype>(), py::arg("terms"),
             py::arg("shape"), py::arg("nslots"), py::arg("dtype"))
        .def("__call__", &ExpandPlan::call, py::arg("out"), py::arg("factors"), py::arg("num_threads") = 0,
             py::arg("accumulate") = false,
             "Write the Jacobian into out (or a new array when out is None); accumulate=True adds it to "
             "out instead.  Returns (result, whether every factor was finite).");
}

}  // namespace tjb
