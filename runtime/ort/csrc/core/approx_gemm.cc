#include "core/approx_gemm.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>

#include "core/aligned_buffer.h"
#include "core/conv_c4.h"

namespace axmoe {

enum Mode { kLutLanesI = 0, kLutLanesJ = 1, kDot = 2 };

struct PreparedWeights {
  std::shared_ptr<const LutPlan> plan;  // keeps the plan (and its address) alive
  int mode = 0;
  size_t stride = 0;                    // bytes (elements) per weight view
  AlignedBuffer<uint8_t> index;         // kLutLanesI: [J][K] rows; kLutLanesJ: [K][Jpad]
  AlignedBuffer<int8_t> dot;            // kDot: [terms][J][4 * k4]
  AlignedBuffer<int32_t> wsum;          // kDot: [terms][J]
  size_t wsum_stride = 0;
};

namespace {

constexpr size_t kLutLanes = 256;  // lanes per LUT-path tile (4 vectors of 64)
constexpr size_t kDotLanes = 64;   // lanes per decomposed-path tile (4 vectors of 16)

size_t RoundUp(size_t x, size_t m) { return (x + m - 1) / m * m; }

struct Scratch {
  AlignedBuffer<uint8_t> index;
  AlignedBuffer<int8_t> act;
  AlignedBuffer<int32_t> tile;
};
Scratch& ThreadScratch() {
  thread_local Scratch scratch;
  return scratch;
}

// conv: the C4 layout of the decomposed path's conv inputs (null for dense activations),
// whose reduction order k' the packed weights follow.
std::shared_ptr<PreparedWeights> Prepare(const GemmBatch& b, const std::shared_ptr<const LutPlan>& plan, int mode,
                                         const C4Layout* conv, const ParallelFor& parallel_for) {
  auto p = std::make_shared<PreparedWeights>();
  p->plan = plan;
  p->mode = mode;
  const size_t J = size_t(b.J), K = size_t(b.K), nw = b.weights.size();
  if (mode == kLutLanesI) {
    p->stride = J * K;
    p->index.Resize(nw * p->stride);
    parallel_for(nw, [&](size_t w) { PackIndexRows(b.weights[w], 0, b.J, b.K, K, p->index.data() + w * p->stride); });
  } else if (mode == kLutLanesJ) {
    const size_t jpad = RoundUp(J, 64);
    p->stride = K * jpad;
    p->index.Resize(nw * p->stride);
    parallel_for(nw, [&](size_t w) { PackIndexKMajor(b.weights[w], 0, b.J, b.K, jpad, p->index.data() + w * p->stride); });
  } else {
    const size_t terms = plan->dot_masks.size(), ldt = conv ? size_t(4 * conv->k4()) : RoundUp(K, 4);
    p->stride = terms * J * ldt;
    p->wsum_stride = terms * J;
    p->dot.Resize(nw * p->stride);
    p->wsum.Resize(nw * p->wsum_stride);
    parallel_for(nw, [&](size_t w) {
      const OperandView& v = b.weights[w];
      for (size_t term = 0; term < terms; ++term) {
        const int8_t* beta = plan->dot_beta[term].data();
        for (size_t j = 0; j < J; ++j) {
          int8_t* o = p->dot.data() + w * p->stride + (term * J + j) * ldt;
          int32_t sum = 0;
          for (size_t k = 0; k < ldt; ++k) {
            const int64_t src = conv ? C4OriginalK(*b.problems[0].a.geo, *conv, int64_t(k)) : (k < K ? int64_t(k) : -1);
            o[k] = src < 0 ? 0 : beta[uint8_t(v.At(int64_t(j), src)) ^ 0x80];
            sum += o[k];
          }
          p->wsum.data()[w * p->wsum_stride + term * J + j] = sum;
        }
      }
    });
  }
  return p;
}

// Writes tile[t][l] (t < nt rows of T, l < nl lanes of L) into Y.
void Scatter(const int32_t* tile, size_t lanes, size_t nt, size_t nl, int32_t* y, int64_t ld_t, int64_t ld_l) {
  if (ld_l == 1) {
    for (size_t t = 0; t < nt; ++t) std::memcpy(y + int64_t(t) * ld_t, tile + t * lanes, nl * sizeof(int32_t));
  } else {
    for (size_t l = 0; l < nl; ++l)
      for (size_t t = 0; t < nt; ++t) y[int64_t(l) * ld_l + int64_t(t) * ld_t] = tile[t * lanes + l];
  }
}

}  // namespace

void SerialFor(size_t n, const std::function<void(size_t)>& fn) {
  for (size_t i = 0; i < n; ++i) fn(i);
}

std::shared_ptr<const PreparedWeights> WeightCache::Find(const LutPlan* plan, int mode) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& e : entries_)
    if (e->plan.get() == plan && e->mode == mode) return e;
  return nullptr;
}

void WeightCache::Store(std::shared_ptr<const PreparedWeights> prepared) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (entries_.size() >= 4) entries_.erase(entries_.begin());
  entries_.push_back(std::move(prepared));
}

std::string RunApproxGemm(const GemmBatch& b, const std::shared_ptr<const LutPlan>& plan_ptr,
                          const GemmOptions& options, const ParallelFor& parallel_for, WeightCache* cache) {
  const LutPlan& plan = *plan_ptr;
  if (options.path == PathChoice::kDecomposed && !plan.dot_ok)
    return "AXMOE_PATH=decomposed, but this LUT cannot take the decomposed path (" + plan.dot_reason + ")";
  if (b.problems.empty() || b.I == 0 || b.J == 0) return "";
  const size_t I = size_t(b.I), J = size_t(b.J), K = size_t(b.K);

  const bool dot = plan.dot_ok && options.path != PathChoice::kLut;
  const KernelVariant* variant = options.variant;
  int mode = kDot;
  if (!dot) {
    // Lanes over J (tables indexed by weights) when that leaves clearly fewer padded lanes.
    const size_t pad_i = RoundUp(I, 64) * J, pad_j = RoundUp(J, 64) * I;
    mode = pad_j * 5 < pad_i * 4 ? kLutLanesJ : kLutLanesI;
    if (variant->lut_needs_planes && !plan.fits_int16) variant = &ScalarVariant();
  }

  // Conv inputs on the decomposed path: channel-interleaved padded images, built once per call.
  const bool conv = mode == kDot && b.problems[0].a.im2col;
  C4Layout layout{};
  AlignedBuffer<int8_t> images;
  if (conv) {
    layout = MakeC4Layout(*b.problems[0].a.geo);
    try {
      images.Resize(b.problems.size() * layout.bytes());
    } catch (const std::bad_alloc&) {
      return "out of memory for the channel-interleaved input";
    }
    parallel_for(b.problems.size(), [&](size_t i) { BuildC4Image(b.problems[i].a, layout, images.data() + i * layout.bytes()); });
  }

  std::shared_ptr<const PreparedWeights> prepared = cache ? cache->Find(&plan, mode) : nullptr;
  if (!prepared) {
    try {
      prepared = Prepare(b, plan_ptr, mode, conv ? &layout : nullptr, parallel_for);
    } catch (const std::bad_alloc&) {
      return "out of memory for the packed weights";
    }
    if (cache) cache->Store(prepared);
  }
  const PreparedWeights& pw = *prepared;

  // Tiles: lanes over L (I, or J for kLutLanesJ), output rows over T; split T when there
  // are too few tiles to keep every thread busy.
  const size_t L = mode == kLutLanesJ ? J : I, T = mode == kLutLanesJ ? I : J;
  const size_t lane_unit = dot ? 16 : 64;
  const size_t panel = std::min(RoundUp(L, lane_unit), dot ? kDotLanes : kLutLanes);
  const size_t panels = (L + panel - 1) / panel;
  const size_t min_tasks = options.min_tasks ? options.min_tasks
                                             : 2 * std::max(1u, std::thread::hardware_concurrency());
  size_t rows = T;
  while (b.problems.size() * panels * ((T + rows - 1) / rows) < min_tasks && rows > 8) rows = (rows + 1) / 2;
  const size_t blocks = (T + rows - 1) / rows;
  const size_t tasks = b.problems.size() * panels * blocks;

  // Activation panels: packed by the task that uses them, or once up front and shared when
  // the output rows of a panel are split over several tasks.
  const size_t k4 = conv ? size_t(layout.k4()) : (K + 3) / 4;
  const size_t panel_bytes = mode == kDot ? k4 * panel * 4 : K * panel;
  auto pack = [&](const GemmProblem& p, size_t pi, size_t l0, size_t nl, size_t lanes, uint8_t* dst, Scratch& s) {
    if (mode == kDot && conv) {
      PackC4Panel(*p.a.geo, layout, images.data() + pi * layout.bytes(), int64_t(l0), int64_t(nl), lanes,
                  reinterpret_cast<int8_t*>(dst));
    } else if (mode == kDot) {
      PackActK4(p.a, int64_t(l0), int64_t(nl), b.K, lanes, reinterpret_cast<int8_t*>(dst), s.index.Resize(K * lanes));
    } else {
      PackIndexKMajor(p.a, int64_t(l0), int64_t(nl), b.K, lanes, dst);
    }
  };
  const bool shared = blocks > 1 && mode != kLutLanesJ;
  AlignedBuffer<uint8_t> panels_buf;
  std::atomic<bool> failed{false};
  if (shared) {
    try {
      panels_buf.Resize(b.problems.size() * panels * panel_bytes);
    } catch (const std::bad_alloc&) {
      return "out of memory for the packed activations";
    }
    parallel_for(b.problems.size() * panels, [&](size_t i) {
      try {
        const size_t pan = i % panels, pi = i / panels;
        const size_t l0 = pan * panel, nl = std::min(panel, L - l0);
        pack(b.problems[pi], pi, l0, nl, RoundUp(nl, lane_unit), panels_buf.data() + i * panel_bytes, ThreadScratch());
      } catch (...) {
        failed = true;
      }
    });
  }

  auto run_task = [&](size_t task) {
    const size_t block = task % blocks, pan = (task / blocks) % panels, pi = task / (blocks * panels);
    const GemmProblem& p = b.problems[pi];
    const size_t l0 = pan * panel, nl = std::min(panel, L - l0);
    const size_t t0 = block * rows, nt = std::min(rows, T - t0);
    const size_t lanes = RoundUp(nl, lane_unit);
    Scratch& s = ThreadScratch();
    int32_t* tile = s.tile.Resize(nt * lanes);
    const uint8_t* packed = nullptr;
    if (mode != kLutLanesJ) {
      if (shared) {
        packed = panels_buf.data() + (pi * panels + pan) * panel_bytes;
      } else {
        uint8_t* dst = reinterpret_cast<uint8_t*>(s.act.Resize(panel_bytes));
        pack(p, pi, l0, nl, lanes, dst, s);
        packed = dst;
      }
    }
    if (mode == kDot) {
      const size_t ldt = 4 * k4;
      kernels::DotGemmArgs args{plan.dot_masks.data(), plan.dot_masks.size(), reinterpret_cast<const int8_t*>(packed),
                                lanes, k4, pw.dot.data() + p.weight * pw.stride + t0 * ldt, J * ldt, ldt,
                                pw.wsum.data() + p.weight * pw.wsum_stride + t0, J, nt, tile};
      variant->dot(args);
      Scatter(tile, lanes, nt, nl, p.y + int64_t(l0) * p.ldy_i + int64_t(t0) * p.ldy_j, p.ldy_j, p.ldy_i);
    } else if (mode == kLutLanesI) {
      kernels::LutGemmArgs args{plan.by_weight.data(), plan.fits_int16 ? plan.planes_by_weight.data() : nullptr,
                                packed, lanes, lanes, K, pw.index.data() + p.weight * pw.stride + t0 * K, K, nt, tile};
      variant->lut(args);
      Scatter(tile, lanes, nt, nl, p.y + int64_t(l0) * p.ldy_i + int64_t(t0) * p.ldy_j, p.ldy_j, p.ldy_i);
    } else {
      uint8_t* sel = s.index.Resize(nt * K + 64);
      PackIndexRows(p.a, int64_t(t0), int64_t(nt), b.K, K, sel);
      const size_t jpad = RoundUp(J, 64);
      kernels::LutGemmArgs args{plan.by_act(), plan.fits_int16 ? plan.planes_by_act.data() : nullptr,
                                pw.index.data() + p.weight * pw.stride + l0, jpad, lanes, K, sel, K, nt, tile};
      variant->lut(args);
      Scatter(tile, lanes, nt, nl, p.y + int64_t(t0) * p.ldy_i + int64_t(l0) * p.ldy_j, p.ldy_i, p.ldy_j);
    }
  };

  parallel_for(tasks, [&](size_t task) {
    try {
      run_task(task);
    } catch (...) {  // out of memory for scratch: report, never unwind through the thread pool
      failed = true;
    }
  });
  return failed ? "out of memory for the kernel's scratch buffers" : "";
}

}  // namespace axmoe
