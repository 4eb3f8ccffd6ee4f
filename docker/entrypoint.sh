#!/bin/bash
# zoobox container entrypoint: set up the Ascend environment when the image has it, then
# run the command (`docker run IMAGE python -m models.x.y ...`).
#
# - CANN toolkit: /usr/local/Ascend/ascend-toolkit/set_env.sh (absent in CPU images)
# - Torch_AIE:    /usr/local/Ascend/aie/set_env.sh (the aie image)
# - the host's driver, mounted read-only at /usr/local/Ascend/driver (or $ASCEND_DRIVER_HOME):
#   its lib64, lib64/common and lib64/driver go on LD_LIBRARY_PATH.
# The set_env.sh scripts are sourced without `set -e`: a non-zero status inside them must not
# stop the container before the stage can say what is wrong.

for script in /usr/local/Ascend/ascend-toolkit/set_env.sh /usr/local/Ascend/aie/set_env.sh; do
    if [ -f "$script" ]; then
        # shellcheck disable=SC1090
        . "$script"
    fi
done

driver="${ASCEND_DRIVER_HOME:-/usr/local/Ascend/driver}"
for lib in "$driver/lib64" "$driver/lib64/common" "$driver/lib64/driver"; do
    if [ -d "$lib" ]; then
        case ":${LD_LIBRARY_PATH:-}:" in
            *":$lib:"*) ;;
            *) LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;;
        esac
    fi
done
export LD_LIBRARY_PATH

if [ "$#" -eq 0 ]; then
    set -- python
fi
exec "$@"
