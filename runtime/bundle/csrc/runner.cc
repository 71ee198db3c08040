// axmoe_run: the C++ runner of a deployment bundle (runtime/bundle), against onnxruntime's
// C/C++ API. It checks every file the bundle's manifest.json lists against its sha256 before
// anything is loaded, registers libaxmoe_ort.so when the bundle has one, runs the model on
// inputs read from .npy files and writes the outputs as .npy:
//
//   axmoe_run BUNDLE_DIR --input X.npy [--input X2.npy ...] [--output Y.npy ...]
//             [--runs N] [--warmup N] [--threads N] [--kernel ISA] [--path auto|lut|decomposed]
//
// Inputs bind to the model's inputs in order; outputs are written in the model's output order
// (fewer --output than outputs: the rest are not written). Latency: wall time of N runs after
// the warm-up, printed as percentiles in ms. Any error is one line on stderr and exit status 1.
#include <dlfcn.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "onnxruntime_cxx_api.h"

namespace {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot read");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// ---- sha256 (FIPS 180-4) -------------------------------------------------------------
constexpr uint32_t kK[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
    0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
    0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
    0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

uint32_t Rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

std::string Sha256(const std::string& data) {
  uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  std::string msg = data;
  const uint64_t bits = static_cast<uint64_t>(data.size()) * 8;
  msg.push_back(static_cast<char>(0x80));
  while (msg.size() % 64 != 56) msg.push_back(0);
  for (int i = 7; i >= 0; --i) msg.push_back(static_cast<char>((bits >> (8 * i)) & 0xff));
  for (size_t block = 0; block < msg.size(); block += 64) {
    uint32_t w[64];
    for (int i = 0; i < 16; ++i) {
      const auto* p = reinterpret_cast<const unsigned char*>(msg.data() + block + 4 * i);
      w[i] = (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
    }
    for (int i = 16; i < 64; ++i) {
      const uint32_t s0 = Rotr(w[i - 15], 7) ^ Rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const uint32_t s1 = Rotr(w[i - 2], 17) ^ Rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; ++i) {
      const uint32_t t1 = hh + (Rotr(e, 6) ^ Rotr(e, 11) ^ Rotr(e, 25)) + ((e & f) ^ (~e & g)) + kK[i] + w[i];
      const uint32_t t2 = (Rotr(a, 2) ^ Rotr(a, 13) ^ Rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      hh = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += hh;
  }
  char hex[65];
  for (int i = 0; i < 8; ++i) std::snprintf(hex + 8 * i, 9, "%08x", h[i]);
  return std::string(hex, 64);
}

// ---- manifest: the "files" object {name: sha256} of manifest.json ----------------------
// The bundle writer emits plain ASCII names without escapes, so a string scanner suffices.
std::string JsonString(const std::string& s, size_t* pos) {
  if (*pos >= s.size() || s[*pos] != '"') throw Error("manifest.json: malformed \"files\" object");
  const size_t end = s.find('"', *pos + 1);
  if (end == std::string::npos) throw Error("manifest.json: unterminated string");
  std::string out = s.substr(*pos + 1, end - *pos - 1);
  *pos = end + 1;
  return out;
}

void SkipSpace(const std::string& s, size_t* pos) {
  while (*pos < s.size() && std::strchr(" \t\r\n", s[*pos])) ++*pos;
}

std::map<std::string, std::string> ManifestFiles(const std::string& manifest) {
  // the top-level key as json.dumps(indent=2) writes it: nested keys are indented further
  size_t pos = manifest.find("\n  \"files\": {");
  if (pos == std::string::npos) throw Error("manifest.json: no top-level \"files\" entry");
  pos = manifest.find('{', pos);
  if (pos == std::string::npos) throw Error("manifest.json: malformed \"files\" object");
  ++pos;
  std::map<std::string, std::string> files;
  for (;;) {
    SkipSpace(manifest, &pos);
    if (pos < manifest.size() && manifest[pos] == '}') break;
    const std::string name = JsonString(manifest, &pos);
    SkipSpace(manifest, &pos);
    if (pos >= manifest.size() || manifest[pos] != ':') throw Error("manifest.json: malformed \"files\" object");
    ++pos;
    SkipSpace(manifest, &pos);
    files[name] = JsonString(manifest, &pos);
    SkipSpace(manifest, &pos);
    if (pos < manifest.size() && manifest[pos] == ',') ++pos;
  }
  return files;
}

void VerifyBundle(const std::string& dir, const std::map<std::string, std::string>& files) {
  for (const auto& [name, want] : files) {
    const std::string got = Sha256(ReadFile(dir + "/" + name));
    if (got != want)
      throw Error(dir + "/" + name + ": sha256 " + got.substr(0, 12) + "... does not match the manifest's " +
                  want.substr(0, 12) + "... (corrupted or replaced; rebuild the bundle)");
  }
}

// ---- .npy (format 1.0/2.0, C order) --------------------------------------------------
struct DType {
  const char* descr;
  ONNXTensorElementDataType onnx;
  size_t size;
};
constexpr DType kDTypes[] = {
    {"<f4", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, 4}, {"<f8", ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE, 8},
    {"|i1", ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8, 1},  {"|u1", ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, 1},
    {"<i4", ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32, 4}, {"<i8", ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64, 8},
    {"|b1", ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL, 1}};

struct Array {
  const DType* dtype = nullptr;
  std::vector<int64_t> shape;
  std::string data;
};

std::string HeaderValue(const std::string& header, const std::string& key, const std::string& path) {
  const size_t k = header.find("'" + key + "'");
  if (k == std::string::npos) throw Error(path + ": .npy header has no " + key);
  size_t v = header.find(':', k) + 1;
  while (header[v] == ' ') ++v;
  const char close = header[v] == '(' ? ')' : header[v] == '\'' ? '\'' : ',';
  const size_t end = header.find(close, v + 1);
  return header.substr(v, end - v + (close == ',' ? 0 : 1));
}

Array ReadNpy(const std::string& path) {
  const std::string raw = ReadFile(path);
  if (raw.size() < 10 || raw.compare(0, 6, "\x93NUMPY") != 0) throw Error(path + ": not a .npy file");
  const bool v1 = raw[6] == 1;
  const size_t len = v1 ? (uint8_t(raw[8]) | uint8_t(raw[9]) << 8)
                        : (uint8_t(raw[8]) | uint8_t(raw[9]) << 8 | uint8_t(raw[10]) << 16 | uint8_t(raw[11]) << 24);
  const size_t start = v1 ? 10 : 12;
  const std::string header = raw.substr(start, len);
  Array a;
  const std::string descr = HeaderValue(header, "descr", path);
  for (const DType& d : kDTypes)
    if (descr == std::string("'") + d.descr + "'") a.dtype = &d;
  if (!a.dtype) throw Error(path + ": dtype " + descr + " is not supported (float32/64, int8/32/64, uint8, bool)");
  if (HeaderValue(header, "fortran_order", path) != "False") throw Error(path + ": Fortran-order arrays are not supported");
  std::string shape = HeaderValue(header, "shape", path);
  size_t count = 1;
  for (size_t i = 1; i < shape.size();) {
    if (std::isdigit(static_cast<unsigned char>(shape[i]))) {
      size_t used = 0;
      a.shape.push_back(std::stoll(shape.substr(i), &used));
      count *= a.shape.back();
      i += used;
    } else {
      ++i;
    }
  }
  a.data = raw.substr(start + len);
  if (a.data.size() != count * a.dtype->size)
    throw Error(path + ": holds " + std::to_string(a.data.size()) + " bytes, its shape needs " +
                std::to_string(count * a.dtype->size));
  return a;
}

void WriteNpy(const std::string& path, const DType& dtype, const std::vector<int64_t>& shape, const void* data,
              size_t bytes) {
  std::string dims;  // numpy's repr of the shape tuple: (), (n,), (n, m)
  for (size_t i = 0; i < shape.size(); ++i) dims += (i ? ", " : "") + std::to_string(shape[i]);
  if (shape.size() == 1) dims += ",";
  std::string header = std::string("{'descr': '") + dtype.descr + "', 'fortran_order': False, 'shape': (" + dims + "), }";
  while ((10 + header.size() + 1) % 64) header.push_back(' ');
  header.push_back('\n');
  std::ofstream out(path, std::ios::binary);
  if (!out) throw Error(path + ": cannot write");
  out.write("\x93NUMPY\x01\x00", 8);
  const uint16_t len = static_cast<uint16_t>(header.size());
  out.put(static_cast<char>(len & 0xff)).put(static_cast<char>(len >> 8));
  out << header;
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
}

const DType& DTypeOf(ONNXTensorElementDataType type) {
  for (const DType& d : kDTypes)
    if (d.onnx == type) return d;
  throw Error("model output of ONNX element type " + std::to_string(type) + " cannot be written as .npy");
}

// The op library's own report of its kernels (runtime/ort/csrc/c_api.cc), and of the AArch64
// dot-product choice of a bundle build (runtime/bundle/csrc/neon_dot_dispatch.cc).
std::string KernelReport(const std::string& library, const std::string& isa) {
  void* handle = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) throw Error(library + ": " + dlerror());
  using Str = const char* (*)();
  using Names = const char* (*)(const char*);
  auto variants = reinterpret_cast<Str>(dlsym(handle, "axmoe_kernel_variants"));
  auto names = reinterpret_cast<Names>(dlsym(handle, "axmoe_kernel_names"));
  auto dot = reinterpret_cast<Str>(dlsym(handle, "axmoe_neon_dot_extension"));
  if (!variants || !names) throw Error(library + ": not an axmoe op library (no axmoe_kernel_variants)");
  std::string chosen = isa == "auto" ? std::string(variants()).substr(0, std::string(variants()).find(',')) : isa;
  std::string report = "kernels: " + chosen + " [" + names(chosen.c_str()) + "] of " + variants();
  if (dot) report += std::string("; neon dot product: ") + dot();
  return report;
}

double Percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const double pos = q * (v.size() - 1);
  const size_t lo = static_cast<size_t>(pos);
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - lo);
}

int Run(int argc, char** argv) {
  if (argc < 2 || argv[1][0] == '-')
    throw Error("usage: axmoe_run BUNDLE_DIR --input X.npy [--output Y.npy] [--runs N] [--warmup N] "
                "[--threads N] [--kernel ISA] [--path auto|lut|decomposed]");
  const std::string dir = argv[1];
  std::vector<std::string> inputs, outputs;
  int runs = 10, warmup = 1, threads = 1;
  std::string kernel = "auto", path = "auto";
  for (int i = 2; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) throw Error(flag + " needs a value");
    const std::string value = argv[++i];
    if (flag == "--input") inputs.push_back(value);
    else if (flag == "--output") outputs.push_back(value);
    else if (flag == "--runs") runs = std::max(1, std::stoi(value));
    else if (flag == "--warmup") warmup = std::max(0, std::stoi(value));
    else if (flag == "--threads") threads = std::stoi(value);
    else if (flag == "--kernel") kernel = value;
    else if (flag == "--path") path = value;
    else throw Error("unknown option " + flag);
  }
  const auto files = ManifestFiles(ReadFile(dir + "/manifest.json"));
  VerifyBundle(dir, files);
  if (!files.count("model.onnx")) throw Error(dir + ": the manifest lists no model.onnx");
  const bool has_library = files.count("libaxmoe_ort.so") > 0;

  Ort::Env env(ORT_LOGGING_LEVEL_WARNING, "axmoe_run");
  Ort::SessionOptions options;
  options.SetIntraOpNumThreads(threads);
  options.SetInterOpNumThreads(1);
  if (has_library) {
    // read by the library when it is registered, so set first (runtime/ort/csrc/register.cc)
    options.AddConfigEntry("axmoe.kernel", kernel.c_str());
    options.AddConfigEntry("axmoe.path", path.c_str());
    const std::string library = dir + "/libaxmoe_ort.so";
    std::cout << KernelReport(library, kernel) << "\n";
    options.RegisterCustomOpsLibrary(library.c_str());
  } else {
    std::cout << "kernels: none (standard onnxruntime ops only)\n";
  }
  Ort::Session session(env, (dir + "/model.onnx").c_str(), options);
  Ort::AllocatorWithDefaultOptions allocator;
  const size_t n_in = session.GetInputCount(), n_out = session.GetOutputCount();
  if (inputs.size() != n_in)
    throw Error("the model has " + std::to_string(n_in) + " input(s), got " + std::to_string(inputs.size()) +
                " --input");
  std::vector<std::string> in_names, out_names;
  for (size_t i = 0; i < n_in; ++i) in_names.push_back(session.GetInputNameAllocated(i, allocator).get());
  for (size_t i = 0; i < n_out; ++i) out_names.push_back(session.GetOutputNameAllocated(i, allocator).get());
  std::vector<const char*> in_ptrs, out_ptrs;
  for (auto& n : in_names) in_ptrs.push_back(n.c_str());
  for (auto& n : out_names) out_ptrs.push_back(n.c_str());

  const Ort::MemoryInfo memory = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
  std::vector<Array> arrays;
  std::vector<Ort::Value> values;
  for (const std::string& p : inputs) arrays.push_back(ReadNpy(p));
  for (Array& a : arrays)
    values.push_back(Ort::Value::CreateTensor(memory, a.data.data(), a.data.size(), a.shape.data(), a.shape.size(),
                                              a.dtype->onnx));

  std::vector<Ort::Value> result;
  std::vector<double> ms;
  for (int r = 0; r < warmup + runs; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    result = session.Run(Ort::RunOptions{nullptr}, in_ptrs.data(), values.data(), n_in, out_ptrs.data(), n_out);
    const std::chrono::duration<double, std::milli> dt = std::chrono::steady_clock::now() - t0;
    if (r >= warmup) ms.push_back(dt.count());
  }
  for (size_t i = 0; i < std::min(outputs.size(), n_out); ++i) {
    const auto info = result[i].GetTensorTypeAndShapeInfo();
    const DType& dtype = DTypeOf(info.GetElementType());
    WriteNpy(outputs[i], dtype, info.GetShape(), result[i].GetTensorRawData(), info.GetElementCount() * dtype.size);
  }
  std::printf("latency ms over %d runs (threads %d): p50 %.3f  p90 %.3f  p99 %.3f  min %.3f\n", runs, threads,
              Percentile(ms, 0.5), Percentile(ms, 0.9), Percentile(ms, 0.99), *std::min_element(ms.begin(), ms.end()));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Run(argc, argv);
  } catch (const std::exception& e) {  // Error, Ort::Exception, std::invalid_argument from stoi
    std::fprintf(stderr, "axmoe_run: error: %s\n", e.what());
    return 1;
  }
}
