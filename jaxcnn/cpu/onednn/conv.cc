// oneDNN's convolutions as XLA FFI handlers: forward, input gradient and kernel gradient of a 2-D
// convolution of NHWC activations with an HWIO kernel (no groups, no input dilation), float32 or
// bfloat16 (accumulated in float32), the same primitives PyTorch runs on CPU. Built on first use
// by jaxcnn/cpu/onednn/build.py; called by jaxcnn/cpu/onednn/ffi.py.
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using tag = dnnl::memory::format_tag;

namespace {

enum Kind : int64_t { kForward = 0, kBackwardData = 1, kBackwardWeights = 2 };

struct Geometry {
  memory::data_type type;
  memory::dims src, weights, dst, strides, dilates, pad_l, pad_r;
};

// A primitive made once per kind and geometry (oneDNN compiles its kernels when it is made). The
// activations stay NHWC; the kernel is reordered when oneDNN wants another layout for it.
struct Plan {
  memory::desc src, weights, dst;           // the plain layouts of XLA's buffers
  memory::desc prim_weights;                // the layout the primitive wants for the kernel
  dnnl::primitive prim;
  size_t scratchpad_bytes;
};

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::convolution_forward::primitive_desc ForwardDesc(const Geometry& g, const Plan& p,
                                                      const dnnl::primitive_attr& attr) {
  return dnnl::convolution_forward::primitive_desc(
      Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, p.src,
      memory::desc(g.weights, g.type, tag::any), p.dst, g.strides, g.dilates,
      g.pad_l, g.pad_r, attr);
}

// The plan's primitive from its descriptor, and the kernel layout that primitive uses.
template <typename Primitive>
void Finish(Plan& plan, const typename Primitive::primitive_desc& pd,
            const memory::desc& prim_weights) {
  plan.prim_weights = prim_weights;
  plan.scratchpad_bytes = pd.scratchpad_desc().get_size();
  plan.prim = Primitive(pd);
}

std::unique_ptr<Plan> MakePlan(Kind kind, const Geometry& g) {
  auto plan = std::make_unique<Plan>();
  plan->src = memory::desc(g.src, g.type, tag::nhwc);
  plan->weights = memory::desc(g.weights, g.type, tag::hwio);
  plan->dst = memory::desc(g.dst, g.type, tag::nhwc);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  auto fwd = ForwardDesc(g, *plan, attr);
  auto any_w = memory::desc(g.weights, g.type, tag::any);
  if (kind == kForward) {
    Finish<dnnl::convolution_forward>(*plan, fwd, fwd.weights_desc());
  } else if (kind == kBackwardData) {
    dnnl::convolution_backward_data::primitive_desc pd(
        Engine(), dnnl::algorithm::convolution_direct, plan->src, any_w, plan->dst, g.strides,
        g.dilates, g.pad_l, g.pad_r, fwd, attr);
    Finish<dnnl::convolution_backward_data>(*plan, pd, pd.weights_desc());
  } else {
    dnnl::convolution_backward_weights::primitive_desc pd(
        Engine(), dnnl::algorithm::convolution_direct, plan->src, any_w, plan->dst, g.strides,
        g.dilates, g.pad_l, g.pad_r, fwd, attr);
    Finish<dnnl::convolution_backward_weights>(*plan, pd, pd.diff_weights_desc());
  }
  return plan;
}

const Plan& GetPlan(Kind kind, const Geometry& g) {
  static std::mutex mu;
  static std::map<std::vector<int64_t>, std::unique_ptr<Plan>> plans;
  std::vector<int64_t> key{kind, static_cast<int64_t>(g.type)};
  for (const auto* v : {&g.src, &g.weights, &g.dst, &g.strides, &g.dilates, &g.pad_l, &g.pad_r})
    key.insert(key.end(), v->begin(), v->end());
  std::lock_guard<std::mutex> lock(mu);
  auto& plan = plans[key];
  if (!plan) plan = MakePlan(kind, g);
  return *plan;
}

memory::dims Dims2(ffi::Span<const int64_t> v) { return {v[0], v[1]}; }

// NHWC / HWIO shapes -> oneDNN's logical NCHW / OIHW dims.
memory::dims Nchw(ffi::AnyBuffer::Dimensions d) { return {d[0], d[3], d[1], d[2]}; }
memory::dims Oihw(ffi::AnyBuffer::Dimensions d) { return {d[3], d[2], d[0], d[1]}; }

ffi::Error Run(Kind kind, void* src, void* weights, void* dst, const Geometry& g) {
  try {
    const Plan& plan = GetPlan(kind, g);
    dnnl::engine& eng = Engine();
    dnnl::stream stream(eng);
    // Per call (not per plan), so that two threads can run one primitive; left uninitialised.
    std::unique_ptr<uint8_t[]> scratch(new uint8_t[plan.scratchpad_bytes + 1]);
    memory scratchpad(memory::desc({static_cast<int64_t>(plan.scratchpad_bytes)},
                                   memory::data_type::u8, tag::x),
                      eng, scratch.get());
    memory src_m(plan.src, eng, src), dst_m(plan.dst, eng, dst), user_w(plan.weights, eng, weights);
    bool reorder = plan.prim_weights != plan.weights;
    memory prim_w = reorder ? memory(plan.prim_weights, eng) : user_w;
    if (kind == kForward) {
      if (reorder) dnnl::reorder(user_w, prim_w).execute(stream, user_w, prim_w);
      plan.prim.execute(stream, {{DNNL_ARG_SRC, src_m}, {DNNL_ARG_WEIGHTS, prim_w},
                                 {DNNL_ARG_DST, dst_m}, {DNNL_ARG_SCRATCHPAD, scratchpad}});
    } else if (kind == kBackwardData) {
      if (reorder) dnnl::reorder(user_w, prim_w).execute(stream, user_w, prim_w);
      plan.prim.execute(stream, {{DNNL_ARG_DIFF_SRC, src_m}, {DNNL_ARG_WEIGHTS, prim_w},
                                 {DNNL_ARG_DIFF_DST, dst_m}, {DNNL_ARG_SCRATCHPAD, scratchpad}});
    } else {
      plan.prim.execute(stream, {{DNNL_ARG_SRC, src_m}, {DNNL_ARG_DIFF_WEIGHTS, prim_w},
                                 {DNNL_ARG_DIFF_DST, dst_m}, {DNNL_ARG_SCRATCHPAD, scratchpad}});
      if (reorder) dnnl::reorder(prim_w, user_w).execute(stream, prim_w, user_w);
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("oneDNN: ") + e.what());
  } catch (const std::exception& e) {  // std::bad_alloc and the like: none may cross into XLA
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("jaxcnn oneDNN call: ") + e.what());
  } catch (...) {
    return ffi::Error(ffi::ErrorCode::kInternal, "jaxcnn oneDNN call: unknown C++ exception");
  }
  return ffi::Error::Success();
}

// Runs `kind` on activations x and y and kernel w (NHWC / HWIO), which must share one element
// type, F32 or BF16.
ffi::Error Call(Kind kind, const ffi::AnyBuffer& x, const ffi::AnyBuffer& w,
                const ffi::AnyBuffer& y, ffi::Span<const int64_t> strides,
                ffi::Span<const int64_t> dilation, ffi::Span<const int64_t> padding) {
  if (x.dimensions().size() != 4 || w.dimensions().size() != 4 || y.dimensions().size() != 4 ||
      strides.size() != 2 || dilation.size() != 2 || padding.size() != 4)
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      "jaxcnn oneDNN convolutions take 4-D buffers, 2 strides, 2 dilations and 4 "
                      "paddings");
  ffi::DataType t = x.element_type();
  if ((t != ffi::DataType::F32 && t != ffi::DataType::BF16) || w.element_type() != t ||
      y.element_type() != t)
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      "jaxcnn oneDNN convolutions take float32 or bfloat16 buffers of one type");
  auto type = t == ffi::DataType::BF16 ? memory::data_type::bf16 : memory::data_type::f32;
  // padding: (top, bottom, left, right); dilation as XLA's (1 = none), oneDNN counts from 0.
  try {  // Run catches its own; these, what making the geometry may throw (std::bad_alloc)
    Geometry g{type, Nchw(x.dimensions()), Oihw(w.dimensions()), Nchw(y.dimensions()),
               Dims2(strides), {dilation[0] - 1, dilation[1] - 1}, {padding[0], padding[2]},
               {padding[1], padding[3]}};
    return Run(kind, x.untyped_data(), w.untyped_data(), y.untyped_data(), g);
  } catch (const std::exception& e) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("jaxcnn oneDNN call: ") + e.what());
  } catch (...) {
    return ffi::Error(ffi::ErrorCode::kInternal, "jaxcnn oneDNN call: unknown C++ exception");
  }
}

ffi::Error Forward(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> y,
                   ffi::Span<const int64_t> strides, ffi::Span<const int64_t> dilation,
                   ffi::Span<const int64_t> padding) {
  return Call(kForward, x, w, *y, strides, dilation, padding);
}

ffi::Error BackwardData(ffi::AnyBuffer dy, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> dx,
                        ffi::Span<const int64_t> strides, ffi::Span<const int64_t> dilation,
                        ffi::Span<const int64_t> padding) {
  return Call(kBackwardData, *dx, w, dy, strides, dilation, padding);
}

ffi::Error BackwardWeights(ffi::AnyBuffer x, ffi::AnyBuffer dy, ffi::Result<ffi::AnyBuffer> dw,
                           ffi::Span<const int64_t> strides, ffi::Span<const int64_t> dilation,
                           ffi::Span<const int64_t> padding) {
  return Call(kBackwardWeights, x, *dw, dy, strides, dilation, padding);
}

}  // namespace

#define CONV_BINDING                                 \
  ffi::Ffi::Bind()                                   \
      .Arg<ffi::AnyBuffer>()                         \
      .Arg<ffi::AnyBuffer>()                         \
      .Ret<ffi::AnyBuffer>()                         \
      .Attr<ffi::Span<const int64_t>>("strides")     \
      .Attr<ffi::Span<const int64_t>>("dilation")    \
      .Attr<ffi::Span<const int64_t>>("padding")

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnConvForward, Forward, CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnConvBackwardData, BackwardData, CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnConvBackwardWeights, BackwardWeights, CONV_BINDING);

// Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX, as oneDNN sees it): elsewhere
// oneDNN's bfloat16 convolutions are emulated or missing, and XLA's are used.
// Called through ctypes: no exception may leave it (0 where oneDNN cannot say).
extern "C" int JaxcnnNativeBfloat16() {
  using isa = dnnl::cpu_isa;
  dnnl::cpu_isa effective;
  try {
    effective = dnnl::get_effective_cpu_isa();
  } catch (...) {
    return 0;
  }
  switch (effective) {
    case isa::avx512_core_bf16:
    case isa::avx512_core_fp16:
    case isa::avx512_core_amx:
    case isa::avx512_core_amx_fp16:
      return 1;
    default:
      return 0;
  }
}
