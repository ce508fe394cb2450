// tensorjac from C++: the Jacobian of A X B with respect to X in two layouts,
// a Kronecker matvec, and a finite-difference check, each compared with
// naive loops.  Prints OK and returns 0, or names the mismatch and returns 1.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

#include <tensorjac/tensorjac.hpp>

namespace tj = tensorjac;
using i64 = std::int64_t;

static int failures = 0;

static void expect_close(const char* what, const std::vector<double>& got, const std::vector<double>& want,
                         double tol) {
    double worst = got.size() == want.size() ? 0.0 : INFINITY;
    for (std::size_t e = 0; e < got.size() && e < want.size(); ++e)
        worst = std::fmax(worst, std::fabs(got[e] - want[e]));
    const bool ok = worst <= tol;
    std::printf("%-44s max |error| %.3g  %s\n", what, worst, ok ? "ok" : "MISMATCH");
    failures += !ok;
}

int main() {
    const i64 m = 3, n = 4, p = 5, q = 2;  // A (m x n), X (n x p), B (p x q): F = A X B is m x q
    std::vector<double> A(m * n), X(n * p), B(p * q);
    for (i64 e = 0; e < m * n; ++e) A[e] = std::sin(1.0 + e);
    for (i64 e = 0; e < n * p; ++e) X[e] = std::cos(0.5 * e);
    for (i64 e = 0; e < p * q; ++e) B[e] = 0.25 * e - 1.0;

    // dF[i, j] / dX[k, l] = A[i, k] B[l, j]: one term, two factors, no delta.
    tj::JacobianTerms<double> dF("ij", "kl", {{'i', m}, {'j', q}, {'k', n}, {'l', p}});
    dF.add(1.0, {{A.data(), "ik"}, {B.data(), "lj"}});

    // tensor layout: J[i, j, k, l], shape (m, q, n, p)
    std::vector<double> J = dF.evaluate(tj::Layout::tensor), want(J.size());
    for (i64 i = 0; i < m; ++i)
        for (i64 j = 0; j < q; ++j)
            for (i64 k = 0; k < n; ++k)
                for (i64 l = 0; l < p; ++l) want[((i * q + j) * n + k) * p + l] = A[i * n + k] * B[l * q + j];
    expect_close("d(AXB)/dX, tensor layout (m, q, n, p)", J, want, 0.0);

    // vec layout (Magnus-Neudecker): dvec(F)/dvec(X)^T = kron(B^T, A), shape (m q, n p)
    std::vector<double> Jvec = dF.evaluate(tj::Layout::vec, /*num_threads=*/2), kron(m * q * n * p);
    for (i64 j = 0; j < q; ++j)
        for (i64 i = 0; i < m; ++i)
            for (i64 l = 0; l < p; ++l)
                for (i64 k = 0; k < n; ++k) kron[(j * m + i) * (n * p) + l * n + k] = B[l * q + j] * A[i * n + k];
    expect_close("d(AXB)/dX, vec layout = kron(B^T, A)", Jvec, kron, 0.0);

    // kron_matvec: y = kron(A, B) x for a batch of 3 vectors, without forming kron(A, B)
    const i64 nb = 3;
    std::vector<double> x(nb * n * q), y(nb * m * p), ywant(nb * m * p, 0.0);
    for (i64 e = 0; e < nb * n * q; ++e) x[e] = 1.0 / (1.0 + e);
    tj::kron_matvec<double>({{A.data(), m, n}, {B.data(), p, q}}, x.data(), nb, y.data());
    for (i64 b = 0; b < nb; ++b)
        for (i64 i = 0; i < m; ++i)
            for (i64 k = 0; k < p; ++k)
                for (i64 j = 0; j < n; ++j)
                    for (i64 l = 0; l < q; ++l)
                        ywant[b * m * p + i * p + k] += A[i * n + j] * B[k * q + l] * x[b * n * q + j * q + l];
    expect_close("kron_matvec([A, B], x), 3 vectors", y, ywant, 1e-12);

    // finite differences of the same F, central stencil, vec layout: matches kron(B^T, A)
    auto F = [&](const double* xin, double* out) {  // out = vec(A X B), X = unvec(xin) (column-major)
        for (i64 j = 0; j < q; ++j)
            for (i64 i = 0; i < m; ++i) {
                double s = 0;
                for (i64 k = 0; k < n; ++k)
                    for (i64 l = 0; l < p; ++l) s += A[i * n + k] * xin[l * n + k] * B[l * q + j];
                out[j * m + i] = s;
            }
    };
    std::vector<double> xvec(n * p), Jfd(m * q * n * p), err(Jfd.size());
    for (i64 k = 0; k < n; ++k)
        for (i64 l = 0; l < p; ++l) xvec[l * n + k] = X[k * p + l];
    tj::fd::jacobian(F, xvec.data(), n * p, m * q, Jfd.data(), err.data());
    double worst_err = 0;
    for (double e : err) worst_err = std::fmax(worst_err, e);
    expect_close("fd::jacobian (central) vs kron(B^T, A)", Jfd, kron, 10 * worst_err + 1e-12);

    std::printf("%s (OpenMP %s, up to %d threads)\n", failures ? "FAILED" : "OK", tj::openmp_enabled() ? "on" : "off",
                tj::thread_cap());
    return failures ? 1 : 0;
}
