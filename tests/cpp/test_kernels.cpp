// Unit tests of the header-only kernels: checked arithmetic, parallel_blocks
// (coverage, alignment, exceptions, cancellation, thread cap, fork), expand
// and the kron kernels against naive loops.  No framework: CHECK records a
// failure and carries on; the exit code is the number of failed checks.
//
// Built with and without OpenMP by tests/test_cpp_kernels.py.
#include <atomic>
#include <chrono>
#include <algorithm>
#include <complex>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "tensorjac/expand.hpp"
#include "tensorjac/kron.hpp"
#include "tensorjac/parallel.hpp"

#include "check.hpp"

#if defined(__unix__) || defined(__APPLE__)
#include <sys/wait.h>
#include <unistd.h>
#define TJ_TEST_FORK 1
#endif

namespace tj = tensorjac;
using i64 = std::int64_t;

// CHECK_THROWS(Type, expr): expr throws exactly an exception of type Type (or derived).
#define CHECK_THROWS(Type, expr)                                                      \
    do {                                                                              \
        bool caught_ = false;                                                         \
        try {                                                                         \
            expr;                                                                     \
        } catch (const Type&) {                                                       \
            caught_ = true;                                                           \
        } catch (...) {                                                               \
        }                                                                             \
        ++g_checks;                                                                   \
        if (!caught_) {                                                               \
            ++g_failures;                                                             \
            std::printf("  FAIL %s:%d: %s does not throw %s\n", __FILE__, __LINE__, #expr, #Type); \
        }                                                                             \
    } while (0)

constexpr i64 kMax = std::numeric_limits<i64>::max();
constexpr i64 kMin = std::numeric_limits<i64>::min();

// ----------------------------------------------------------------------------- checked arithmetic

// The portable tests are constexpr: some answers checked at compile time.
static_assert(tj::detail::mul_overflows(kMax, 2), "");
static_assert(!tj::detail::mul_overflows(kMax, 1), "");
static_assert(tj::detail::mul_overflows(kMin, -1), "");
static_assert(!tj::detail::mul_overflows(kMin, 1), "");
static_assert(!tj::detail::mul_overflows(-(i64(1) << 31), i64(1) << 32), "");  // exactly -2**63
static_assert(tj::detail::mul_overflows(i64(1) << 31, i64(1) << 32), "");     // 2**63
static_assert(tj::detail::add_overflows(kMax, 1), "");
static_assert(!tj::detail::add_overflows(kMax, 0), "");
static_assert(tj::detail::add_overflows(kMin, -1), "");
static_assert(!tj::detail::add_overflows(kMin, kMax), "");

static std::vector<i64> edge_values() {
    std::vector<i64> v = {0, 1, -1, 2, -2, 3, -3, kMax, kMin, kMax - 1, kMin + 1, kMax / 2, kMin / 2,
                          kMax / 2 + 1, kMin / 2 - 1, i64(3037000499), i64(3037000500), -i64(3037000499),
                          -i64(3037000500), i64(1) << 31, -(i64(1) << 31), i64(1) << 32, -(i64(1) << 32),
                          i64(1) << 62, -(i64(1) << 62)};
    std::mt19937_64 rng(42);
    for (int t = 0; t < 200; ++t) {
        const int bits = static_cast<int>(rng() % 63);
        const i64 x = static_cast<i64>(rng() >> (63 - bits));
        v.push_back(rng() & 1 ? x : -x);
    }
    return v;
}

static void test_checked_arithmetic() {
    const auto vals = edge_values();
    for (i64 a : vals) {
        for (i64 b : vals) {
#if defined(__GNUC__) || defined(__clang__)
            i64 r;
            CHECK(tj::detail::mul_overflows(a, b) == __builtin_mul_overflow(a, b, &r));
            CHECK(tj::detail::add_overflows(a, b) == __builtin_add_overflow(a, b, &r));
#endif
            if (tj::detail::mul_overflows(a, b)) {
                CHECK_THROWS(std::overflow_error, tj::checked_mul(a, b));
            } else {
                // no overflow: the product modulo 2**64 is the product
                CHECK(tj::checked_mul(a, b) == static_cast<i64>(static_cast<std::uint64_t>(a) * static_cast<std::uint64_t>(b)));
            }
            if (tj::detail::add_overflows(a, b)) {
                CHECK_THROWS(std::overflow_error, tj::checked_add(a, b));
            } else {
                CHECK(tj::checked_add(a, b) == static_cast<i64>(static_cast<std::uint64_t>(a) + static_cast<std::uint64_t>(b)));
            }
        }
    }
    CHECK_THROWS(std::overflow_error, tj::checked_mul(i64(1) << 40, i64(1) << 40));
    CHECK(tj::checked_mul(i64(1) << 31, i64(1) << 31) == i64(1) << 62);
}

// ----------------------------------------------------------------------------- thread counts

static void test_thread_cap() {
    const int cap = tj::thread_cap();
    CHECK(cap >= 1);
    if (!tj::openmp_enabled()) CHECK(cap == 1);
    CHECK(cap <= tj::available_cpus() || cap == 1);
    CHECK(tj::clamp_threads(0) == 1);
    CHECK(tj::clamp_threads(-5) == 1);
    CHECK(tj::clamp_threads(1) == 1);
    CHECK(tj::clamp_threads(i64(1) << 40) == cap);
    CHECK(tj::clamp_threads(kMax) == cap);
    CHECK(tj::default_threads() >= 1 && tj::default_threads() <= cap);
}

static void test_block_bounds() {
    const i64 ns[] = {0, 1, 2, 7, 1000, 100003, i64(1) << 40, kMax - 1, kMax};
    for (i64 n : ns) {
        for (int cnt = 1; cnt <= 9; ++cnt) {
            i64 prev_hi = 0;
            for (int tid = 0; tid < cnt; ++tid) {
                i64 lo, hi;
                tj::block_bounds(n, tid, cnt, lo, hi);
                CHECK(lo == prev_hi);
                CHECK(lo <= hi);
#if defined(__SIZEOF_INT128__)
                CHECK(lo == static_cast<i64>(static_cast<__int128>(n) * tid / cnt));
#endif
                prev_hi = hi;
            }
            CHECK(prev_hi == n);
        }
    }
}

// ----------------------------------------------------------------------------- parallel_blocks

struct Piece {
    i64 lo, hi;
    int tid;
};

static void test_parallel_blocks_coverage() {
    const int cap = tj::thread_cap();
    const i64 ns[] = {1, 5, 1000, 100003, (i64(1) << 20) + 7};
    const int nts[] = {1, 2, 3, 8, 1000};
    const i64 pers[] = {1, 7, i64(1) << 20, i64(1) << 40};
    const i64 aligns[] = {1, 3, 64};
    for (i64 n : ns)
        for (int nt : nts)
            for (i64 per : pers)
                for (i64 align : aligns) {
                    if (n > 100003 && per > 7) continue;  // a million one-index pieces: slow, nothing new
                    std::vector<std::atomic<int>> seen(static_cast<std::size_t>(n));
                    std::mutex mu;
                    std::vector<std::vector<Piece>> by_tid(static_cast<std::size_t>(cap));
                    bool tid_ok = true;
                    tj::parallel_blocks_aligned(n, nt, per, align, [&](i64 lo, i64 hi, int tid) {
                        for (i64 i = lo; i < hi; ++i) seen[static_cast<std::size_t>(i)]++;
                        std::lock_guard<std::mutex> lock(mu);
                        if (tid < 0 || tid >= cap || tid >= nt) {
                            tid_ok = false;
                            return;
                        }
                        by_tid[static_cast<std::size_t>(tid)].push_back({lo, hi, tid});
                    });
                    CHECK(tid_ok);
                    bool once = true;
                    for (auto& s : seen) once &= s.load() == 1;
                    CHECK(once);
                    // each thread's pieces are consecutive, in order, hold at most about
                    // kPollWork units of work, and are cut at multiples of `align` (the first
                    // piece starts at the thread's block boundary)
                    const i64 step = std::max<i64>(align, tj::kPollWork / per);
                    bool pieces_ok = true;
                    for (const auto& ps : by_tid) {
                        for (std::size_t k = 0; k < ps.size(); ++k) {
                            pieces_ok &= ps[k].lo < ps[k].hi && ps[k].hi - ps[k].lo <= step;
                            if (k > 0) pieces_ok &= ps[k].lo == ps[k - 1].hi && ps[k].lo % align == 0;
                        }
                    }
                    CHECK(pieces_ok);
                }
}

static void test_parallel_blocks_exceptions() {
    for (int nt : {1, 2, 4}) {
        bool caught = false;
        try {
            tj::parallel_blocks(200000, nt, 1, [&](i64 lo, i64 hi, int) {
                if (lo <= 123457 && 123457 < hi) throw std::runtime_error("boom");
            });
        } catch (const std::runtime_error& e) {
            caught = std::string(e.what()) == "boom";
        }
        CHECK(caught);
        bool caught_int = false;
        try {
            tj::parallel_blocks(200000, nt, 1, [&](i64 lo, i64 hi, int) {
                if (lo <= 7 && 7 < hi) throw 42;
            });
        } catch (int v) {
            caught_int = v == 42;
        }
        CHECK(caught_int);
    }
    CHECK_THROWS(std::overflow_error, tj::parallel_blocks(1000, 2, 1, [](i64, i64, int) { tj::checked_mul(kMax, 2); }));
}

static void test_cancellation() {
    // a flag set before the call: Interrupted before any work
    {
        tj::CancelFlag flag{true};
        tj::ScopedCancel scope(&flag);
        std::atomic<i64> calls{0};
        CHECK_THROWS(tj::Interrupted, tj::parallel_blocks(1 << 22, 2, 1, [&](i64, i64, int) { calls++; }));
        CHECK(calls.load() == 0);
    }
    // no flag in scope any more: runs
    {
        std::atomic<i64> calls{0};
        tj::parallel_blocks(1 << 20, 2, 1, [&](i64 lo, i64 hi, int) { calls += hi - lo; });
        CHECK(calls.load() == (1 << 20));
    }
    // scopes nest and restore
    {
        tj::CancelFlag set{true}, clear{false};
        tj::ScopedCancel outer(&set);
        {
            tj::ScopedCancel inner(&clear);
            std::atomic<i64> done{0};
            tj::parallel_blocks(1 << 20, 2, 1, [&](i64 lo, i64 hi, int) { done += hi - lo; });
            CHECK(done.load() == (1 << 20));
        }
        CHECK_THROWS(tj::Interrupted, tj::parallel_blocks(1 << 20, 2, 1, [](i64, i64, int) {}));
    }
    // set by another thread while the kernel runs: it stops early
    for (int nt : {1, 2}) {
        tj::CancelFlag flag{false};
        tj::ScopedCancel scope(&flag);
        std::atomic<i64> pieces{0};
        std::thread setter([&] {
            std::this_thread::sleep_for(std::chrono::milliseconds(30));
            flag.store(true);
        });
        const auto t0 = std::chrono::steady_clock::now();
        // 4096 pieces of 1 ms each: 4 s (2 s on two threads) uninterrupted
        CHECK_THROWS(tj::Interrupted, tj::parallel_blocks(i64(4096) * tj::kPollWork, nt, 1, [&](i64, i64, int) {
                         pieces++;
                         std::this_thread::sleep_for(std::chrono::milliseconds(1));
                     }));
        const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        setter.join();
        CHECK(pieces.load() < 4096);
        std::printf("    interrupted after %lld pieces, %.1f ms (nt=%d)\n", static_cast<long long>(pieces.load()),
                    secs * 1e3, nt);
    }
    // poll_cancel() inside a body sees the caller's flag in every thread of the team
    {
        tj::CancelFlag flag{false};
        tj::ScopedCancel scope(&flag);
        std::atomic<int> after_poll{0};
        CHECK_THROWS(tj::Interrupted, tj::parallel_blocks(1 << 20, 2, 1, [&](i64, i64, int) {
                         flag.store(true);
                         tj::poll_cancel();
                         after_poll++;
                     }));
        CHECK(after_poll.load() == 0);
    }
    // outside any scope poll_cancel() never throws
    tj::poll_cancel();
}

#ifdef TJ_TEST_FORK
static void test_fork() {
    CHECK(!tj::in_forked_child());
    // start a team in this process (when there can be one), then fork
    std::atomic<i64> sum{0};
    tj::parallel_blocks(1 << 20, 2, 1, [&](i64 lo, i64 hi, int) { sum += hi - lo; });
    CHECK(sum.load() == (1 << 20));
    std::fflush(stdout);
    const pid_t pid = fork();
    if (pid == 0) {
        alarm(30);  // a hang in libgomp kills the child instead of the suite
        std::atomic<i64> s{0};
        tj::parallel_blocks(1 << 20, 2, 1, [&](i64 lo, i64 hi, int tid) { s += (hi - lo) * (tid == 0); });
        const bool forked_ok = !tj::openmp_enabled() || tj::thread_cap() < 2 || tj::in_forked_child();
        _exit(s.load() == (1 << 20) && forked_ok ? 0 : 3);
    }
    CHECK(pid > 0);
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(!tj::in_forked_child());  // the parent keeps its threads
}
#endif

// ----------------------------------------------------------------------------- expand

// T[i,j,k,l] = coef * A[i,k] * B[l,j] (the sandwich Jacobian) into a
// C-contiguous (m, n, p, q) output, against four nested loops.
template <class T>
static void check_sandwich(i64 m, i64 n, i64 p, i64 q, int nt) {
    const auto A = random_vec<T>(static_cast<std::size_t>(m * p), 1);
    const auto B = random_vec<T>(static_cast<std::size_t>(q * n), 2);
    std::vector<T> out(static_cast<std::size_t>(m * n * p * q), T(7));
    tj::Term<T> t;
    t.coef = T(-2);
    t.size = {m, n, p, q};                      // variables i, j, k, l
    t.out_stride = {n * p * q, p * q, q, 1};
    t.factors = {{A.data(), {p, 0, 1, 0}}, {B.data(), {0, 1, 0, n}}};
    tj::expand<T>(out.data(), {m, n, p, q}, {n * p * q, p * q, q, 1}, {t}, nt);
    bool ok = true;
    for (i64 i = 0; i < m; ++i)
        for (i64 j = 0; j < n; ++j)
            for (i64 k = 0; k < p; ++k)
                for (i64 l = 0; l < q; ++l)
                    ok &= out[static_cast<std::size_t>(((i * n + j) * p + k) * q + l)] ==
                          T(-2) * A[static_cast<std::size_t>(i * p + k)] * B[static_cast<std::size_t>(l * n + j)];
    CHECK(ok);
}

static void test_expand_dense() {
    check_sandwich<double>(3, 4, 5, 6, 1);
    check_sandwich<double>(3, 4, 5, 6, 2);
    check_sandwich<float>(7, 2, 3, 5, 2);
    check_sandwich<std::complex<double>>(4, 3, 2, 5, 2);
    check_sandwich<double>(40, 40, 40, 40, 2);  // 2.56 M entries: parallel, several pieces per thread
    check_sandwich<double>(1, 1, 1, 1, 1);
    check_sandwich<double>(1, 5000, 1, 7, 2);  // long rows beyond the row buffer
}

// The multiply Jacobian: T[i,j,k,l] = delta(i,k) delta(j,l) W[i,j] + c delta(i,k) delta(j,l),
// two terms (the second accumulates), into an output of any strides (given by `ostr`).
static void check_delta(i64 m, i64 n, const std::vector<i64>& ostr, i64 offset, std::size_t buf, int nt) {
    const auto W = random_vec<double>(static_cast<std::size_t>(m * n), 3);
    std::vector<double> storage(buf, 123.0);
    double* out = storage.data() + offset;
    tj::Term<double> t1, t2;
    t1.coef = 1.0;
    t1.size = {m, n};
    t1.out_stride = {ostr[0] + ostr[2], ostr[1] + ostr[3]};
    t1.factors = {{W.data(), {n, 1}}};
    t2 = t1;
    t2.coef = 0.5;
    t2.factors.clear();
    tj::expand<double>(out, {m, n, m, n}, ostr, {t1, t2}, nt);
    bool ok = true;
    for (i64 i = 0; i < m; ++i)
        for (i64 j = 0; j < n; ++j)
            for (i64 k = 0; k < m; ++k)
                for (i64 l = 0; l < n; ++l) {
                    const double want = (i == k && j == l) ? W[static_cast<std::size_t>(i * n + j)] + 0.5 : 0.0;
                    ok &= out[i * ostr[0] + j * ostr[1] + k * ostr[2] + l * ostr[3]] == want;
                }
    CHECK(ok);
    // nothing outside the addressed elements was touched
    i64 touched = 0;
    for (double v : storage) touched += v != 123.0;
    CHECK(touched <= m * n * m * n);
}

static void test_expand_strides() {
    const i64 m = 6, n = 5, N = m * n * m * n;
    check_delta(m, n, {n * m * n, m * n, n, 1}, 0, static_cast<std::size_t>(N), 1);        // C order
    check_delta(m, n, {1, m, m * n, m * n * m}, 0, static_cast<std::size_t>(N), 2);        // Fortran order
    check_delta(m, n, {-n * m * n, -m * n, -n, -1}, N - 1, static_cast<std::size_t>(N), 2);  // all reversed
    check_delta(m, n, {2 * n * m * n, 2 * m * n, 2 * n, 2}, 0, static_cast<std::size_t>(2 * N), 1);  // step 2
    check_delta(60, 60, {60 * 3600, 3600, 60, 1}, 0, static_cast<std::size_t>(3600 * 3600), 2);  // parallel fill
}

static void test_expand_edge_cases() {
    // zero-size output: nothing written, no error
    std::vector<double> buf(4, 9.0);
    tj::Term<double> t;
    t.size = {0, 3};
    t.out_stride = {3, 1};
    tj::expand<double>(buf.data(), {0, 3}, {3, 1}, {t}, 2);
    CHECK(buf[0] == 9.0 && buf[3] == 9.0);
    // a 0-d output
    tj::Term<double> s;
    s.coef = 2.5;
    tj::expand<double>(buf.data(), {}, {}, {s}, 1);
    CHECK(buf[0] == 2.5);
    // no terms: zeros
    tj::expand<double>(buf.data(), {4}, {1}, {}, 1);
    CHECK(buf[0] == 0.0 && buf[3] == 0.0);
    // fill
    tj::fill<double>(buf.data(), {2, 2}, {2, 1}, 4.0, 2);
    CHECK(buf[0] == 4.0 && buf[3] == 4.0);
    // errors, before anything is written
    tj::Term<double> bad;
    bad.size = {3};
    bad.out_stride = {0};
    CHECK_THROWS(std::invalid_argument, tj::expand<double>(buf.data(), {3}, {1}, {bad}, 1));
    bad.out_stride = {1, 1};
    CHECK_THROWS(std::invalid_argument, tj::expand<double>(buf.data(), {3}, {1}, {bad}, 1));
    bad.size = {-3};
    bad.out_stride = {1};
    CHECK_THROWS(std::invalid_argument, tj::expand<double>(buf.data(), {3}, {1}, {bad}, 1));
    tj::Term<double> many;
    many.size.assign(tj::kMaxVars + 1, 1);
    many.out_stride.assign(tj::kMaxVars + 1, 1);
    CHECK_THROWS(std::length_error, tj::expand<double>(buf.data(), {1}, {1}, {many}, 1));
    CHECK_THROWS(std::invalid_argument, tj::expand<double>(buf.data(), {3, 1}, {1}, {}, 1));
    CHECK_THROWS(std::overflow_error, tj::expand<double>(nullptr, {i64(1) << 40, i64(1) << 40}, {1, 1}, {}, 1));
    tj::Term<double> huge;
    huge.size = {i64(1) << 40, i64(1) << 40};
    huge.out_stride = {1, 1};
    CHECK_THROWS(std::overflow_error, tj::expand<double>(nullptr, {1}, {1}, {huge}, 1));
    // the loop-merge test of normalise never multiplies with overflow
    CHECK(!tj::detail::is_product(0, kMax, 2));
    CHECK(!tj::detail::is_product(kMin, kMin, -1));
    CHECK(tj::detail::is_product(12, 3, 4));
}

static void test_expand_thread_invariance() {
    const i64 m = 36, n = 36;
    const auto A = random_vec<double>(static_cast<std::size_t>(m * m), 4);
    const auto B = random_vec<double>(static_cast<std::size_t>(n * n), 5);
    std::vector<std::vector<double>> res;
    for (int nt : {1, 2, 3, 7}) {
        std::vector<double> out(static_cast<std::size_t>(m * n * m * n));
        tj::Term<double> t1, t2;
        t1.coef = 1.0;
        t1.size = {m, n, m, n};  // i j k l
        t1.out_stride = {1, m, m * n, m * n * m};  // Fortran-ordered output: strided writes
        t1.factors = {{A.data(), {m, 0, 1, 0}}, {B.data(), {0, 1, 0, n}}};
        t2 = t1;
        t2.coef = -0.25;
        tj::expand<double>(out.data(), {m, n, m, n}, {1, m, m * n, m * n * m}, {t1, t2}, nt);
        res.push_back(out);
    }
    for (std::size_t r = 1; r < res.size(); ++r) CHECK(res[r] == res[0]);
    CHECK(res[0][0] == 0.75 * A[0] * B[0]);
}

static void test_expand_cancel() {
    const i64 m = 40;
    std::vector<double> out(static_cast<std::size_t>(m * m * m * m), -1.0);
    tj::CancelFlag flag{true};
    tj::ScopedCancel scope(&flag);
    tj::Term<double> t;
    t.coef = 1.0;
    t.size = {m * m, m * m};
    t.out_stride = {m * m, 1};
    CHECK_THROWS(tj::Interrupted, tj::expand<double>(out.data(), {m * m, m * m}, {m * m, 1}, {t}, 2));
    CHECK(out[0] == -1.0);  // the first poll precedes the first write
}

// ----------------------------------------------------------------------------- expand: fused passes, tiles

// The sum of `terms` at every output position by brute force (each term's
// product in factor order, accumulated in long double), on top of `base`.
template <class T>
static std::vector<T> naive_expand(std::vector<T> base, i64 offset, const std::vector<tj::Term<T>>& terms) {
    std::vector<std::complex<long double>> acc(base.size());
    for (std::size_t e = 0; e < base.size(); ++e) acc[e] = std::complex<long double>(base[e]);
    for (const auto& t : terms) {
        const std::size_t V = t.size.size();
        i64 total = 1;
        for (i64 s : t.size) total *= s;
        std::vector<i64> idx(V, 0);
        for (i64 e = 0; e < total; ++e) {
            i64 o = offset;
            std::complex<long double> v(t.coef);
            for (std::size_t a = 0; a < V; ++a) o += idx[a] * t.out_stride[a];
            for (const auto& f : t.factors) {
                i64 fo = 0;
                for (std::size_t a = 0; a < V; ++a) fo += idx[a] * f.stride[a];
                v *= std::complex<long double>(f.data[fo]);
            }
            acc[static_cast<std::size_t>(o)] += v;
            for (std::size_t a = V; a-- > 0;)
                if (++idx[a] < t.size[a]) break;
                else idx[a] = 0;
        }
    }
    for (std::size_t e = 0; e < base.size(); ++e) {
        if constexpr (std::is_same_v<T, std::complex<double>> || std::is_same_v<T, std::complex<float>>)
            base[e] = T(static_cast<typename T::value_type>(acc[e].real()), static_cast<typename T::value_type>(acc[e].imag()));
        else
            base[e] = static_cast<T>(acc[e].real());
    }
    return base;
}

template <class T>
static bool close_to(const std::vector<T>& got, const std::vector<T>& want, double rtol) {
    for (std::size_t e = 0; e < got.size(); ++e)
        if (std::abs(got[e] - want[e]) > rtol * (1.0 + std::abs(want[e]))) return false;
    return true;
}

template <class T>
static bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

// One test structure: terms over an output buffer of `span` elements (the
// output starts at `offset`), its shape and strides, and the factor storage.
template <class T>
struct Structure {
    std::vector<i64> shape, strides;
    i64 span = 0, offset = 0;
    std::vector<tj::Term<T>> terms;
    std::vector<std::vector<T>> store;  // factor data
    const T* add(std::size_t n, unsigned seed) {
        store.push_back(random_vec<T>(n, seed));
        return store.back().data();
    }
};

// Output strides of 4 axes of extents ext, laid out in the order `perm`
// (perm[0] outermost), every stride times `step`, all negated when `flip`.
static void layout4(const i64 ext[4], const int perm[4], i64 step, bool flip, std::vector<i64>& shape,
                    std::vector<i64>& strides, i64& span, i64& offset) {
    shape.assign(ext, ext + 4);
    strides.assign(4, 0);
    i64 s = step;
    for (int k = 3; k >= 0; --k) {
        strides[perm[k]] = s;
        s *= ext[perm[k]];
    }
    span = s;
    offset = 0;
    if (flip) {
        for (auto& x : strides) x = -x;
        offset = span - step;
    }
}

// G like terms coef_g * A_g[i,k] * B_g[l,j] (the sandwich), then optionally
// a delta term over the same output (i == k, j == l).
template <class T>
static Structure<T> sandwich_terms(i64 m, i64 n, i64 p, i64 q, const int perm[4], i64 step, bool flip, int G,
                                   bool with_delta, unsigned seed) {
    Structure<T> st;
    const i64 ext[4] = {m, n, p, q};
    layout4(ext, perm, step, flip, st.shape, st.strides, st.span, st.offset);
    const auto& os = st.strides;
    st.store.reserve(2 * G + 2);
    for (int g = 0; g < G; ++g) {
        tj::Term<T> t;
        t.coef = T(static_cast<float>(g % 3) - 1.25f);
        t.size = {m, n, p, q};  // i j k l
        t.out_stride = {os[0], os[1], os[2], os[3]};
        const T* A = st.add(static_cast<std::size_t>(m * p), seed + 2 * g);
        const T* B = st.add(static_cast<std::size_t>(q * n), seed + 2 * g + 1);
        t.factors = {{A, {p, 0, 1, 0}}, {B, {0, 1, 0, n}}};
        if (g % 2) std::swap(t.factors[0], t.factors[1]);  // factor order differs from term to term
        st.terms.push_back(t);
    }
    if (with_delta && m == p && n == q) {
        tj::Term<T> d;
        d.coef = T(0.5f);
        d.size = {m, n};
        d.out_stride = {os[0] + os[2], os[1] + os[3]};
        d.factors = {{st.add(static_cast<std::size_t>(m * n), seed + 99), {n, 1}}};
        st.terms.push_back(d);
    }
    return st;
}

// Runs the kernel on a copy of `init`; `finite` receives the factor check.
template <class T>
static std::vector<T> run_expand(const Structure<T>& st, const std::vector<T>& init,
                                 const std::vector<tj::Term<T>>& terms, int nt, tj::ExpandMode mode,
                                 bool* finite = nullptr) {
    std::vector<T> out = init;
    tj::expand<T>(out.data() + st.offset, st.shape, st.strides, terms, nt, mode, finite);
    return out;
}

// Term by term: the first in `mode`, the others accumulated, one expand call each.
template <class T>
static std::vector<T> run_one_by_one(const Structure<T>& st, const std::vector<T>& init, int nt, tj::ExpandMode mode) {
    std::vector<T> out = init;
    for (std::size_t t = 0; t < st.terms.size(); ++t)
        tj::expand<T>(out.data() + st.offset, st.shape, st.strides, {st.terms[t]}, nt,
                      t == 0 ? mode : tj::ExpandMode::accumulate);
    return out;
}

template <class T>
static void check_fused(i64 m, i64 n, i64 p, i64 q, const int perm[4], i64 step, bool flip, int G, double rtol) {
    const auto st = sandwich_terms<T>(m, n, p, q, perm, step, flip, G, false, 11);
    const std::vector<T> init = random_vec<T>(static_cast<std::size_t>(st.span), 5);
    for (auto mode : {tj::ExpandMode::write, tj::ExpandMode::accumulate}) {
        std::vector<T> base = init;
        if (mode == tj::ExpandMode::write) {  // positions of the output start from zero, the gaps keep init
            tj::Term<T> all;
            all.coef = T(1);
            all.size = st.shape;
            all.out_stride = st.strides;
            std::vector<T> ones(init.size(), T(0));
            ones = run_expand(st, ones, {all}, 1, tj::ExpandMode::write);
            for (std::size_t e = 0; e < base.size(); ++e)
                if (ones[e] == T(1)) base[e] = T(0);
        }
        const std::vector<T> want = naive_expand(base, st.offset, st.terms);
        const std::vector<T> fused = run_expand(st, init, st.terms, 1, mode);
        CHECK(close_to(fused, want, rtol));
        CHECK(same_bits(fused, run_one_by_one(st, init, 1, mode)));  // fusion never changes a bit
        for (int nt : {2, 3, 7}) CHECK(same_bits(fused, run_expand(st, init, st.terms, nt, mode)));
        tj::expand_force_baseline(true);
        CHECK(same_bits(fused, run_expand(st, init, st.terms, 2, mode)));  // baseline and AVX2 agree
        tj::expand_force_baseline(false);
    }
}

static void test_expand_fused() {
    const int perms[4][4] = {{0, 1, 2, 3}, {2, 3, 0, 1}, {0, 1, 3, 2}, {3, 2, 1, 0}};  // tensor, gradient, numerator, vec
    for (const auto& perm : perms)
        for (int G : {1, 2, 3, 4, 5, 9}) check_fused<double>(5, 4, 6, 7, perm, 1, false, G, 1e-13);
    for (int G : {2, 4, 9}) {
        check_fused<double>(3, 5, 4, 6, perms[0], 2, true, G, 1e-13);   // reversed, every other element
        check_fused<double>(17, 16, 16, 16, perms[0], 1, false, G, 1e-13);  // tiles, several blocks
        check_fused<float>(9, 8, 7, 16, perms[1], 1, false, G, 2e-5);
        check_fused<std::complex<double>>(4, 3, 5, 2, perms[3], 1, false, G, 1e-13);
    }
    check_fused<double>(1, 1, 1, 1, perms[0], 1, false, 3, 1e-13);
    // which terms share a pass: the same output positions, whatever the order of their variables
    tj::Term<double> a, b;
    a.size = {3, 4, 1};
    a.out_stride = {4, 1, 99};
    b.size = {4, 3};
    b.out_stride = {1, 4};
    tj::detail::Fixed<int, tj::kMaxVars> map;
    CHECK(tj::detail::same_positions(a, tj::detail::loop_order(a), b, map) && map[0] == 1 && map[1] == 0);
    b.out_stride = {1, 5};
    CHECK(!tj::detail::same_positions(a, tj::detail::loop_order(a), b, map));
    b.out_stride = {1, 4};
    b.size = {4, 0};
    CHECK(!tj::detail::same_positions(a, tj::detail::loop_order(a), b, map));
    check_fused<double>(2, 1, 3000, 5, perms[0], 1, false, 3, 1e-13);  // size-1 variables, long panels
}

// A dense pass and a delta term over the same output, in every mode and order
// (the kernel swaps a covering second term to the front), against loops.
static void test_expand_mixed_passes() {
    const int perm[4] = {0, 1, 2, 3};
    for (int G : {1, 2, 3}) {
        auto st = sandwich_terms<double>(6, 5, 6, 5, perm, 1, false, G, true, 21);
        const std::vector<double> init = random_vec<double>(static_cast<std::size_t>(st.span), 6);
        for (int order = 0; order < 2; ++order) {
            if (order) std::rotate(st.terms.rbegin(), st.terms.rbegin() + 1, st.terms.rend());  // delta first
            const std::vector<double> zero(init.size(), 0.0);
            CHECK(close_to(run_expand(st, init, st.terms, 2, tj::ExpandMode::write), naive_expand(zero, 0, st.terms),
                           1e-13));
            CHECK(close_to(run_expand(st, zero, st.terms, 2, tj::ExpandMode::zeroed),
                           naive_expand(zero, 0, st.terms), 1e-13));
            const auto acc = run_expand(st, init, st.terms, 1, tj::ExpandMode::accumulate);
            CHECK(close_to(acc, naive_expand(init, 0, st.terms), 1e-13));
            CHECK(same_bits(acc, run_expand(st, init, st.terms, 3, tj::ExpandMode::accumulate)));
        }
    }
}

// Inner factors that need the row buffer: two of them, strided, rows longer
// than the buffer (segments), and a constant term fused with them.
static void test_expand_row_buffers() {
    for (i64 row : {7, 300, 4096, 5000, 9001}) {
        const i64 m = 3;
        const auto a = random_vec<double>(static_cast<std::size_t>(2 * row), 1);
        const auto b = random_vec<double>(static_cast<std::size_t>(m * row), 2);
        const auto c = random_vec<double>(static_cast<std::size_t>(m), 3);
        tj::Term<double> t1, t2, t3;
        t1.coef = 1.5;
        t1.size = {m, row};  // i t
        t1.out_stride = {row, 1};
        t1.factors = {{c.data(), {1, 0}}, {a.data(), {0, 2}}, {b.data(), {1, m}}};  // a strided, b transposed
        t2 = t1;
        t2.coef = -0.5;
        t2.factors = {{b.data(), {row, 1}}};
        t3 = t1;
        t3.coef = 0.25;
        t3.factors.clear();
        const std::vector<tj::Term<double>> terms{t1, t2, t3};
        std::vector<double> out(static_cast<std::size_t>(m * row)), zero(out.size(), 0.0);
        tj::expand<double>(out.data(), {m, row}, {row, 1}, terms, 1);
        CHECK(close_to(out, naive_expand(zero, 0, terms), 1e-13));
        for (int nt : {2, 5}) {
            std::vector<double> o2(out.size());
            tj::expand<double>(o2.data(), {m, row}, {row, 1}, terms, nt);
            CHECK(same_bits(out, o2));
        }
        std::vector<double> seq(out.size());
        tj::expand<double>(seq.data(), {m, row}, {row, 1}, {t1}, 1);
        tj::expand<double>(seq.data(), {m, row}, {row, 1}, {t2}, 1, tj::ExpandMode::accumulate);
        tj::expand<double>(seq.data(), {m, row}, {row, 1}, {t3}, 1, tj::ExpandMode::accumulate);
        CHECK(same_bits(out, seq));
    }
}

// The non-finite check: a factor read in place (big: checked as the row
// kernels read it; small: checked before the pass), small factors read
// through a buffer or a copy, every dtype.
template <class T>
static void check_finite_flag(i64 m, i64 n) {
    const double inf = std::numeric_limits<double>::infinity();
    std::vector<T> A = random_vec<T>(static_cast<std::size_t>(m * n), 7);
    std::vector<T> u = random_vec<T>(static_cast<std::size_t>(2 * n), 8);
    std::vector<T> v = random_vec<T>(static_cast<std::size_t>(m), 9);
    std::vector<T> out(static_cast<std::size_t>(m * n));
    tj::Term<T> t, t2;
    t.coef = T(2);
    t.size = {m, n};
    t.out_stride = {n, 1};
    t.factors = {{A.data(), {n, 1}}};
    t2 = t;  // v[i] u[2 j]: u strided along the row
    t2.factors = {{v.data(), {1, 0}}, {u.data(), {0, 2}}};
    std::vector<T>* arrs[3] = {&A, &u, &v};
    for (int which = 0; which < 3; ++which) {
        for (int nt : {1, 2}) {
            bool finite = false;
            tj::expand<T>(out.data(), {m, n}, {n, 1}, {t, t2}, nt, tj::ExpandMode::write, &finite);
            CHECK(finite);
            std::vector<T>& arr = *arrs[which];
            const std::size_t at = which == 1 ? 2 * (arr.size() / 4) : arr.size() - 1;
            const T keep = arr[at];
            arr[at] = which == 2 ? T(static_cast<float>(inf - inf)) : T(static_cast<float>(inf));  // nan or inf
            tj::expand<T>(out.data(), {m, n}, {n, 1}, {t, t2}, nt, tj::ExpandMode::write, &finite);
            CHECK(!finite);
            tj::expand<T>(out.data(), {m, n}, {n, 1}, {t}, nt, tj::ExpandMode::accumulate, &finite);
            CHECK(finite == (which != 0));  // only the values read count
            arr[at] = keep;
        }
    }
}

// A dense factor written transposed (the gradient layout of a matrix-vector
// Jacobian, J[j, i] = A[i, j]): blocks read in the factor's order, partial
// rows at thread-block edges, the non-finite check of both.
static void test_expand_transposed() {
    for (i64 m : {3, 64, 65, 200, 513}) {
        const i64 n = m + 7;
        auto A = random_vec<double>(static_cast<std::size_t>(m * n), 31);
        const auto c = random_vec<double>(static_cast<std::size_t>(n), 32);
        tj::Term<double> t;
        t.coef = -1.5;
        t.size = {m, n};     // i j
        t.out_stride = {1, m};  // out[j, i]
        t.factors = {{c.data(), {0, 1}}, {A.data(), {n, 1}}};  // c[j] A[i, j]
        const auto d = random_vec<double>(static_cast<std::size_t>(m), 33);
        if (m % 2) t.factors.insert(t.factors.begin() + 1, {d.data(), {1, 0}});  // and d[i]: two row factors
        const std::vector<double> zero(static_cast<std::size_t>(m * n), 0.0);
        const auto want = naive_expand(zero, 0, {t});
        std::vector<double> first;
        for (int nt : {1, 2, 3, 7}) {
            std::vector<double> out(zero.size());
            bool finite = false;
            tj::expand<double>(out.data(), {n, m}, {m, 1}, {t}, nt, tj::ExpandMode::write, &finite);
            CHECK(finite);
            CHECK(close_to(out, want, 1e-14));
            if (first.empty()) first = out;
            CHECK(same_bits(out, first));
        }
        for (std::size_t at : {std::size_t(0), A.size() / 2 + 1, A.size() - 1}) {
            const double keep = A[at];
            A[at] = std::numeric_limits<double>::quiet_NaN();
            for (int nt : {1, 3}) {
                std::vector<double> out(zero.size());
                bool finite = true;
                tj::expand<double>(out.data(), {n, m}, {m, 1}, {t}, nt, tj::ExpandMode::write, &finite);
                CHECK(!finite);
            }
            A[at] = keep;
        }
    }
}

static void test_expand_finite_flag() {
    check_finite_flag<double>(5, 7);
    check_finite_flag<double>(300, 257);  // A read in place and checked by the row kernels
    check_finite_flag<float>(129, 64);
    check_finite_flag<std::complex<double>>(70, 70);
    // a factor the kernel never reads (the term is empty) is not reported
    std::vector<double> A(4, std::numeric_limits<double>::quiet_NaN()), out(1);
    tj::Term<double> t;
    t.size = {0, 4};
    t.out_stride = {4, 1};
    t.factors = {{A.data(), {0, 1}}};
    bool finite = false;
    tj::expand<double>(out.data(), {0, 4}, {4, 1}, {t}, 1, tj::ExpandMode::write, &finite);
    CHECK(finite);
}

// ----------------------------------------------------------------------------- kron

static void test_kron() {
    const i64 nb = 3, m = 4, n = 5, p = 6, q = 7;
    const auto G = random_vec<double>(static_cast<std::size_t>(nb * m * p * n * q), 6);
    const auto A = random_vec<double>(static_cast<std::size_t>(m * n), 7);
    const auto B = random_vec<double>(static_cast<std::size_t>(p * q), 8);
    auto g = [&](i64 b, i64 i, i64 k, i64 j, i64 l) { return G[static_cast<std::size_t>((((b * m + i) * p + k) * n + j) * q + l)]; };
    std::vector<double> dA(static_cast<std::size_t>(nb * m * n)), dB(static_cast<std::size_t>(nb * p * q));
    for (int nt : {1, 2}) {
        tj::kron_vjp_a(G.data(), nb, m, p, n, q, B.data(), dA.data(), nt);
        tj::kron_vjp_b(G.data(), nb, m, p, n, q, A.data(), dB.data(), nt);
        double err_a = 0, err_b = 0;
        for (i64 b = 0; b < nb; ++b) {
            for (i64 i = 0; i < m; ++i)
                for (i64 j = 0; j < n; ++j) {
                    long double s = 0;
                    for (i64 k = 0; k < p; ++k)
                        for (i64 l = 0; l < q; ++l) s += static_cast<long double>(g(b, i, k, j, l)) * B[static_cast<std::size_t>(k * q + l)];
                    err_a = std::max(err_a, std::abs(static_cast<double>(s) - dA[static_cast<std::size_t>((b * m + i) * n + j)]));
                }
            for (i64 k = 0; k < p; ++k)
                for (i64 l = 0; l < q; ++l) {
                    long double s = 0;
                    for (i64 i = 0; i < m; ++i)
                        for (i64 j = 0; j < n; ++j) s += static_cast<long double>(g(b, i, k, j, l)) * A[static_cast<std::size_t>(i * n + j)];
                    err_b = std::max(err_b, std::abs(static_cast<double>(s) - dB[static_cast<std::size_t>((b * p + k) * q + l)]));
                }
        }
        CHECK(err_a < 1e-13);
        CHECK(err_b < 1e-13);
    }
    // kron_batched with a broadcast second factor: out[b] = kron(X[b], Y[0])
    const auto X = random_vec<double>(static_cast<std::size_t>(nb * m * n), 9);
    std::vector<double> K(static_cast<std::size_t>(nb * m * p * n * q));
    tj::kron_batched(X.data(), nb, m, n, B.data(), 1, p, q, nb, K.data(), 2);
    bool ok = true;
    for (i64 b = 0; b < nb; ++b)
        for (i64 i = 0; i < m; ++i)
            for (i64 k = 0; k < p; ++k)
                for (i64 j = 0; j < n; ++j)
                    for (i64 l = 0; l < q; ++l)
                        ok &= K[static_cast<std::size_t>(((b * m * p + i * p + k) * n + j) * q + l)] ==
                              X[static_cast<std::size_t>((b * m + i) * n + j)] * B[static_cast<std::size_t>(k * q + l)];
    CHECK(ok);
    // mul_rows
    std::vector<double> R(static_cast<std::size_t>(nb * p * q));
    tj::mul_rows(dB.data(), nb, p * q, B.data(), R.data(), 2);
    bool ok_rows = true;
    for (i64 b = 0; b < nb; ++b)
        for (i64 t = 0; t < p * q; ++t)
            ok_rows &= R[static_cast<std::size_t>(b * p * q + t)] == dB[static_cast<std::size_t>(b * p * q + t)] * B[static_cast<std::size_t>(t)];
    CHECK(ok_rows);
    // errors before any memory is touched
    CHECK_THROWS(std::invalid_argument, tj::kron_batched<double>(nullptr, 2, 1, 1, nullptr, 3, 1, 1, 3, nullptr, 1));
    CHECK_THROWS(std::overflow_error, tj::kron_vjp_a<double>(nullptr, i64(1) << 40, i64(1) << 40, 1, 1, 1, nullptr, nullptr, 1));
    CHECK_THROWS(std::overflow_error, tj::kron_vjp_b<double>(nullptr, 1, i64(1) << 32, i64(1) << 32, 2, 1, nullptr, nullptr, 1));
    CHECK_THROWS(std::overflow_error, tj::kron_batched<double>(nullptr, 1, i64(1) << 32, 1, nullptr, 1, i64(1) << 32, 1, 1, nullptr, 1));
    CHECK_THROWS(std::invalid_argument, tj::mul_rows<double>(nullptr, -1, 3, nullptr, nullptr, 1));
}

static void test_kron_thread_invariance_and_cancel() {
    const i64 nb = 2, m = 30, n = 30, p = 30, q = 30;  // G: 1.6 M elements
    const auto G = random_vec<double>(static_cast<std::size_t>(nb * m * p * n * q), 10);
    const auto A = random_vec<double>(static_cast<std::size_t>(m * n), 11);
    const auto B = random_vec<double>(static_cast<std::size_t>(p * q), 12);
    std::vector<double> a1(static_cast<std::size_t>(nb * m * n)), a2 = a1, b1(static_cast<std::size_t>(nb * p * q)), b2 = b1;
    tj::kron_vjp_a(G.data(), nb, m, p, n, q, B.data(), a1.data(), 1);
    tj::kron_vjp_b(G.data(), nb, m, p, n, q, A.data(), b1.data(), 1);
    for (int nt : {2, 3, 5}) {
        tj::kron_vjp_a(G.data(), nb, m, p, n, q, B.data(), a2.data(), nt);
        tj::kron_vjp_b(G.data(), nb, m, p, n, q, A.data(), b2.data(), nt);
        CHECK(a1 == a2);
        CHECK(b1 == b2);
    }
    tj::CancelFlag flag{true};
    tj::ScopedCancel scope(&flag);
    CHECK_THROWS(tj::Interrupted, tj::kron_vjp_a(G.data(), nb, m, p, n, q, B.data(), a2.data(), 2));
    CHECK_THROWS(tj::Interrupted, tj::kron_vjp_b(G.data(), nb, m, p, n, q, A.data(), b2.data(), 1));
}

int main() {
    std::printf("tensorjac kernel tests: openmp %s, thread cap %d\n", tj::openmp_enabled() ? "yes" : "no",
                tj::thread_cap());
    run("checked arithmetic (portable vs builtins)", test_checked_arithmetic);
    run("thread cap", test_thread_cap);
    run("block bounds", test_block_bounds);
    run("parallel_blocks coverage and pieces", test_parallel_blocks_coverage);
    run("parallel_blocks exceptions", test_parallel_blocks_exceptions);
    run("cancellation", test_cancellation);
#ifdef TJ_TEST_FORK
    run("fork", test_fork);
#endif
    run("expand dense", test_expand_dense);
    run("expand strides and deltas", test_expand_strides);
    run("expand edge cases and errors", test_expand_edge_cases);
    run("expand thread invariance", test_expand_thread_invariance);
    run("expand cancellation", test_expand_cancel);
    run("expand fused passes (values, bitwise vs one by one, threads, baseline SIMD)", test_expand_fused);
    run("expand mixed passes and modes", test_expand_mixed_passes);
    run("expand row buffers and segments", test_expand_row_buffers);
    run("expand non-finite check", test_expand_finite_flag);
    run("expand transposed factors", test_expand_transposed);
    run("kron kernels", test_kron);
    run("kron thread invariance and cancellation", test_kron_thread_invariance_and_cancel);
    std::printf("%d checks, %d failed\n", g_checks, g_failures);
    return g_failures == 0 ? 0 : 1;
}
