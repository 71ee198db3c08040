// The CPU ops of the axmoe domain, in registration order.
#include "cpu/cpu_ops.h"

namespace axmoe::cpu {

std::vector<OrtCustomOp*> CreateOps() {
  return {CreateApproxMul(), CreateApproxConvInteger(), CreateApproxMatMulInteger()};
}

}  // namespace axmoe::cpu
