// The expand kernel for std::complex<double> (see expand_instances.hpp).
#include "expand_instances.hpp"

template TJ_EXPAND_INSTANCE(std::complex<double>);
