// The tiny test harness shared by the C++ test programs (tests/cpp/test_kernels.cpp and the
// package consumer tests/cpp/api/test_api.cpp): CHECK, run() and random test data.
#pragma once

#include <complex>
#include <cstddef>
#include <cstdio>
#include <exception>
#include <functional>
#include <random>
#include <type_traits>
#include <vector>

static int g_failures = 0;
static int g_checks = 0;

#define CHECK(cond)                                                       \
    do {                                                                  \
        ++g_checks;                                                       \
        if (!(cond)) {                                                    \
            ++g_failures;                                                 \
            std::printf("  FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                 \
    } while (0)

// Runs one named test; an exception escaping it is a failure.
static void run(const char* name, const std::function<void()>& test) {
    const int before = g_failures;
    try {
        test();
    } catch (const std::exception& e) {
        ++g_failures;
        std::printf("  FAIL unexpected exception: %s\n", e.what());
    } catch (...) {
        ++g_failures;
        std::printf("  FAIL unexpected non-std exception\n");
    }
    std::printf("%s %s\n", g_failures == before ? "ok  " : "FAIL", name);
    std::fflush(stdout);
}

// n values uniform in [-1, 1) (real and imaginary parts for complex T), reproducible from seed.
template <class T, class N>
static std::vector<T> random_vec(N n, unsigned seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<double> u(-1.0, 1.0);
    std::vector<T> v(static_cast<std::size_t>(n));
    for (auto& x : v) {
        if constexpr (std::is_same_v<T, std::complex<double>> || std::is_same_v<T, std::complex<float>>) {
            const double re = u(rng), im = u(rng);
            x = T(static_cast<typename T::value_type>(re), static_cast<typename T::value_type>(im));
        } else {
            x = static_cast<T>(u(rng));
        }
    }
    return v;
}
