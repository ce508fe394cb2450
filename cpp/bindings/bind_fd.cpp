#include "common.hpp"
namespace tjb {
void bind_fd(py::module_&) {}
}  // namespace tjb
