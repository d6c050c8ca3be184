// Exceptions the bindings translate to Python's TypeError / ValueError.
#pragma once
#include <stdexcept>
#include <string>

namespace fl {
struct TypeError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct ValueError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
}  // namespace fl
