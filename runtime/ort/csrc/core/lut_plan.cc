#include "core/lut_plan.h"

#include <algorithm>
#include <cstring>
#include <deque>
#include <mutex>
#include <utility>

namespace axmoe {
namespace {

uint64_t Hash(const int32_t* lut) {
  uint64_t h = 0x9E3779B97F4A7C15ull;
  const uint32_t* p = reinterpret_cast<const uint32_t*>(lut);
  for (size_t i = 0; i < 65536; ++i) h = (h ^ p[i]) * 0x100000001B3ull + (h >> 29);
  return h;
}

void BuildPlanes(const int32_t* tables, AlignedBuffer<uint8_t>& planes) {
  uint8_t* p = planes.Resize(256 * 512);
  for (size_t s = 0; s < 256; ++s) {
    for (size_t i = 0; i < 256; ++i) {
      const uint16_t v = static_cast<uint16_t>(tables[s * 256 + i]);
      p[s * 512 + i] = static_cast<uint8_t>(v & 0xFF);
      p[s * 512 + 256 + i] = static_cast<uint8_t>(v >> 8);
    }
  }
}

// Per-term int8 operand tables c_t * int8(x & mask_t) for x = -128..127, or false when one
// does not fit int8.
bool FoldedOperands(const std::vector<MaskTerm>& terms, bool weight_side, std::vector<std::array<int8_t, 256>>* out) {
  out->clear();
  for (const MaskTerm& t : terms) {
    std::array<int8_t, 256> beta{};
    const uint8_t mask = weight_side ? t.mask_b : t.mask_a;
    for (int x = -128; x < 128; ++x) {
      const int64_t v = t.coef * static_cast<int8_t>(static_cast<uint8_t>(x) & mask);
      if (v < -128 || v > 127) return false;
      beta[x + 128] = static_cast<int8_t>(v);
    }
    out->push_back(beta);
  }
  return true;
}

void PlanDotPath(LutPlan& plan) {
  const BitDecomposition& d = plan.decomposition;
  if (!d.exact) {
    plan.dot_reason = "no exact decomposition: " + d.reason;
    return;
  }
  if (d.terms.size() > kMaxDotTerms) {
    plan.dot_reason = std::to_string(d.terms.size()) + " terms (more than " + std::to_string(kMaxDotTerms) +
                      "): the general LUT path is cheaper";
    return;
  }
  if (!FoldedOperands(d.terms, true, &plan.dot_beta)) {
    plan.dot_reason = "a term's coefficient times the masked weight does not fit an int8 weight";
    plan.dot_beta.clear();
    return;
  }
  for (const MaskTerm& t : d.terms) {
    plan.dot_masks.push_back(t.mask_a);
    plan.dot_masks_swapped.push_back(t.mask_b);
  }
  std::vector<std::array<int8_t, 256>> folded_activations;
  plan.dot_swapped_ok = FoldedOperands(d.terms, false, &folded_activations);
  plan.dot_ok = true;
}

void PlanCorrectionTable(LutPlan& plan) {
  if (!plan.dot_ok) return;
  const std::vector<MaskTerm>& terms = plan.decomposition.terms;
  size_t best_count = 0;
  for (uint8_t shift = 0; shift <= 4; ++shift) {
    const unsigned window = 0x0Fu << shift;
    size_t count = 0;
    for (const MaskTerm& t : terms) count += (t.mask_a & ~window) == 0;
    if (count > best_count) best_count = count, plan.ct_shift = shift;
  }
  // The table pass costs about two dot-product terms (vpermb runs at half the rate of
  // vpdpbusd on Zen 4), so it pays from three terms on.
  if (best_count < 3) return;
  const unsigned window = 0x0Fu << plan.ct_shift;
  std::vector<std::array<int8_t, 16>> table(256);
  int64_t largest = 0;
  for (int b = -128; b < 128; ++b) {
    for (int x = 0; x < 16; ++x) {
      int64_t g = 0;
      for (const MaskTerm& t : terms)
        if ((t.mask_a & ~window) == 0) g += EvaluateTerm(t, int8_t(uint8_t(x << plan.ct_shift)), b);
      if (g < -128 || g > 127) return;
      table[b + 128][x] = static_cast<int8_t>(g);
      largest = std::max<int64_t>(largest, g < 0 ? -g : g);
    }
  }
  // Sums of up to ct_group entries stay within int8 (kernels add them before widening).
  plan.ct_group = largest ? std::min<int64_t>(64, 127 / largest) : 64;
  for (size_t i = 0; i < terms.size(); ++i) {
    if ((terms[i].mask_a & ~window) == 0) continue;
    plan.ct_masks.push_back(plan.dot_masks[i]);
    plan.ct_beta.push_back(plan.dot_beta[i]);
  }
  plan.ct_table = std::move(table);
  plan.ct_ok = true;
}

std::shared_ptr<LutPlan> Analyse(const int32_t* lut) {
  auto plan = std::make_shared<LutPlan>();
  plan->lut.assign(lut, lut + 65536);
  int32_t* bw = plan->by_weight.Resize(65536);
  plan->fits_int16 = true;
  for (size_t a = 0; a < 256; ++a) {
    for (size_t b = 0; b < 256; ++b) {
      const int32_t v = lut[a * 256 + b];
      bw[b * 256 + a] = v;
      plan->fits_int16 &= v >= -32768 && v <= 32767;
    }
  }
  if (plan->fits_int16) {
    BuildPlanes(bw, plan->planes_by_weight);
    BuildPlanes(lut, plan->planes_by_act);
  }
  plan->decomposition = DecomposeLut(lut);
  PlanDotPath(*plan);
  PlanCorrectionTable(*plan);
  return plan;
}

struct Cache {
  std::mutex mutex;
  std::deque<std::pair<uint64_t, std::shared_ptr<const LutPlan>>> entries;  // most recent last
};
constexpr size_t kCacheSize = 64;

}  // namespace

std::string LutPlan::Describe() const {
  std::string s = dot_ok ? "decomposed: " + decomposition.Formula() : "lut: " + dot_reason;
  if (ct_ok)
    s += "; correction table on activation bits " + std::to_string(ct_shift) + "-" + std::to_string(ct_shift + 3) +
         " for " + std::to_string(decomposition.terms.size() - ct_masks.size()) + " terms";
  if (!fits_int16) s += "; entries exceed int16 (scalar LUT kernel)";
  return s;
}

std::shared_ptr<const LutPlan> GetLutPlan(const int32_t* lut) {
  static Cache cache;
  const uint64_t h = Hash(lut);
  {
    std::lock_guard<std::mutex> lock(cache.mutex);
    for (auto& [key, plan] : cache.entries)
      if (key == h && std::memcmp(plan->lut.data(), lut, 65536 * sizeof(int32_t)) == 0) return plan;
  }
  std::shared_ptr<const LutPlan> plan = Analyse(lut);  // outside the lock: ~1 ms
  std::lock_guard<std::mutex> lock(cache.mutex);
  cache.entries.emplace_back(h, plan);
  if (cache.entries.size() > kCacheSize) cache.entries.pop_front();
  return plan;
}

}  // namespace axmoe
