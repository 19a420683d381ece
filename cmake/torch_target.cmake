# After find_package(Torch): Torch's own compile flags (ABI macro) applied to every
# target so that std::string crosses library boundaries safely, and
# `modelserver_torch`, an interface target with Torch's headers marked SYSTEM
# (they warn). Shared by the top-level build and bench/gpu.
if(TORCH_CXX_FLAGS)
  separate_arguments(_torch_flags UNIX_COMMAND "${TORCH_CXX_FLAGS}")
  add_compile_options(${_torch_flags})
endif()
add_library(modelserver_torch INTERFACE)
target_include_directories(modelserver_torch SYSTEM INTERFACE ${TORCH_INCLUDE_DIRS})
target_link_libraries(modelserver_torch INTERFACE ${TORCH_LIBRARIES})
