#include "core/approx_gemm.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <thread>

#include "core/aligned_buffer.h"
#include "core/conv_c4.h"

namespace axmoe {

// Which operand runs along the kernel's vector lanes, and which path computes the products.
enum Mode {
  kLutLanesI,  // general LUT, lanes over activations (tables indexed by weights)
  kLutLanesJ,  // general LUT, lanes over weights (tables indexed by activations)
  kDotLanesI,  // decomposed, lanes over activations, folded weights broadcast
  kDotLanesJ,  // decomposed with the operands swapped: lanes over weights, folded activations broadcast
  kDotLanesICT,  // kDotLanesI with the plan's correction table for the low-bit terms
};

struct PreparedWeights {
  std::shared_ptr<const LutPlan> plan;  // keeps the plan (and its address) alive
  int mode = 0;
  size_t stride = 0;                    // elements per weight view
  AlignedBuffer<uint8_t> index;         // kLutLanesI: [J][K] rows; kLutLanesJ: [panel][K][width]
  AlignedBuffer<int8_t> dot;            // kDotLanesI: [terms][J][4 k4] folded; kDotLanesJ: [panel][k4][width][4] raw
  size_t panel_stride = 0;              // lanes-over-J modes: elements per panel (contiguous, so
                                        // no large strides alias in the caches)
  AlignedBuffer<int32_t> wsum;          // kDotLanesI: [terms][J]
  size_t wsum_stride = 0;
  AlignedBuffer<int8_t> ct;             // kDotLanesICT: [J][k4][64] correction tables
  size_t ct_stride = 0;
};

namespace {

constexpr size_t kLutLanes = 256;  // lanes per LUT-path tile (4 vectors of 64)
constexpr size_t kDotLanes = 256;  // lanes per decomposed-path tile (16 vectors of 16)

size_t RoundUp(size_t x, size_t m) { return (x + m - 1) / m * m; }

// Lanes of one tile along L (I or J): whole vectors, at most the mode's panel width.
size_t PanelWidth(bool dot, size_t L) {
  return std::min(RoundUp(L, dot ? 16 : 64), dot ? kDotLanes : kLutLanes);
}

struct Scratch {
  AlignedBuffer<uint8_t> index;
  AlignedBuffer<int8_t> act;
  AlignedBuffer<int32_t> sums;
  AlignedBuffer<int32_t> tile;
};
Scratch& ThreadScratch() {
  thread_local Scratch scratch;
  return scratch;
}

// out[term * ld_term + t * ldt + k'] = beta_term(value(r0 + t, k)) for the k that k' reads
// (kmap; -1: zero), sums[term * ld_sum + t] = sum over k'. v is dense.
template <typename KMap>
void PackFolded(const OperandView& v, int64_t r0, size_t nr, size_t ldt, const std::vector<std::array<int8_t, 256>>& beta,
                KMap kmap, int8_t* out, size_t ld_term, int32_t* sums, size_t ld_sum) {
  const uint8_t flip = v.flip ^ 0x80;  // stored byte -> value + 128, the table index
  for (size_t term = 0; term < beta.size(); ++term) {
    const int8_t* table = beta[term].data();
    for (size_t t = 0; t < nr; ++t) {
      const uint8_t* row = v.data + (r0 + int64_t(t)) * v.stride_r;
      int8_t* o = out + term * ld_term + t * ldt;
      int32_t sum = 0;
      for (size_t k = 0; k < ldt; ++k) {
        const int64_t src = kmap(k);
        o[k] = src < 0 ? 0 : table[row[src * v.stride_k] ^ flip];
        sum += o[k];
      }
      sums[term * ld_sum + t] = sum;
    }
  }
}

// The same for rows with contiguous k (MatMul activations), per term c * int8(x & mask):
// straight-line byte arithmetic the compiler vectorises, for packing inside every tile.
void PackFoldedRows(const OperandView& v, int64_t r0, size_t nr, size_t K, size_t ldt, const std::vector<MaskTerm>& terms,
                    const std::vector<uint8_t>& masks, int8_t* out, size_t ld_term, int32_t* sums, size_t ld_sum) {
  for (size_t term = 0; term < terms.size(); ++term) {
    const int8_t coef = static_cast<int8_t>(terms[term].coef), mask = static_cast<int8_t>(masks[term]);
    const int8_t flip = static_cast<int8_t>(v.flip);
    for (size_t t = 0; t < nr; ++t) {
      const int8_t* row = reinterpret_cast<const int8_t*>(v.data + (r0 + int64_t(t)) * v.stride_r);
      int8_t* o = out + term * ld_term + t * ldt;
      int32_t sum = 0;
      for (size_t k = 0; k < K; ++k) {
        o[k] = static_cast<int8_t>(coef * static_cast<int8_t>((row[k] ^ flip) & mask));
        sum += o[k];
      }
      std::memset(o + K, 0, ldt - K);
      sums[term * ld_sum + t] = sum;
    }
  }
}

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
    const size_t width = PanelWidth(false, J), panels = (J + width - 1) / width;
    p->panel_stride = K * width;
    p->stride = panels * p->panel_stride;
    p->index.Resize(nw * p->stride);
    parallel_for(nw * panels, [&](size_t i) {
      const size_t w = i / panels, l0 = (i % panels) * width;
      PackIndexKMajor(b.weights[w], int64_t(l0), int64_t(std::min(width, J - l0)), b.K, width,
                      p->index.data() + w * p->stride + (i % panels) * p->panel_stride);
    });
  } else if (mode == kDotLanesI || mode == kDotLanesICT) {
    // Reduction order: k' = k, or the C4 conv order (conv_c4.h).
    const bool ct = mode == kDotLanesICT;
    const auto& beta = ct ? plan->ct_beta : plan->dot_beta;
    const size_t terms = beta.size(), ldt = conv ? size_t(4 * conv->k4()) : RoundUp(K, 4);
    p->stride = terms * J * ldt;
    p->wsum_stride = terms * J;
    p->dot.Resize(nw * p->stride);
    p->wsum.Resize(nw * p->wsum_stride);
    p->ct_stride = ct ? J * ldt * 16 : 0;
    p->ct.Resize(nw * p->ct_stride);
    const ConvGeometry* geo = b.problems[0].a.geo;
    auto kmap = [&](size_t k) { return conv ? C4OriginalK(*geo, *conv, int64_t(k)) : (k < K ? int64_t(k) : -1); };
    parallel_for(nw, [&](size_t w) {
      const OperandView& v = b.weights[w];
      PackFolded(v, 0, J, ldt, beta, kmap, p->dot.data() + w * p->stride, J * ldt, p->wsum.data() + w * p->wsum_stride, J);
      if (!ct) return;
      // Table of row j, reduction index k': 16 entries g(x, b(j, k')) at 16 * k'.
      for (size_t j = 0; j < J; ++j) {
        int8_t* o = p->ct.data() + w * p->ct_stride + j * ldt * 16;
        for (size_t k = 0; k < ldt; ++k) {
          const int64_t src = kmap(k);
          if (src < 0) {
            std::memset(o + 16 * k, 0, 16);
          } else {
            const uint8_t b = v.data[int64_t(j) * v.stride_r + src * v.stride_k] ^ v.flip ^ 0x80;
            std::memcpy(o + 16 * k, plan->ct_table[b].data(), 16);
          }
        }
      }
    });
  } else {
    const size_t k4 = (K + 3) / 4, width = PanelWidth(true, J), panels = (J + width - 1) / width;
    p->panel_stride = k4 * width * 4;
    p->stride = panels * p->panel_stride;
    p->dot.Resize(nw * p->stride);
    parallel_for(nw * panels, [&](size_t i) {
      const size_t w = i / panels, l0 = (i % panels) * width;
      PackActK4(b.weights[w], int64_t(l0), int64_t(std::min(width, J - l0)), b.K, width,
                p->dot.data() + w * p->stride + (i % panels) * p->panel_stride, ThreadScratch().index.Resize(K * width));
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

int ChooseMode(const GemmBatch& b, const LutPlan& plan, const KernelVariant& variant, PathChoice path, bool conv) {
  const size_t I = size_t(b.I), J = size_t(b.J);
  // Lanes over the dimension that leaves fewer padded lanes. Conv outputs favour lanes over
  // positions (I: rows of the output plane are contiguous, and the C4 layout), so J must be
  // clearly better there; MatMul outputs favour lanes over J (rows of Y are contiguous).
  auto lanes_j = [&](size_t unit) {
    const size_t pad_i = RoundUp(I, unit) * J, pad_j = RoundUp(J, unit) * I;
    return conv ? pad_j * 10 < pad_i * 9 : pad_j * 10 <= pad_i * 11;
  };
  if (plan.dot_ok && path != PathChoice::kLut) {
    // The correction table (lanes over activations only) saves more than most padding costs,
    // but takes 16 bytes per weight: it must stay in cache or be reused over many lanes.
    const size_t table_bytes = J * RoundUp(size_t(b.K), 4) * 16;
    if (plan.ct_ok && variant.dot_takes_ct && (table_bytes <= (size_t(4) << 20) || I >= 256) &&
        (conv || RoundUp(I, 16) * J * 2 <= RoundUp(J, 16) * I * 3))
      return kDotLanesICT;
    return !conv && plan.dot_swapped_ok && lanes_j(16) ? kDotLanesJ : kDotLanesI;
  }
  return lanes_j(64) ? kLutLanesJ : kLutLanesI;
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
    return std::string(kPathConfigKey) + "=decomposed, but this LUT cannot take the decomposed path (" +
           plan.dot_reason + ")";
  if (b.problems.empty() || b.I == 0 || b.J == 0) return "";
  const size_t I = size_t(b.I), J = size_t(b.J), K = size_t(b.K);
  const bool conv_input = b.problems[0].a.im2col;
  const int mode = ChooseMode(b, plan, *options.variant, options.path, conv_input);
  const bool dot = mode == kDotLanesI || mode == kDotLanesJ || mode == kDotLanesICT;
  const bool lanes_i_dot = mode == kDotLanesI || mode == kDotLanesICT;
  const KernelVariant* variant = options.variant;
  if (!dot && variant->lut_needs_planes && !plan.fits_int16) variant = &ScalarVariant();

  // Conv inputs on the decomposed path: channel-interleaved padded images, built once per call.
  const bool conv = lanes_i_dot && conv_input;
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

  const size_t k4 = conv ? size_t(layout.k4()) : (K + 3) / 4;

  // Tiles: lanes over L, output rows over T; split T when there are too few tiles to keep
  // every thread busy.
  const bool lanes_j = mode == kLutLanesJ || mode == kDotLanesJ;
  const size_t L = lanes_j ? J : I, T = lanes_j ? I : J;
  const size_t lane_unit = dot ? 16 : 64;
  const size_t panel = PanelWidth(dot, L);
  const size_t panels = (L + panel - 1) / panel;
  const size_t min_tasks = options.min_tasks ? options.min_tasks
                                             : 2 * std::max(1u, std::thread::hardware_concurrency());
  // Rows whose activations a tile packs itself (lanes over J) are capped so they stay in cache,
  // and so are the correction tables (16 bytes per weight) of one tile's rows.
  size_t rows = T;
  if (mode == kDotLanesJ) rows = std::min<size_t>(T, 96);
  if (mode == kLutLanesJ) rows = std::min<size_t>(T, 128);
  if (mode == kDotLanesICT) rows = std::min<size_t>(T, std::max<size_t>(6, (size_t(512) << 10) / (64 * k4) / 6 * 6));
  while (b.problems.size() * panels * ((T + rows - 1) / rows) < min_tasks && rows > 8) rows = (rows + 1) / 2;
  const size_t blocks = (T + rows - 1) / rows;
  const size_t tasks = b.problems.size() * panels * blocks;
  const std::vector<uint8_t>& masks = mode == kDotLanesICT ? plan.ct_masks : plan.dot_masks;

  // Lane-side panels of activations (kLutLanesI, kDotLanesI): packed by the task that uses
  // them, or once up front and shared when a panel's output rows are split over tasks.
  // kDotLanesICT panels hold the correction-table indices (kernels.h) after the activations.
  const bool packs_lanes = mode == kLutLanesI || lanes_i_dot;
  const size_t act_bytes = k4 * panel * 4;
  const size_t panel_bytes = mode == kDotLanesICT ? 2 * act_bytes : lanes_i_dot ? act_bytes : K * panel;
  auto pack = [&](const GemmProblem& p, size_t pi, size_t l0, size_t nl, size_t lanes, uint8_t* dst, Scratch& s) {
    if (conv) {
      PackC4Panel(*p.a.geo, layout, images.data() + pi * layout.bytes(), int64_t(l0), int64_t(nl), lanes,
                  reinterpret_cast<int8_t*>(dst));
    } else if (lanes_i_dot) {
      PackActK4(p.a, int64_t(l0), int64_t(nl), b.K, lanes, reinterpret_cast<int8_t*>(dst), s.index.Resize(K * lanes));
    } else {
      PackIndexKMajor(p.a, int64_t(l0), int64_t(nl), b.K, lanes, dst);
    }
    if (mode == kDotLanesICT) {  // per dword: byte j = 16 * j + ((x_j >> shift) & 15)
      const uint32_t shift = plan.ct_shift;
      const uint32_t* x = reinterpret_cast<const uint32_t*>(dst);
      uint32_t* idx = reinterpret_cast<uint32_t*>(dst + act_bytes);
      for (size_t i = 0; i < k4 * lanes; ++i) idx[i] = ((x[i] >> shift) & 0x0F0F0F0Fu) | 0x30201000u;
    }
  };
  const bool shared = blocks > 1 && packs_lanes;
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
    if (packs_lanes) {
      if (shared) {
        packed = panels_buf.data() + (pi * panels + pan) * panel_bytes;
      } else {
        uint8_t* dst = reinterpret_cast<uint8_t*>(s.act.Resize(panel_bytes));
        pack(p, pi, l0, nl, lanes, dst, s);
        packed = dst;
      }
    }
    // y of tile element (t, l): rows t along T, lanes l along L.
    int32_t* y = lanes_j ? p.y + int64_t(t0) * p.ldy_i + int64_t(l0) * p.ldy_j
                         : p.y + int64_t(l0) * p.ldy_i + int64_t(t0) * p.ldy_j;
    const int64_t ld_t = lanes_j ? p.ldy_i : p.ldy_j, ld_l = lanes_j ? p.ldy_j : p.ldy_i;
    if (lanes_i_dot) {
      const size_t ldt = 4 * k4;
      kernels::DotGemmArgs args{masks.data(), masks.size(), reinterpret_cast<const int8_t*>(packed), lanes, lanes, k4,
                                pw.dot.data() + p.weight * pw.stride + t0 * ldt, J * ldt, ldt,
                                pw.wsum.data() + p.weight * pw.wsum_stride + t0, J, nt, tile};
      if (mode == kDotLanesICT) {
        args.ct = pw.ct.data() + p.weight * pw.ct_stride + t0 * ldt * 16;
        args.ct_ld_t = ldt * 16;
        args.ct_idx = packed + act_bytes;
        args.ct_group = plan.ct_group;
      }
      variant->dot(args);
    } else if (mode == kDotLanesJ) {
      // Activation rows t0 .. t0 + nt folded per term: the broadcast operand.
      const size_t ldt = 4 * k4;
      const size_t terms = plan.dot_masks_swapped.size();
      int8_t* folded = s.act.Resize(terms * nt * ldt);
      int32_t* sums = s.sums.Resize(terms * nt);
      PackFoldedRows(p.a, int64_t(t0), nt, K, ldt, plan.decomposition.terms, plan.dot_masks, folded,
                     nt * ldt, sums, nt);
      kernels::DotGemmArgs args{plan.dot_masks_swapped.data(), plan.dot_masks_swapped.size(),
                                pw.dot.data() + p.weight * pw.stride + pan * pw.panel_stride,
                                panel, lanes, k4, folded, nt * ldt, ldt, sums, nt, nt, tile};
      variant->dot(args);
    } else if (mode == kLutLanesI) {
      kernels::LutGemmArgs args{plan.by_weight.data(), plan.fits_int16 ? plan.planes_by_weight.data() : nullptr,
                                packed, lanes, lanes, K, pw.index.data() + p.weight * pw.stride + t0 * K, K, nt, tile};
      variant->lut(args);
    } else {
      uint8_t* sel = s.index.Resize(nt * K + 64);
      PackIndexRows(p.a, int64_t(t0), int64_t(nt), b.K, K, sel);
      kernels::LutGemmArgs args{plan.by_act(), plan.fits_int16 ? plan.planes_by_act.data() : nullptr,
                                pw.index.data() + p.weight * pw.stride + pan * pw.panel_stride, panel, lanes, K, sel,
                                K, nt, tile};
      variant->lut(args);
    }
    Scatter(tile, lanes, nt, nl, y, ld_t, ld_l);
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
