// The C interface of ember_infer.h on libtorch: TorchScript through torch::jit::load, AOTInductor
// packages through torch::inductor::AOTIModelPackageLoader, chosen by the export's sidecar.
#include "ember_infer.h"

#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/script.h>

#include <nlohmann/json.hpp>

#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace {

// A failure with its status code; thrown inside this file, caught at the C boundary.
struct Failure {
  int status;
  std::string message;
};

constexpr int64_t ANY = -1;  // the sidecar's "batch": any size

struct Spec {
  std::vector<int64_t> input;   // the input shape, ANY where free
  std::vector<int64_t> output;  // the output shape, ANY where it follows the batch
  torch::Dtype dtype = torch::kFloat32;
};

thread_local std::string last_error;

std::string show(const std::vector<int64_t> &shape) {
  std::ostringstream out;
  out << "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) out << ", ";
    if (shape[i] == ANY) out << "batch";
    else out << shape[i];
  }
  out << (shape.size() == 1 ? ",)" : ")");
  return out.str();
}

// libtorch's messages carry a C++ backtrace, and the interpreter's a TorchScript traceback that
// ends with the Python-style error line: keep that line, or else the first one.
std::string one_line(const std::string &message) {
  std::string best;
  std::istringstream lines(message);
  for (std::string line; std::getline(lines, line);)
    if (line.rfind("RuntimeError: ", 0) == 0) best = line.substr(14);
  return best.empty() ? message.substr(0, message.find('\n')) : best;
}

std::vector<int64_t> dims(const nlohmann::json &shape) {
  std::vector<int64_t> out;
  for (const auto &d : shape) out.push_back(d.is_number_integer() ? d.get<int64_t>() : ANY);
  return out;
}

Spec read_spec(const std::string &sidecar, std::string *format) {
  std::ifstream file(sidecar);
  if (!file)
    throw Failure{EMBER_ERR_FILE, "cannot read " + sidecar + ", the export's description: keep the .json that ember export writes beside the model"};
  nlohmann::json meta;
  try {
    meta = nlohmann::json::parse(file);
    Spec spec{dims(meta.at("inputs").at(0).at("shape")), dims(meta.at("outputs").at(0).at("shape"))};
    std::string dtype = meta.at("inputs").at(0).at("dtype").get<std::string>();
    if (dtype == "float64") spec.dtype = torch::kFloat64;
    else if (dtype != "float32") throw Failure{EMBER_ERR_DTYPE, sidecar + " says the model takes " + dtype + "; ember_infer feeds float32 or float64"};
    if (meta.at("outputs").size() != 1) throw Failure{EMBER_ERR_FILE, sidecar + " lists " + std::to_string(meta.at("outputs").size()) + " outputs; ember_infer returns models of one output"};
    *format = meta.at("format").get<std::string>();
    return spec;
  } catch (const nlohmann::json::exception &e) {
    throw Failure{EMBER_ERR_FILE, sidecar + " is not an ember export description (" + e.what() + "); export again with ember export"};
  }
}

// The input's shape against the sidecar's, where a wrong layout shows up.
void check_input(const Spec &spec, const std::vector<int64_t> &shape) {
  bool ok = shape.size() == spec.input.size();
  for (size_t i = 0; ok && i < shape.size(); ++i) ok = shape[i] >= 1 && (spec.input[i] == ANY || spec.input[i] == shape[i]);
  if (!ok)
    throw Failure{EMBER_ERR_SHAPE, "input of shape " + show(shape) + ", but the model takes " + show(spec.input) +
                                       " (a C array is row-major, a Fortran array x(n1, n2, ...) is the tensor of shape (n1, n2, ...))"};
}

std::vector<int64_t> output_shape(const Spec &spec, const std::vector<int64_t> &input) {
  std::vector<int64_t> out = spec.output;
  for (auto &d : out)
    if (d == ANY) d = input[0];
  return out;
}

std::vector<int64_t> to_vector(int ndim, const int64_t *shape) {
  if (ndim < 1 || ndim > EMBER_MAX_DIMS || !shape) throw Failure{EMBER_ERR_ARGUMENT, "an array must have 1 to " + std::to_string(EMBER_MAX_DIMS) + " dimensions, got " + std::to_string(ndim)};
  return std::vector<int64_t>(shape, shape + ndim);
}

void check_codes(int dtype, int order) {
  if (dtype != EMBER_FLOAT32 && dtype != EMBER_FLOAT64) throw Failure{EMBER_ERR_DTYPE, "element type code " + std::to_string(dtype) + "; use EMBER_FLOAT32 (0) or EMBER_FLOAT64 (1)"};
  if (order != EMBER_ROW_MAJOR && order != EMBER_COLUMN_MAJOR) throw Failure{EMBER_ERR_ARGUMENT, "memory order code " + std::to_string(order) + "; use EMBER_ROW_MAJOR (0) or EMBER_COLUMN_MAJOR (1)"};
}

// A tensor viewing the caller's memory (no copy): column-major strides for Fortran's order.
torch::Tensor view(void *data, const std::vector<int64_t> &shape, int dtype, int order) {
  std::vector<int64_t> strides(shape.size());
  int64_t step = 1;
  for (size_t k = 0; k < shape.size(); ++k) {
    size_t i = order == EMBER_COLUMN_MAJOR ? k : shape.size() - 1 - k;
    strides[i] = step;
    step *= shape[i];
  }
  return torch::from_blob(data, shape, strides, dtype == EMBER_FLOAT64 ? torch::kFloat64 : torch::kFloat32);
}

// Run `body`, turning every exception into a status and a message.
template <typename Body>
int guarded(const std::string &context, Body body) {
  try {
    body();
    last_error.clear();
    return EMBER_OK;
  } catch (const Failure &f) {
    last_error = context + f.message;
    return f.status;
  } catch (const c10::Error &e) {
    last_error = context + one_line(e.what_without_backtrace());
  } catch (const std::exception &e) {
    last_error = context + one_line(e.what());
  } catch (...) {
    last_error = context + "an unknown C++ exception";
  }
  return EMBER_ERR_RUNTIME;
}

}  // namespace

struct ember_model {
  std::string path;
  Spec spec;
  std::unique_ptr<torch::jit::script::Module> script;                  // format torchscript
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> package;  // format aoti
};

extern "C" int ember_load(const char *path, ember_model **model) {
  if (model) *model = nullptr;
  if (!path || !model) {
    last_error = "ember_load needs a path and a place for the model";
    return EMBER_ERR_ARGUMENT;
  }
  auto m = std::make_unique<ember_model>();
  m->path = path;
  int status = guarded(std::string("cannot load ") + path + ": ", [&] {
    if (!std::ifstream(path)) throw Failure{EMBER_ERR_FILE, "no such file (or it is not readable); export one with ember export run=DIR format=aoti"};
    std::string format;
    m->spec = read_spec(m->path + ".json", &format);
    try {
      if (format == "torchscript") {
        m->script = std::make_unique<torch::jit::script::Module>(torch::jit::load(path));
        m->script->eval();
      } else if (format == "aoti") {
        m->package = std::make_unique<torch::inductor::AOTIModelPackageLoader>(path);
      } else {
        throw Failure{EMBER_ERR_FILE, "a " + format + " export; ember_infer runs format=torchscript and format=aoti (ember export run=DIR format=aoti)"};
      }
    } catch (const c10::Error &e) {
      throw Failure{EMBER_ERR_FILE, "not a readable " + format + " file (" + one_line(e.what_without_backtrace()) + ")"};
    }
  });
  if (status == EMBER_OK) *model = m.release();
  return status;
}

extern "C" int ember_output_shape(const ember_model *model, int ndim, const int64_t *shape, int64_t *out_shape, int *out_ndim) {
  return guarded("", [&] {
    if (!model || !out_shape || !out_ndim) throw Failure{EMBER_ERR_ARGUMENT, "ember_output_shape needs a loaded model and room for the shape"};
    auto in = to_vector(ndim, shape);
    check_input(model->spec, in);
    auto out = output_shape(model->spec, in);
    *out_ndim = static_cast<int>(out.size());
    std::copy(out.begin(), out.end(), out_shape);
  });
}

extern "C" int ember_forward(ember_model *model, int dtype, int order, const void *input, int ndim, const int64_t *shape,
                             void *output, int out_ndim, const int64_t *out_shape) {
  return guarded("", [&] {
    if (!model || !input || !output) throw Failure{EMBER_ERR_ARGUMENT, "ember_forward needs a loaded model, an input and an output array"};
    check_codes(dtype, order);
    auto in = to_vector(ndim, shape);
    auto out = to_vector(out_ndim, out_shape);
    check_input(model->spec, in);
    auto want = output_shape(model->spec, in);
    if (out != want) throw Failure{EMBER_ERR_SHAPE, "output array of shape " + show(out) + ", but the model returns " + show(want) + " for this input"};
    torch::NoGradGuard no_grad;
    // The model's own dtype, contiguous: an AOTInductor kernel assumes dense row-major input.
    auto x = view(const_cast<void *>(input), in, dtype, order).to(model->spec.dtype).contiguous();
    torch::Tensor y;
    try {
      if (model->script) y = model->script->forward({x}).toTensor();
      else y = model->package->run({x}).at(0);
    } catch (const c10::Error &e) {
      throw Failure{EMBER_ERR_RUNTIME, "the model failed on an input of shape " + show(in) + ": " + one_line(e.what_without_backtrace())};
    }
    if (y.sizes().vec() != want) throw Failure{EMBER_ERR_RUNTIME, "the model returned shape " + show(y.sizes().vec()) + ", not the sidecar's " + show(want)};
    view(output, out, dtype, order).copy_(y);  // converts the dtype and writes in the caller's order
  });
}

extern "C" void ember_free(ember_model *model) { delete model; }

extern "C" const char *ember_last_error(void) { return last_error.c_str(); }
