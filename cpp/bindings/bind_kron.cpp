#include "common.hpp"
namespace tjb {
void bind_kron(py::module_&) {}
}  // namespace tjb
