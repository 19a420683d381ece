# After find_package(Torch): Torch's own compile flags (ABI macro) applied to every
# target so that std::string crosses library boundaries safely, and
# `modelserver_torch`, an interface target with Torch's headers marked SYSTEM
# (they warn). Shared by the top-level build and bench/gpu.
if(TORCH_CXX_FLAGS)
  separate_arguments(_torch_flags UNIX_COMMAND "${TORCH_CXX_FLAGS}")
  add_compile_options(${_torch_flags})
endif()
# A LibTorch that bundles protobuf headers (pip's torch/include/google/protobuf)
# would shadow the system protobuf that the generated code and gRPC were built
# for, in every file that sees both (main.cc links the model library): such an
# include directory is replaced by a view of it without google/.
set(_torch_includes)
set(_view_index 0)
foreach(_dir ${TORCH_INCLUDE_DIRS})
  if(EXISTS "${_dir}/google/protobuf" AND NOT _dir MATCHES "^/usr(/local)?/include/?$")
    set(_view ${CMAKE_BINARY_DIR}/torch_include_view/${_view_index})
    math(EXPR _view_index "${_view_index} + 1")
    file(MAKE_DIRECTORY ${_view})
    file(GLOB _entries RELATIVE ${_dir} ${_dir}/*)
    foreach(_entry ${_entries})
      if(NOT _entry STREQUAL "google" AND NOT EXISTS ${_view}/${_entry})
        file(CREATE_LINK ${_dir}/${_entry} ${_view}/${_entry} SYMBOLIC)
      endif()
    endforeach()
    message(STATUS "LibTorch's ${_dir} holds protobuf headers: using ${_view} (without google/)")
    list(APPEND _torch_includes ${_view})
    # Its imported targets (torch, torch_cpu, ...) carry the directory too.
    get_property(_imported DIRECTORY PROPERTY IMPORTED_TARGETS)
    foreach(_target ${_imported})
      get_target_property(_inc ${_target} INTERFACE_INCLUDE_DIRECTORIES)
      if(_inc)
        string(REGEX REPLACE "([][+.*()^$?|\\])" "\\\\\\1" _escaped "${_dir}")
        list(TRANSFORM _inc REPLACE "^${_escaped}/?$" "${_view}")
        set_target_properties(${_target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_inc}")
      endif()
    endforeach()
  else()
    list(APPEND _torch_includes ${_dir})
  endif()
endforeach()
add_library(modelserver_torch INTERFACE)
target_include_directories(modelserver_torch SYSTEM INTERFACE ${_torch_includes})
target_link_libraries(modelserver_torch INTERFACE ${TORCH_LIBRARIES})
