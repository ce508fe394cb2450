// The expand kernel for float (see expand_instances.hpp).
#include "expand_instances.hpp"

template TJ_EXPAND_INSTANCE(float);
