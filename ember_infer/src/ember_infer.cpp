// The C interface of ember_infer.h on libtorch's TorchScript loader.
#include "ember_infer.h"

#include <torch/script.h>

#include <cstring>
#include <string>
#include <vector>

struct ember_model {
  torch::jit::script::Module module;
};

static thread_local std::string last_error;

// libtorch's messages carry a C++ backtrace, and the interpreter's a TorchScript traceback that
// ends with the Python-style error line: keep that line, or else the first one.
static std::string one_line(const std::string &message) {
  std::string best;
  size_t start = 0;
  while (start < message.size()) {
    size_t end = message.find('\n', start);
    if (end == std::string::npos) end = message.size();
    std::string line = message.substr(start, end - start);
    if (line.rfind("RuntimeError: ", 0) == 0) best = line.substr(14);
    start = end + 1;
  }
  if (!best.empty()) return best;
  return message.substr(0, message.find('\n'));
}

extern "C" ember_model *ember_load(const char *path) {
  try {
    auto *m = new ember_model{torch::jit::load(path)};
    m->module.eval();
    return m;
  } catch (const c10::Error &e) {
    last_error = std::string("cannot load ") + path + ": " + one_line(e.what_without_backtrace());
    return nullptr;
  } catch (const std::exception &e) {
    last_error = std::string("cannot load ") + path + ": " + one_line(e.what());
    return nullptr;
  }
}

extern "C" int ember_forward(ember_model *model, const float *input, const int64_t *shape, int ndim,
                             float *output, int64_t capacity, int64_t *out_shape, int *out_ndim) {
  try {
    torch::NoGradGuard no_grad;
    std::vector<int64_t> sizes(shape, shape + ndim);
    // from_blob does not copy: the caller's buffer is the input tensor.
    auto x = torch::from_blob(const_cast<float *>(input), sizes, torch::kFloat32);
    auto y = model->module.forward({x}).toTensor().to(torch::kFloat32).contiguous();
    if (y.dim() > 8) {
      last_error = "output has more than 8 dimensions";
      return 1;
    }
    if (y.numel() > capacity) {
      last_error = "output has " + std::to_string(y.numel()) + " values, more than the buffer's " + std::to_string(capacity);
      return 1;
    }
    std::memcpy(output, y.data_ptr<float>(), y.numel() * sizeof(float));
    *out_ndim = static_cast<int>(y.dim());
    for (int i = 0; i < y.dim(); ++i) out_shape[i] = y.size(i);
    return 0;
  } catch (const c10::Error &e) {
    last_error = one_line(e.what_without_backtrace());
    return 1;
  } catch (const std::exception &e) {
    last_error = one_line(e.what());
    return 1;
  }
}

extern "C" void ember_free(ember_model *model) { delete model; }

extern "C" const char *ember_last_error(void) { return last_error.c_str(); }
