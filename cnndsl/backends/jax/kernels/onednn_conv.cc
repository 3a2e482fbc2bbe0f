// 2-D convolution forward, input gradient and weight gradient by oneDNN, for XLA:CPU
// through jax.ffi. Activations NHWC, kernels HWIO (cnndsl's and Flax's layouts), float32.
//
// oneDNN chooses its own (blocked) weight layout; the user's HWIO kernel is reordered into it
// and a weight gradient back out of it. Primitives (and those reorders) are built once per
// geometry and cached; each call brings its own scratchpad, so concurrent calls from XLA's
// threads never share memory.
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;
using Dims = ffi::AnyBuffer::Dimensions;

namespace {

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::stream& Stream() {
  thread_local dnnl::stream stream(Engine());
  return stream;
}

struct Geometry {
  int64_t n, ih, iw, ic, oh, ow, oc, kh, kw, groups;
  int64_t sh, sw, pt, pb, pl, pr, dh, dw;  // dh, dw: dilation - 1 (oneDNN's convention)

  std::string Key(char kind) const {
    std::string k(1, kind);
    for (int64_t v : {n, ih, iw, ic, oh, ow, oc, kh, kw, groups, sh, sw, pt, pb, pl, pr, dh, dw}) {
      k += ',' + std::to_string(v);
    }
    return k;
  }
  memory::desc Src() const { return memory::desc({n, ic, ih, iw}, dt::f32, tag::nhwc); }
  memory::desc Dst() const { return memory::desc({n, oc, oh, ow}, dt::f32, tag::nhwc); }
  memory::dims WeightDims() const {
    if (groups == 1) return {oc, ic, kh, kw};
    return {groups, oc / groups, ic / groups, kh, kw};
  }
  memory::desc AnyWeights() const { return memory::desc(WeightDims(), dt::f32, tag::any); }
  // HWIO, (KH, KW, IC/G, OC), with the output channels of group g at [g*OC/G, (g+1)*OC/G).
  memory::desc UserWeights() const {
    const int64_t icg = ic / groups, ocg = oc / groups;
    if (groups == 1) return memory::desc(WeightDims(), dt::f32, memory::dims{1, oc, kw * ic * oc, ic * oc});
    return memory::desc(WeightDims(), dt::f32, memory::dims{ocg, 1, oc, kw * icg * oc, icg * oc});
  }
  memory::dims Strides() const { return {sh, sw}; }
  memory::dims Dilation() const { return {dh, dw}; }
  memory::dims PadL() const { return {pt, pl}; }
  memory::dims PadR() const { return {pb, pr}; }

  dnnl::convolution_forward::primitive_desc ForwardDesc(const dnnl::primitive_attr& attr) const {
    return dnnl::convolution_forward::primitive_desc(Engine(), dnnl::prop_kind::forward_training,
                                                     dnnl::algorithm::convolution_direct, Src(), AnyWeights(), Dst(),
                                                     Strides(), Dilation(), PadL(), PadR(), attr);
  }
};

dnnl::primitive_attr UserScratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

// One cached convolution primitive with the reorder between the user's HWIO kernel and the
// layout the primitive wants (none when they agree).
struct Plan {
  dnnl::primitive conv;
  memory::desc weights;  // the primitive's weight layout
  memory::desc scratch;
  bool reorder = false;
  dnnl::reorder weight_reorder;  // user -> primitive (fwd, bwd data) or primitive -> user (bwd weights)
  memory::desc reorder_scratch;
};

std::mutex cache_mutex;
std::unordered_map<std::string, std::shared_ptr<Plan>> cache;

template <typename Build>
std::shared_ptr<Plan> Cached(const std::string& key, Build build) {
  {
    std::lock_guard<std::mutex> lock(cache_mutex);
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
  }
  auto plan = std::make_shared<Plan>(build());
  std::lock_guard<std::mutex> lock(cache_mutex);
  return cache.emplace(key, plan).first->second;
}

void SetReorder(Plan& plan, const memory::desc& user, bool user_to_primitive) {
  plan.reorder = plan.weights != user;
  if (!plan.reorder) return;
  auto attr = UserScratchpad();
  auto pd = user_to_primitive ? dnnl::reorder::primitive_desc(Engine(), user, Engine(), plan.weights, attr)
                              : dnnl::reorder::primitive_desc(Engine(), plan.weights, Engine(), user, attr);
  plan.weight_reorder = dnnl::reorder(pd);
  plan.reorder_scratch = pd.scratchpad_desc();
}

struct Buffer {  // 64-byte aligned scratch memory for one call
  std::vector<char> bytes;
  void* Get(size_t size) {
    bytes.resize(size + 64);
    return reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(bytes.data()) + 63) & ~uintptr_t{63});
  }
};

Geometry Make(Dims x, Dims y, Dims w, int64_t sh, int64_t sw, int64_t pt,
              int64_t pb, int64_t pl, int64_t pr, int64_t dh, int64_t dw, int64_t groups) {
  return Geometry{x[0], x[1], x[2], x[3], y[1], y[2], y[3], w[0], w[1], groups,
                  sh,   sw,   pt,   pb,   pl,   pr,   dh - 1, dw - 1};
}

bool Valid(Dims x, Dims y, Dims w, int64_t groups) {
  return x.size() == 4 && y.size() == 4 && w.size() == 4 && groups >= 1 && x[3] % groups == 0 &&
         y[3] % groups == 0 && w[2] * groups == x[3] && w[3] == y[3] && x[0] == y[0];
}

ffi::Error Failed(const dnnl::error& e) { return ffi::Error::Internal(std::string("oneDNN: ") + e.what()); }

// Runs `conv` on the given weights, reordering the user's kernel first when needed
// (`weights_in`: the kernel is an input, as in forward and backward data).
void Run(const Plan& plan, std::unordered_map<int, memory> args, int weight_arg, void* user_weights,
         const memory::desc& user_desc, bool weights_in) {
  auto& stream = Stream();
  Buffer w_buf, s_buf, r_buf;
  memory user(user_desc, Engine(), user_weights);
  memory inner = plan.reorder ? memory(plan.weights, Engine(), w_buf.Get(plan.weights.get_size())) : user;
  if (plan.reorder && weights_in) {
    memory rs(plan.reorder_scratch, Engine(), r_buf.Get(plan.reorder_scratch.get_size()));
    plan.weight_reorder.execute(stream, {{DNNL_ARG_FROM, user}, {DNNL_ARG_TO, inner}, {DNNL_ARG_SCRATCHPAD, rs}});
  }
  args[weight_arg] = inner;
  args[DNNL_ARG_SCRATCHPAD] = memory(plan.scratch, Engine(), s_buf.Get(plan.scratch.get_size()));
  plan.conv.execute(stream, args);
  if (plan.reorder && !weights_in) {
    memory rs(plan.reorder_scratch, Engine(), r_buf.Get(plan.reorder_scratch.get_size()));
    plan.weight_reorder.execute(stream, {{DNNL_ARG_FROM, inner}, {DNNL_ARG_TO, user}, {DNNL_ARG_SCRATCHPAD, rs}});
  }
  stream.wait();
}

ffi::Error Forward(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w, ffi::ResultBuffer<ffi::F32> y, int64_t sh,
                   int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t dh, int64_t dw,
                   int64_t groups) {
  if (!Valid(x.dimensions(), y->dimensions(), w.dimensions(), groups))
    return ffi::Error::InvalidArgument("onednn conv forward: inconsistent shapes");
  try {
    const Geometry g = Make(x.dimensions(), y->dimensions(), w.dimensions(), sh, sw, pt, pb, pl, pr, dh, dw, groups);
    auto plan = Cached(g.Key('f'), [&] {
      auto pd = g.ForwardDesc(UserScratchpad());
      Plan p{dnnl::convolution_forward(pd), pd.weights_desc(), pd.scratchpad_desc()};
      SetReorder(p, g.UserWeights(), true);
      return p;
    });
    Run(*plan,
        {{DNNL_ARG_SRC, memory(g.Src(), Engine(), x.typed_data())},
         {DNNL_ARG_DST, memory(g.Dst(), Engine(), y->typed_data())}},
        DNNL_ARG_WEIGHTS, w.typed_data(), g.UserWeights(), true);
  } catch (const dnnl::error& e) {
    return Failed(e);
  }
  return ffi::Error::Success();
}

ffi::Error BackwardData(ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> w, ffi::ResultBuffer<ffi::F32> dx,
                        int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t dh,
                        int64_t dw, int64_t groups) {
  if (!Valid(dx->dimensions(), dy.dimensions(), w.dimensions(), groups))
    return ffi::Error::InvalidArgument("onednn conv backward data: inconsistent shapes");
  try {
    const Geometry g = Make(dx->dimensions(), dy.dimensions(), w.dimensions(), sh, sw, pt, pb, pl, pr, dh, dw, groups);
    auto plan = Cached(g.Key('d'), [&] {
      auto attr = UserScratchpad();
      auto hint = g.ForwardDesc(attr);
      auto pd = dnnl::convolution_backward_data::primitive_desc(
          Engine(), dnnl::algorithm::convolution_direct, g.Src(), g.AnyWeights(), g.Dst(), g.Strides(), g.Dilation(),
          g.PadL(), g.PadR(), hint, attr);
      Plan p{dnnl::convolution_backward_data(pd), pd.weights_desc(), pd.scratchpad_desc()};
      SetReorder(p, g.UserWeights(), true);
      return p;
    });
    Run(*plan,
        {{DNNL_ARG_DIFF_DST, memory(g.Dst(), Engine(), dy.typed_data())},
         {DNNL_ARG_DIFF_SRC, memory(g.Src(), Engine(), dx->typed_data())}},
        DNNL_ARG_WEIGHTS, w.typed_data(), g.UserWeights(), true);
  } catch (const dnnl::error& e) {
    return Failed(e);
  }
  return ffi::Error::Success();
}

ffi::Error BackwardWeights(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy, ffi::ResultBuffer<ffi::F32> dw_out,
                           int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t dh,
                           int64_t dw, int64_t groups) {
  if (!Valid(x.dimensions(), dy.dimensions(), dw_out->dimensions(), groups))
    return ffi::Error::InvalidArgument("onednn conv backward weights: inconsistent shapes");
  try {
    const Geometry g =
        Make(x.dimensions(), dy.dimensions(), dw_out->dimensions(), sh, sw, pt, pb, pl, pr, dh, dw, groups);
    auto plan = Cached(g.Key('w'), [&] {
      auto attr = UserScratchpad();
      auto hint = g.ForwardDesc(attr);
      auto pd = dnnl::convolution_backward_weights::primitive_desc(
          Engine(), dnnl::algorithm::convolution_direct, g.Src(), g.AnyWeights(), g.Dst(), g.Strides(),
          g.Dilation(), g.PadL(), g.PadR(), hint, attr);
      Plan p{dnnl::convolution_backward_weights(pd), pd.diff_weights_desc(), pd.scratchpad_desc()};
      SetReorder(p, g.UserWeights(), false);
      return p;
    });
    Run(*plan,
        {{DNNL_ARG_SRC, memory(g.Src(), Engine(), x.typed_data())},
         {DNNL_ARG_DIFF_DST, memory(g.Dst(), Engine(), dy.typed_data())}},
        DNNL_ARG_DIFF_WEIGHTS, dw_out->typed_data(), g.UserWeights(), false);
  } catch (const dnnl::error& e) {
    return Failed(e);
  }
  return ffi::Error::Success();
}

}  // namespace

// Two buffers in, one out, and the geometry as attributes (written by cnndsl/backends/jax/onednn.py).
#define CNNDSL_CONV_BINDING                                                                         \
  ffi::Ffi::Bind()                                                                                 \
      .Arg<ffi::Buffer<ffi::F32>>()                                                                \
      .Arg<ffi::Buffer<ffi::F32>>()                                                                \
      .Ret<ffi::Buffer<ffi::F32>>()                                                                \
      .Attr<int64_t>("sh")                                                                         \
      .Attr<int64_t>("sw")                                                                         \
      .Attr<int64_t>("pt")                                                                         \
      .Attr<int64_t>("pb")                                                                         \
      .Attr<int64_t>("pl")                                                                         \
      .Attr<int64_t>("pr")                                                                         \
      .Attr<int64_t>("dh")                                                                         \
      .Attr<int64_t>("dw")                                                                         \
      .Attr<int64_t>("groups")

XLA_FFI_DEFINE_HANDLER_SYMBOL(CnndslOnednnConvForward, Forward, CNNDSL_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(CnndslOnednnConvBackwardData, BackwardData, CNNDSL_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(CnndslOnednnConvBackwardWeights, BackwardWeights, CNNDSL_CONV_BINDING);

extern "C" const char* cnndsl_onednn_version() {
  static std::string v = [] {
    const dnnl_version_t* ver = dnnl_version();
    return std::to_string(ver->major) + "." + std::to_string(ver->minor) + "." + std::to_string(ver->patch);
  }();
  return v.c_str();
}
