# The C++ package: the header-only kernels as an installable CMake package.
#
#   find_package(tensorjac CONFIG REQUIRED)
#   target_link_libraries(app PRIVATE tensorjac::kernels)
#
# Installed by the wheel under the Python package (tensorjac/include and
# tensorjac/share/cmake/tensorjac: tensorjac.get_include() / get_cmake_dir()),
# and by `cmake --install` of the source tree under <prefix>/include and
# <prefix>/share/cmake/tensorjac.  The config (cmake/tensorjacConfig.cmake.in)
# adds OpenMP to tensorjac::kernels where the consumer's CMake finds it.
# Included by the top-level CMakeLists.txt after tensorjac_kernels is defined.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

if(DEFINED SKBUILD)
  set(TJ_INSTALL_INCLUDEDIR "tensorjac/include")
  set(TJ_INSTALL_CMAKEDIR "tensorjac/share/cmake/tensorjac")
else()
  set(TJ_INSTALL_INCLUDEDIR "${CMAKE_INSTALL_INCLUDEDIR}")
  set(TJ_INSTALL_CMAKEDIR "${CMAKE_INSTALL_DATADIR}/cmake/tensorjac")
endif()

# tensorjac::headers: the headers alone (C++17, threads); kernels run on the calling thread.
find_package(Threads REQUIRED)
add_library(tensorjac_headers INTERFACE)
set_target_properties(tensorjac_headers PROPERTIES EXPORT_NAME headers)
target_include_directories(tensorjac_headers INTERFACE
  $<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/cpp/include>
  $<INSTALL_INTERFACE:${TJ_INSTALL_INCLUDEDIR}>)
target_compile_features(tensorjac_headers INTERFACE cxx_std_17)
target_link_libraries(tensorjac_headers INTERFACE Threads::Threads)
# tensorjac::kernels: the headers plus OpenMP when found (the build tree's target; the
# installed one is made by the package config, which looks for OpenMP itself)
target_link_libraries(tensorjac_kernels INTERFACE tensorjac_headers)
add_library(tensorjac::headers ALIAS tensorjac_headers)
add_library(tensorjac::kernels ALIAS tensorjac_kernels)

install(DIRECTORY "${CMAKE_CURRENT_SOURCE_DIR}/cpp/include/tensorjac" DESTINATION "${TJ_INSTALL_INCLUDEDIR}"
        FILES_MATCHING PATTERN "*.hpp")
install(TARGETS tensorjac_headers EXPORT tensorjacTargets)
install(EXPORT tensorjacTargets NAMESPACE tensorjac:: DESTINATION "${TJ_INSTALL_CMAKEDIR}")
configure_package_config_file("${CMAKE_CURRENT_LIST_DIR}/tensorjacConfig.cmake.in"
  "${CMAKE_CURRENT_BINARY_DIR}/tensorjacConfig.cmake"
  INSTALL_DESTINATION "${TJ_INSTALL_CMAKEDIR}"
  PATH_VARS TJ_INSTALL_INCLUDEDIR)
# 0.x releases may break the API between minor versions
write_basic_package_version_file("${CMAKE_CURRENT_BINARY_DIR}/tensorjacConfigVersion.cmake"
  VERSION "${PROJECT_VERSION}" COMPATIBILITY SameMinorVersion ARCH_INDEPENDENT)
install(FILES "${CMAKE_CURRENT_BINARY_DIR}/tensorjacConfig.cmake"
              "${CMAKE_CURRENT_BINARY_DIR}/tensorjacConfigVersion.cmake"
        DESTINATION "${TJ_INSTALL_CMAKEDIR}")
