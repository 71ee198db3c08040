// Entry point of the axmoe onnxruntime custom-op library: one domain ("axmoe", version 1)
// holding the CPU kernels. onnxruntime calls RegisterCustomOps when the library is
// registered on a SessionOptions; the kernel choice of the sessions made from it (config
// entries axmoe.kernel and axmoe.path, see core/kernel_select.h) is read here, so those
// entries must be set before the library is registered.
#include "onnxruntime_cxx_api.h"

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "core/kernel_select.h"
#include "cpu/cpu_ops.h"

namespace {

std::mutex g_mutex;

// Ops and domains must outlive every session that uses them (onnxruntime keeps raw
// pointers), so they live for the lifetime of the process: one set of ops per kernel choice
// (at most ISAs x paths sets), one domain per registration.
const std::vector<OrtCustomOp*>& OpsFor(const axmoe::KernelChoice& choice) {
  static std::map<std::pair<const axmoe::KernelVariant*, axmoe::PathChoice>, std::vector<OrtCustomOp*>> ops;
  std::vector<OrtCustomOp*>& set = ops[{choice.variant, choice.path}];
  if (set.empty()) set = axmoe::cpu::CreateOps(choice);
  return set;
}

}  // namespace

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  Ort::InitApi(api_base->GetApi(ORT_API_VERSION));
  Ort::CustomOpDomain domain{nullptr};
  std::lock_guard<std::mutex> lock(g_mutex);
  try {
    Ort::UnownedSessionOptions session_options(options);
    axmoe::KernelChoice choice;
    std::string error;
    if (!axmoe::ParseKernelChoice(session_options.GetConfigEntryOrDefault(axmoe::kKernelConfigKey, "auto"),
                                  session_options.GetConfigEntryOrDefault(axmoe::kPathConfigKey, "auto"), &choice,
                                  &error))
      return Ort::Status(error.c_str(), ORT_INVALID_ARGUMENT).release();
    domain = Ort::CustomOpDomain{"axmoe"};
    for (OrtCustomOp* op : OpsFor(choice)) domain.Add(op);
    session_options.Add(domain);
    static std::vector<Ort::CustomOpDomain> domains;
    domains.push_back(std::move(domain));
  } catch (const Ort::Exception& e) {
    return Ort::Status(e).release();
  } catch (const std::exception& e) {
    return Ort::Status(e.what(), ORT_FAIL).release();
  }
  return nullptr;
}
