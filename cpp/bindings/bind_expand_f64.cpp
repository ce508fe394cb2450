// The expand kernel for double (see expand_instances.hpp).
#include "expand_instances.hpp"

template TJ_EXPAND_INSTANCE(double);
