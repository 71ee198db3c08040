// Entry point of the axmoe onnxruntime custom-op library: one domain ("axmoe", version 1)
// holding the CPU kernels. onnxruntime calls RegisterCustomOps when the library is
// registered on a SessionOptions.
#include "onnxruntime_cxx_api.h"

#include <memory>
#include <mutex>
#include <vector>

#include "cpu/cpu_ops.h"

namespace {
std::mutex g_mutex;
}  // namespace

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  Ort::InitApi(api_base->GetApi(ORT_API_VERSION));
  Ort::CustomOpDomain domain{nullptr};
  std::lock_guard<std::mutex> lock(g_mutex);
  try {
    domain = Ort::CustomOpDomain{"axmoe"};
    // Ops and domains must outlive every session that uses them (onnxruntime keeps raw
    // pointers), so they live for the lifetime of the process.
    static const std::vector<OrtCustomOp*> registered = axmoe::cpu::CreateOps();
    for (OrtCustomOp* op : registered) domain.Add(op);
    Ort::UnownedSessionOptions session_options(options);
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
