// The expand kernel's instantiations, one binding file per dtype (bind_expand_<dtype>.cpp), so that
// a build compiles them in parallel: the kernel (row kernels in baseline and AVX2 variants for every
// structure) is most of the extension's compile time.  bind_expand.cpp declares them extern.
#pragma once

#include <complex>
#include <cstdint>
#include <vector>

#include "tensorjac/expand.hpp"

#define TJ_EXPAND_INSTANCE(T)                                                                     \
    void tensorjac::expand<T>(T*, const std::vector<std::int64_t>&, const std::vector<std::int64_t>&, \
                              const std::vector<tensorjac::Term<T>>&, int, tensorjac::ExpandMode, bool*)

extern template TJ_EXPAND_INSTANCE(float);
extern template TJ_EXPAND_INSTANCE(double);
extern template TJ_EXPAND_INSTANCE(std::complex<float>);
extern template TJ_EXPAND_INSTANCE(std::complex<double>);
