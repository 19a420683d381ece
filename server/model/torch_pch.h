// The torch headers the model targets use; precompiled (see CMakeLists.txt).
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>
#include <torch/nn/module.h>
