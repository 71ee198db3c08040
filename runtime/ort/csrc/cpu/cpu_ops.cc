// The CPU ops of the axmoe domain, in registration order.
#include "cpu/cpu_ops.h"

namespace axmoe::cpu {

std::vector<std::unique_ptr<OrtCustomOp>> CreateOps() {
  std::vector<std::unique_ptr<OrtCustomOp>> ops;
  ops.push_back(CreateApproxMul());
  ops.push_back(CreateApproxConvInteger());
  ops.push_back(CreateApproxMatMulInteger());
  return ops;
}

}  // namespace axmoe::cpu
