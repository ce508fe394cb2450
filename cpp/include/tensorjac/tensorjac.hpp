// <tensorjac/tensorjac.hpp>: the C++ API of tensorjac in one header.
//
//   find_package(tensorjac CONFIG REQUIRED)
//   target_link_libraries(app PRIVATE tensorjac::kernels)
//
//   #include <tensorjac/tensorjac.hpp>
//
// Header-only, C++17, free of Python; works with and without OpenMP (without
// it, or with the tensorjac::headers target, every kernel runs on the calling
// thread).  What it offers (docs/cpp.md is the guide):
//
//   api.hpp        the documented API: Jacobian layouts, index-expression terms
//                  expanded into any layout (JacobianTerms, expand_into),
//                  kron_matvec, finite-difference Jacobians (fd::jacobian)
//   expand.hpp     the expand kernel under JacobianTerms (Term / Factor structs)
//   kron.hpp       Kronecker VJP/JVP contractions, batched row scaling
//   fd.hpp         finite-difference stencil kernels (perturbed stacks, weighted combinations)
//   symmetrize.hpp exact in-place symmetrization of stacked square matrices
//   parallel.hpp   thread counts, parallel_blocks, cancellation (CancelFlag, ScopedCancel),
//                  checked 64-bit size arithmetic
#pragma once

#define TENSORJAC_CPP_API 1

#include "tensorjac/parallel.hpp"
#include "tensorjac/expand.hpp"
#include "tensorjac/kron.hpp"
#include "tensorjac/fd.hpp"
#include "tensorjac/symmetrize.hpp"
#include "tensorjac/api.hpp"
