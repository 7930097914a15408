# Injected into the CMake configure of vicrop_interfaces by scripts/setup
# (colcon ... --cmake-args -DCMAKE_PROJECT_INCLUDE=<this file>).
#
# Why: the ROS 2 Jazzy wheels on PyPI were built on a machine whose Python lived under
# /opt/python/cp311-cp311/. Their exported CMake targets still list include directories under that
# prefix, which do not exist on any other machine, and CMake's generate step then fails with
# "Imported target ... includes non-existent path". At the end of configure this file removes, from
# every imported target of the project, include directories that do not exist. It changes no file in
# the venv. On a real ROS 2 install no such path exists, so there it removes nothing (and the README's
# ROS build does not use it).

function(_vicrop_drop_missing_include_dirs)
  get_property(targets DIRECTORY "${CMAKE_SOURCE_DIR}" PROPERTY IMPORTED_TARGETS)
  foreach(target IN LISTS targets)
    get_target_property(dirs ${target} INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT dirs)
      continue()
    endif()
    set(kept "")
    foreach(dir IN LISTS dirs)
      # Keep generator expressions and relative entries; drop absolute paths that do not exist.
      if(IS_ABSOLUTE "${dir}" AND NOT dir MATCHES "\\$<" AND NOT EXISTS "${dir}")
        message(STATUS "vicrop: dropping missing include dir of ${target}: ${dir}")
        continue()
      endif()
      list(APPEND kept "${dir}")
    endforeach()
    set_property(TARGET ${target} PROPERTY INTERFACE_INCLUDE_DIRECTORIES "${kept}")
  endforeach()
endfunction()

# CMAKE_PROJECT_INCLUDE runs right after project(); defer the fix to the end of the top directory's
# configure, when every find_package() has created its imported targets.
if(CMAKE_CURRENT_SOURCE_DIR STREQUAL CMAKE_SOURCE_DIR)
  cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL _vicrop_drop_missing_include_dirs)
endif()
