# Source this file (bash) to use the built workspace from a shell:
#   source scripts/env.sh
# Activates .venv (the ROS prefix when ROS comes from PyPI wheels), sources install/setup.bash and puts
# the package's console scripts (vicrop, vicrop_node, ...) on PATH, as `ros2 run vicrop_ros X` would find them.
_vicrop_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ ! -f "$_vicrop_root/install/setup.bash" ]; then
  echo "vicrop: $_vicrop_root/install is missing; run scripts/setup first" >&2
  return 1 2>/dev/null || exit 1
fi
# shellcheck disable=SC1091
source "$_vicrop_root/.venv/bin/activate"
export AMENT_PREFIX_PATH="$_vicrop_root/.venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
# colcon's setup scripts read unset variables (COLCON_TRACE, ...): relax `set -u` around them.
case $- in *u*) _vicrop_nounset=1; set +u ;; *) _vicrop_nounset=0 ;; esac
# shellcheck disable=SC1091
source "$_vicrop_root/install/setup.bash"
[ "$_vicrop_nounset" = 1 ] && set -u
export PATH="$_vicrop_root/install/vicrop_ros/lib/vicrop_ros:$PATH"
unset _vicrop_nounset
