# The package version for project(): scikit-build-core's SKBUILD_PROJECT_VERSION,
# else the version in pyproject.toml (a plain CMake configure of the source tree),
# cut to its numeric part ("0.2.0rc1" -> "0.2.0").  Sets TJ_PROJECT_VERSION.
if(DEFINED SKBUILD_PROJECT_VERSION)
  set(_tj_version "${SKBUILD_PROJECT_VERSION}")
else()
  file(STRINGS "${CMAKE_CURRENT_LIST_DIR}/../pyproject.toml" _tj_version REGEX "^version *= *\"" LIMIT_COUNT 1)
  string(REGEX REPLACE "^version *= *\"([^\"]*)\".*" "\\1" _tj_version "${_tj_version}")
endif()
string(REGEX MATCH "^[0-9]+(\\.[0-9]+)*" TJ_PROJECT_VERSION "${_tj_version}")
if(NOT TJ_PROJECT_VERSION)
  message(WARNING "tensorjac: no version found (got '${_tj_version}'), using 0")
  set(TJ_PROJECT_VERSION 0)
endif()
unset(_tj_version)
