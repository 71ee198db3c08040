// C++ tester of the axmoe kernels: every ISA variant this CPU supports against the scalar
// reference, bit for bit, over tile edge cases; and the whole tiled GEMM driver (packing,
// C4 conv layout, orientation choice, decomposed and LUT paths) against a naive conv.
//
//   axmoe_kernel_tester            run all checks; exit status 1 on any mismatch
//   axmoe_kernel_tester --bench    GMAC/s of each kernel on one tile-sized problem (1 thread)
//
// Built by CMake with -DAXMOE_BUILD_TESTER=ON (tests/runtime/test_kernel_tester.py does it).
#include <chrono>
#include <cstdio>
#include <cstring>
#include <algorithm>
#include <array>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "core/aligned_buffer.h"
#include "core/approx_gemm.h"
#include "core/kernel_select.h"
#include "core/lut_plan.h"

namespace axmoe {
namespace {

int g_failures = 0;
std::mt19937 g_rng(12345);

int Rand(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(g_rng); }

// LUTs: exact, a partial-product multiplier (mul8s_1KVA's form), a masked one, a random
// int16 table (no structure), and one whose entries exceed int16.
std::vector<int32_t> MakeLut(const std::string& kind) {
  std::vector<int32_t> lut(65536);
  for (int a = -128; a < 128; ++a) {
    for (int b = -128; b < 128; ++b) {
      int32_t v = a * b;
      if (kind == "pp") {
        for (int i = 0; i < 4; ++i)
          for (int j = 0; i + j < 4; ++j) v -= ((a >> i) & 1) * ((b >> j) & 1) << (i + j);
      } else if (kind == "mask") {
        v = int8_t(a & 0xFC) * int8_t(b & 0xFC);
      } else if (kind == "random") {
        v = Rand(-32768, 32767);
      } else if (kind == "wide") {
        v = Rand(-2000000000, 2000000000);
      }
      lut[(a + 128) * 256 + (b + 128)] = v;
    }
  }
  return lut;
}

void Fail(const std::string& what) {
  if (++g_failures <= 20) std::printf("FAIL %s\n", what.c_str());
}

// ---------------------------------------------------------------------------- lut_gemm
class LutGemmTester {
 public:
  LutGemmTester& lanes(size_t v) { lanes_ = v; return *this; }
  LutGemmTester& k(size_t v) { k_ = v; return *this; }
  LutGemmTester& nt(size_t v) { nt_ = v; return *this; }
  LutGemmTester& pad(size_t v) { pad_ = v; return *this; }

  void Test(const KernelVariant& variant, const LutPlan& plan) const {
    const size_t ldidx = lanes_ + pad_, ldsel = k_ + pad_;
    std::vector<uint8_t> idx(k_ * ldidx + 64), sel(nt_ * ldsel + 64);
    for (auto& v : idx) v = uint8_t(Rand(0, 255));
    for (auto& v : sel) v = uint8_t(Rand(0, 255));
    std::vector<int32_t> want(nt_ * lanes_, 7), got(nt_ * lanes_, -7);
    kernels::LutGemmArgs args{plan.by_weight.data(), plan.fits_int16 ? plan.planes_by_weight.data() : nullptr,
                              idx.data(), ldidx, lanes_, k_, sel.data(), ldsel, nt_, want.data()};
    ScalarVariant().lut(args);
    args.out = got.data();
    variant.lut(args);
    for (size_t i = 0; i < want.size(); ++i) {
      if (want[i] != got[i]) {
        Fail(std::string(variant.lut_name) + " lanes=" + std::to_string(lanes_) + " k=" + std::to_string(k_) +
             " nt=" + std::to_string(nt_) + " pad=" + std::to_string(pad_) + ": out[" + std::to_string(i / lanes_) +
             "][" + std::to_string(i % lanes_) + "] = " + std::to_string(got[i]) + ", scalar " + std::to_string(want[i]));
        return;
      }
    }
  }

 private:
  size_t lanes_ = 64, k_ = 1, nt_ = 1, pad_ = 0;
};

// ---------------------------------------------------------------------------- dot_gemm
class DotGemmTester {
 public:
  DotGemmTester& lanes(size_t v) { lanes_ = v; return *this; }
  DotGemmTester& k4(size_t v) { k4_ = v; return *this; }
  DotGemmTester& nt(size_t v) { nt_ = v; return *this; }
  DotGemmTester& terms(size_t v) { terms_ = v; return *this; }
  DotGemmTester& pad(size_t v) { pad_ = v; return *this; }
  DotGemmTester& table(int kind) { ct_shift_ = kind; return *this; }  // -1: none; 0: group 1; 1: group 8

  void Test(const KernelVariant& variant) const {
    if (ct_shift_ >= 0 && !variant.dot_takes_ct) return;
    const size_t ld_t = 4 * k4_ + 4 * pad_, ld_term = nt_ * ld_t + pad_, ld_wsum = nt_ + pad_;
    std::vector<uint8_t> masks(terms_);
    for (auto& m : masks) m = uint8_t(Rand(0, 255));
    if (terms_) masks[0] = 0xFF;
    std::vector<int8_t> act(k4_ * (lanes_ + 16 * pad_) * 4 + 64), wts(terms_ * ld_term + 64);
    for (auto& v : act) v = int8_t(Rand(-128, 127));
    for (auto& v : wts) v = int8_t(Rand(-128, 127));
    std::vector<int32_t> wsum(terms_ * ld_wsum + 1);
    for (size_t term = 0; term < terms_; ++term)
      for (size_t t = 0; t < nt_; ++t) {
        int32_t s = 0;
        for (size_t k = 0; k < 4 * k4_; ++k) s += wts[term * ld_term + t * ld_t + k];
        wsum[term * ld_wsum + t] = s;
      }
    std::vector<int32_t> want(nt_ * lanes_, 7), got(nt_ * lanes_, -7);
    kernels::DotGemmArgs args{masks.data(), terms_, act.data(), lanes_ + 16 * pad_, lanes_, k4_, wts.data(), ld_term, ld_t,
                              wsum.data(), ld_wsum, nt_, want.data()};
    // Correction table: ct_group 1 with any int8 entries, or entries in [-15, 15] summed 8 at a time.
    std::vector<int8_t> ct(nt_ * (k4_ * 64 + 64) + 64);
    std::vector<uint8_t> ct_idx(k4_ * (lanes_ + 16 * pad_) * 4 + 64);
    if (ct_shift_ >= 0) {
      const int bound = ct_shift_ ? 15 : 128;
      for (auto& v : ct) v = int8_t(Rand(-std::min(bound, 127), bound == 128 ? 127 : bound));
      for (size_t i = 0; i < ct_idx.size(); ++i) ct_idx[i] = uint8_t(16 * (i % 4) + Rand(0, 15));
      args.ct = ct.data();
      args.ct_ld_t = k4_ * 64 + 64;
      args.ct_idx = ct_idx.data();
      args.ct_group = ct_shift_ ? 8 : 1;
    }
    ScalarVariant().dot(args);
    args.out = got.data();
    variant.dot(args);
    for (size_t i = 0; i < want.size(); ++i) {
      if (want[i] != got[i]) {
        Fail(std::string(variant.dot_name) + " lanes=" + std::to_string(lanes_) + " k4=" + std::to_string(k4_) +
             " nt=" + std::to_string(nt_) + " terms=" + std::to_string(terms_) + " ct=" + std::to_string(ct_shift_) + ": out[" + std::to_string(i / lanes_) +
             "][" + std::to_string(i % lanes_) + "] = " + std::to_string(got[i]) + ", scalar " + std::to_string(want[i]));
        return;
      }
    }
  }

 private:
  size_t lanes_ = 16, k4_ = 1, nt_ = 1, terms_ = 1, pad_ = 0;
  int ct_shift_ = -1;
};

// ------------------------------------------------------------------ whole driver (conv)
class ConvTester {
 public:
  ConvTester& shape(int64_t n, int64_t c, int64_t h, int64_t w) { n_ = n, c_ = c, h_ = h, w_ = w; return *this; }
  ConvTester& filters(int64_t m, int64_t kh, int64_t kw, int64_t group) { m_ = m, kh_ = kh, kw_ = kw, group_ = group; return *this; }
  ConvTester& stride(int64_t sh, int64_t sw) { sh_ = sh, sw_ = sw; return *this; }
  ConvTester& dilation(int64_t dh, int64_t dw) { dh_ = dh, dw_ = dw; return *this; }
  ConvTester& pads(int64_t t, int64_t l, int64_t b, int64_t r) { pt_ = t, pl_ = l, pb_ = b, pr_ = r; return *this; }
  ConvTester& flip(uint8_t f) { flip_ = f; return *this; }

  void Test(const KernelVariant& variant, PathChoice path, const std::shared_ptr<const LutPlan>& plan,
            const std::string& lut_name) const {
    const int64_t cg = c_ / group_, mg = m_ / group_;
    ConvGeometry g{cg, h_, w_, kh_, kw_, 0, 0, sh_, sw_, dh_, dw_, pt_, pl_};
    g.OH = (h_ + pt_ + pb_ - dh_ * (kh_ - 1) - 1) / sh_ + 1;
    g.OW = (w_ + pl_ + pr_ - dw_ * (kw_ - 1) - 1) / sw_ + 1;
    std::vector<uint8_t> x(size_t(n_ * c_ * h_ * w_)), wt(size_t(m_ * cg * kh_ * kw_));
    for (auto& v : x) v = uint8_t(Rand(0, 255));
    for (auto& v : wt) v = uint8_t(Rand(0, 255));
    const int64_t P = g.OH * g.OW, K = cg * kh_ * kw_;
    std::vector<int32_t> want(size_t(n_ * m_ * P)), got(want.size(), 0x5A5A5A5A);
    // Naive reference straight from the definition.
    for (int64_t n = 0; n < n_; ++n)
      for (int64_t oc = 0; oc < m_; ++oc)
        for (int64_t oy = 0; oy < g.OH; ++oy)
          for (int64_t ox = 0; ox < g.OW; ++ox) {
            uint32_t sum = 0;
            const int64_t grp = oc / mg;
            for (int64_t c = 0; c < cg; ++c)
              for (int64_t ky = 0; ky < kh_; ++ky)
                for (int64_t kx = 0; kx < kw_; ++kx) {
                  const int64_t iy = oy * sh_ - pt_ + ky * dh_, ix = ox * sw_ - pl_ + kx * dw_;
                  int a = 0;
                  if (iy >= 0 && iy < h_ && ix >= 0 && ix < w_)
                    a = int8_t(x[size_t(((n * c_ + grp * cg + c) * h_ + iy) * w_ + ix)] ^ flip_);
                  const int b = int8_t(wt[size_t(((oc * cg + c) * kh_ + ky) * kw_ + kx)]);
                  sum += uint32_t(plan->lut[size_t((a + 128) * 256 + b + 128)]);
                }
            want[size_t((n * m_ + oc) * P + oy * g.OW + ox)] = int32_t(sum);
          }
    GemmBatch batch;
    batch.I = P, batch.J = mg, batch.K = K;
    for (int64_t grp = 0; grp < group_; ++grp) {
      OperandView wv;
      wv.data = wt.data() + grp * mg * K;
      wv.stride_r = K, wv.stride_k = 1;
      batch.weights.push_back(wv);
    }
    for (int64_t n = 0; n < n_; ++n)
      for (int64_t grp = 0; grp < group_; ++grp) {
        GemmProblem p;
        p.a.data = x.data() + (n * c_ + grp * cg) * h_ * w_;
        p.a.flip = flip_, p.a.im2col = true, p.a.geo = &g;
        p.weight = size_t(grp);
        p.y = got.data() + (n * m_ + grp * mg) * P;
        p.ldy_i = 1, p.ldy_j = P;
        batch.problems.push_back(p);
      }
    GemmOptions options;
    options.variant = &variant;
    options.path = path;
    options.min_tasks = size_t(Rand(1, 9));
    const std::string error = RunApproxGemm(batch, plan, options, SerialFor);
    const std::string name = std::string(variant.isa) + (path == PathChoice::kLut ? "/lut" : "/auto") + " lut=" +
                             lut_name + " x=[" + std::to_string(n_) + "," + std::to_string(c_) + "," +
                             std::to_string(h_) + "," + std::to_string(w_) + "] m=" + std::to_string(m_) + " k=" +
                             std::to_string(kh_) + "x" + std::to_string(kw_) + " g=" + std::to_string(group_) +
                             " s=" + std::to_string(sh_) + "," + std::to_string(sw_) + " d=" + std::to_string(dh_) +
                             "," + std::to_string(dw_);
    if (!error.empty()) return Fail(name + ": " + error);
    for (size_t i = 0; i < want.size(); ++i)
      if (want[i] != got[i])
        return Fail(name + ": y[" + std::to_string(i) + "] = " + std::to_string(got[i]) + ", want " + std::to_string(want[i]));
  }

 private:
  int64_t n_ = 1, c_ = 1, h_ = 1, w_ = 1, m_ = 1, kh_ = 1, kw_ = 1, group_ = 1;
  int64_t sh_ = 1, sw_ = 1, dh_ = 1, dw_ = 1, pt_ = 0, pl_ = 0, pb_ = 0, pr_ = 0;
  uint8_t flip_ = 0x80;
};

void RunChecks() {
  const char* luts[] = {"exact", "pp", "mask", "random", "wide"};
  std::vector<std::shared_ptr<const LutPlan>> plans;
  for (const char* kind : luts) plans.push_back(GetLutPlan(MakeLut(kind).data()));
  std::printf("variants:");
  for (const KernelVariant* v : SupportedVariants()) std::printf(" %s (%s, %s)", v->isa, v->lut_name, v->dot_name);
  std::printf("\n");
  for (size_t i = 0; i < plans.size(); ++i) std::printf("  lut %-6s -> %s\n", luts[i], plans[i]->Describe().c_str());

  for (const KernelVariant* v : SupportedVariants()) {
    for (size_t lanes : {64, 128, 192, 256, 320, 448, 512})
      for (size_t k : {0, 1, 3, 63, 64, 65, 130})
        for (size_t nt : {1, 2, 5})
          for (size_t pad : {0, 64}) {
            if (!v->lut_needs_planes || plans[3]->fits_int16)
              LutGemmTester().lanes(lanes).k(k).nt(nt).pad(pad).Test(*v, *plans[3]);
            if (!v->lut_needs_planes) LutGemmTester().lanes(lanes).k(k).nt(nt).pad(pad).Test(*v, *plans[4]);
          }
    for (size_t lanes : {16, 32, 48, 64, 80, 128, 144})
      for (size_t k4 : {0, 1, 2, 5, 37})
        for (size_t nt : {1, 2, 5, 6, 7, 13})
          for (size_t terms : {0, 1, 2, 5})
            for (int table : {-1, 0, 1})
              DotGemmTester().lanes(lanes).k4(k4).nt(nt).terms(terms).pad(k4 % 2).table(table).Test(*v);
  }

  for (const KernelVariant* v : SupportedVariants()) {
    for (size_t li = 0; li < plans.size(); ++li) {
      for (PathChoice path : {PathChoice::kAuto, PathChoice::kLut}) {
        auto run = [&](ConvTester t) { t.Test(*v, path, plans[li], luts[li]); };
        run(ConvTester().shape(2, 6, 9, 7).filters(8, 3, 3, 2).stride(2, 1).dilation(1, 2).pads(1, 0, 2, 1));
        run(ConvTester().shape(1, 16, 8, 8).filters(16, 3, 3, 1).pads(1, 1, 1, 1));
        run(ConvTester().shape(1, 8, 5, 11).filters(8, 3, 3, 8).pads(1, 1, 1, 1).flip(0));      // depthwise, int8 x
        run(ConvTester().shape(3, 5, 1, 19).filters(7, 1, 4, 1).stride(1, 3).pads(0, 2, 0, 1));  // 1-D
        run(ConvTester().shape(1, 3, 17, 17).filters(70, 5, 5, 1).stride(2, 2).pads(2, 2, 2, 2));
        run(ConvTester().shape(1, 4, 20, 20).filters(4, 1, 1, 1));
        run(ConvTester().shape(1, 64, 3, 3).filters(130, 3, 3, 1).pads(1, 1, 1, 1));
      }
    }
  }
}

// --------------------------------------------------------------------------- benchmark
double Seconds(const std::function<void()>& fn) {
  fn();
  double best = 1e9;
  for (int r = 0; r < 15; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

void RunBench() {
  auto plan = GetLutPlan(MakeLut("random").data());
  const size_t lanes = 256, k = 576, nt = 64;
  AlignedBuffer<uint8_t> idx(k * lanes), sel(nt * k);
  for (size_t i = 0; i < k * lanes; ++i) idx.data()[i] = uint8_t(Rand(0, 255));
  for (size_t i = 0; i < nt * k; ++i) sel.data()[i] = uint8_t(Rand(0, 255));
  AlignedBuffer<int32_t> out(nt * lanes);
  for (const KernelVariant* v : SupportedVariants()) {
    if (v->lut_needs_planes && !plan->fits_int16) continue;
    kernels::LutGemmArgs args{plan->by_weight.data(), plan->planes_by_weight.data(), idx.data(), lanes, lanes, k,
                              sel.data(), k, nt, out.data()};
    const double s = Seconds([&] { v->lut(args); });
    std::printf("%-32s %8.2f GMAC/s  (lanes %zu, K %zu, rows %zu)\n", v->lut_name, double(lanes * k * nt) / s / 1e9,
                lanes, k, nt);
  }
  const size_t dl = 256, k4 = 144, terms = 1;
  AlignedBuffer<int8_t> act(k4 * dl * 4), wts(nt * k4 * 4);
  AlignedBuffer<int32_t> wsum(nt), dout(nt * dl);
  for (size_t i = 0; i < k4 * dl * 4; ++i) act.data()[i] = int8_t(Rand(-128, 127));
  for (size_t i = 0; i < nt * k4 * 4; ++i) wts.data()[i] = int8_t(Rand(-128, 127));
  for (size_t i = 0; i < nt; ++i) wsum.data()[i] = 0;
  const uint8_t mask = 0xFF;
  AlignedBuffer<int8_t> ct(nt * k4 * 64);
  for (size_t i = 0; i < nt * k4 * 64; ++i) ct.data()[i] = int8_t(Rand(-128, 127));
  for (const KernelVariant* v : SupportedVariants()) {
    kernels::DotGemmArgs args{&mask, terms, act.data(), dl, dl, k4, wts.data(), nt * k4 * 4, k4 * 4, wsum.data(), nt, nt,
                              dout.data()};
    const double s = Seconds([&] { v->dot(args); });
    std::printf("%-32s %8.2f GMAC/s per term  (lanes %zu, K %zu, rows %zu)\n", v->dot_name,
                double(dl * k4 * 4 * nt) / s / 1e9, dl, k4 * 4, nt);
    if (!v->dot_takes_ct) continue;
    AlignedBuffer<uint8_t> ct_idx(k4 * dl * 4);
    for (size_t i = 0; i < k4 * dl * 4; ++i) ct_idx.data()[i] = uint8_t(16 * (i % 4) + Rand(0, 15));
    args.ct = ct.data(), args.ct_ld_t = k4 * 64, args.ct_idx = ct_idx.data(), args.ct_group = 2;
    const double c = Seconds([&] { v->dot(args); });
    std::printf("%-32s %8.2f GMAC/s with 1 term + correction table\n", v->dot_name, double(dl * k4 * 4 * nt) / c / 1e9);
  }
}

// Whole driver (packing + kernels + scatter), one thread: MatMul [I, K] x [K, J].
void BenchDriver(std::vector<std::array<int64_t, 3>> shapes, std::vector<const char*> kinds) {
  for (const auto& shape : shapes) {
    const int64_t I = shape[0], K = shape[1], J = shape[2];
    AlignedBuffer<uint8_t> a(size_t(I * K)), w(size_t(K * J));
    for (int64_t i = 0; i < I * K; ++i) a.data()[i] = uint8_t(Rand(0, 255));
    for (int64_t i = 0; i < K * J; ++i) w.data()[i] = uint8_t(Rand(0, 255));
    AlignedBuffer<int32_t> y(size_t(I * J));
    GemmBatch batch;
    batch.I = I, batch.J = J, batch.K = K;
    OperandView wv;
    wv.data = w.data(), wv.stride_r = 1, wv.stride_k = J;
    batch.weights.push_back(wv);
    GemmProblem p;
    p.a.data = a.data(), p.a.flip = 0x80, p.a.stride_r = K, p.a.stride_k = 1;
    p.y = y.data(), p.ldy_i = J, p.ldy_j = 1;
    batch.problems.push_back(p);
    for (const char* kind : kinds) {
      auto plan = GetLutPlan(MakeLut(kind).data());
      GemmOptions options;
      options.variant = SupportedVariants().front();
      WeightCache cache;
      const double s = Seconds([&] { RunApproxGemm(batch, plan, options, SerialFor, &cache); });
      std::printf("driver %-6s %-8s I=%-5lld K=%-4lld J=%-5lld %8.2f GMAC/s\n", options.variant->isa, kind,
                  (long long)I, (long long)K, (long long)J, double(I * K * J) / s / 1e9);
    }
  }
}

}  // namespace
}  // namespace axmoe

int main(int argc, char** argv) {
  if (argc > 1 && !std::strcmp(argv[1], "--bench")) {
    axmoe::RunBench();
    axmoe::BenchDriver({{65, 384, 384}, {65, 384, 1536}, {2080, 384, 384}}, {"exact", "pp", "random"});
    return 0;
  }
  if (argc == 6 && !std::strcmp(argv[1], "--bench-driver")) {  // I K J lut-kind
    axmoe::BenchDriver({{std::atoll(argv[2]), std::atoll(argv[3]), std::atoll(argv[4])}}, {argv[5]});
    return 0;
  }
  axmoe::RunChecks();
  std::printf("%s (%d failures)\n", axmoe::g_failures ? "FAILED" : "all variants match the scalar reference",
              axmoe::g_failures);
  return axmoe::g_failures ? 1 : 0;
}
