// The CPU ops of the axmoe domain, in registration order.
#include "cpu/cpu_ops.h"

namespace axmoe::cpu {

std::vector<OrtCustomOp*> CreateOps(const KernelChoice& choice) {
  return {CreateApproxMul(), CreateApproxConvInteger(choice), CreateApproxMatMulInteger(choice)};
}

}  // namespace axmoe::cpu
